#pragma once
// Gating, in one place for both routings: softmax over the experts' logits, the top k (ties: lower
// expert index first), renormalised over the chosen k.
//
//   select_experts     top k of one row of probabilities, renormalised (token routing, per token;
//                      task routing, once per task and layer).
//   compute_task_gate  a task's gate from the router and the task's embedding row, in float32
//                      with the exact std::exp softmax the converter has always used: extracted
//                      files and models built from the checkpoint get the same gates, bit for bit.

#include <cmath>    // std::exp
#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include <taskmoe/error.hpp>                // invalid_argument_error
#include <taskmoe/kernels/elementwise.hpp>  // top_k

namespace taskmoe {
namespace moe {

// The gate of one task at one MoE layer: which experts, with which weights.
struct task_gate {
  std::vector<int> experts;    // e_1 .. e_k, in descending probability (ties: lower index first)
  std::vector<float> weights;  // g_1 .. g_k, sum to 1
};

// experts[k], gates[k] = the k largest of p[n] (best first), gates renormalised to sum to 1.
inline void select_experts(const float* p, int n, int k, int* experts, float* gates) {
  kernels::top_k(p, n, k, experts, gates);
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += gates[j];
  for (int j = 0; j < k; ++j) gates[j] /= sum;
}

// logits = router[num_experts, d_in] * u; p = softmax(logits); select_experts(p).
inline task_gate compute_task_gate(const float* router, const float* u, int num_experts, int d_in, int top_k) {
  if (num_experts <= 0 || d_in <= 0 || top_k <= 0 || top_k > num_experts)
    throw invalid_argument_error("compute_task_gate: need 0 < top_k <= num_experts and d_in > 0");
  std::vector<float> p(static_cast<std::size_t>(num_experts));
  for (int e = 0; e < num_experts; ++e) {
    float acc = 0.0f;
    for (int i = 0; i < d_in; ++i) acc += router[static_cast<std::size_t>(e) * d_in + i] * u[i];
    p[static_cast<std::size_t>(e)] = acc;
  }
  float mx = p[0];
  for (float x : p) mx = x > mx ? x : mx;
  float sum = 0.0f;
  for (float& x : p) {
    x = std::exp(x - mx);
    sum += x;
  }
  for (float& x : p) x /= sum;
  task_gate g;
  g.experts.resize(static_cast<std::size_t>(top_k));
  g.weights.resize(static_cast<std::size_t>(top_k));
  select_experts(p.data(), num_experts, top_k, g.experts.data(), g.weights.data());
  return g;
}

// The same from a checkpoint's task_router (format/checkpoint.hpp: router, task row, sizes).
template <class Router>
task_gate compute_task_gate(const Router& r) {
  if (r.router.size() != static_cast<std::size_t>(r.num_experts) * r.dim || r.task.size() != static_cast<std::size_t>(r.dim))
    throw invalid_argument_error("compute_task_gate: router or task row of the wrong size");
  return compute_task_gate(r.router.data(), r.task.data(), r.num_experts, r.dim, r.top_k);
}

}  // namespace moe
}  // namespace taskmoe
