#pragma once
// MoE feed-forward layers (docs/checkpoint-format.md, "MoE layers and routing").
//
//   task-routed  the experts and gates are constants of the task (stored in a .tmoe file, or
//                computed from the checkpoint's router and task embedding at load): every token
//                runs through the k kept experts, y = Σ_j g_j E_j(x). No router at run time.
//   token-routed each token: p = softmax(W_r x), then the top k renormalised (moe/gating.hpp);
//                tokens are grouped by expert and each expert runs one GEMM over its
//                tokens, the results scattered back with the token's gate.
// Contributions are accumulated in ascending original expert id, the reference's order.

#include <algorithm>  // std::sort
#include <cstddef>    // std::size_t
#include <cstring>    // std::memcpy
#include <memory>     // std::make_shared
#include <numeric>    // std::iota
#include <vector>     // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/format/architecture.hpp>   // routing
#include <taskmoe/kernels/elementwise.hpp>   // softmax, top_k
#include <taskmoe/kernels/gemm.hpp>          // gemm_f32
#include <taskmoe/kernels/packed_gemm.hpp>   // packed_f32, gemm_packed_f32
#include <taskmoe/layers/feed_forward.hpp>   // feed_forward
#include <taskmoe/moe/gating.hpp>            // select_experts

namespace taskmoe {
namespace moe {

// Scratch for one forward call (owned by the caller's workspace, reused across layers).
struct moe_workspace {
  std::vector<float> hidden;      // expert hidden activations
  std::vector<float> expert_out;  // one expert's output
  std::vector<float> gathered;    // token rows routed to one expert
  std::vector<float> probs;       // token routing: [m, E]
  std::vector<int> chosen;        // token routing: [m, k] expert ids
  std::vector<float> chosen_gate; // token routing: [m, k] gates
  std::vector<int> rows;          // tokens of one expert
  std::vector<float> row_gate;
};

class moe_layer {
 public:
  routing route = routing::token;
  std::vector<layers::feed_forward> experts;  // one per slot
  std::vector<int> expert_ids;                // original id of each slot
  std::vector<float> gates;                   // task routing: gate of each slot
  std::vector<float> router;                  // token routing: [num_experts, d] (f32)
  int num_experts = 0;                        // token routing: router rows
  int top_k = 0;
  // Token routing: the router packed by pack(), so that a token's gate values come from the same
  // operations whatever the batch (oneDNN's sgemm sums in an order that depends on M on some
  // CPUs, and a last-bit change in a gate moved float16-cached logits between batch and replay).
  std::shared_ptr<const kernels::packed_f32> router_packed;

  // Task routing on int8 experts: the k kept experts as one FFN, built by pack(). fc1 of every
  // expert stacked by rows (one GEMM of width k * d_ff; the input is quantized once), and each
  // expert's fc2 with its gate folded into scales and bias, accumulated into y in id order.
  layers::linear fused_fc1;
  std::vector<layers::linear> gated_fc2;  // in ascending expert id

  bool task_routed() const noexcept { return is_task_routed(route); }

  // Packs int8 experts (f32 ones stay as they are; int8 stored as `weights` says); task-routed
  // int8 layers are fused.
  void pack(kernels::int8_weights weights = kernels::int8_weights::full) {
    bool int8 = !experts.empty();
    for (const auto& e : experts) int8 = int8 && e.fc1.weight.is_int8() && e.fc2.weight.is_int8();
    if (!task_routed() && num_experts > 0 && !router.empty()) {
      const int d = static_cast<int>(router.size() / static_cast<std::size_t>(num_experts));
      router_packed = std::make_shared<const kernels::packed_f32>(
          kernels::packed_f32::pack({{router.data(), num_experts, d, nullptr}}, d));
    }
    if (!int8 || !task_routed()) {  // f32, mixed dtypes or token routing: each matrix on its own
      for (auto& e : experts) e.pack(weights);
      return;
    }
    std::vector<kernels::packed_int8::part> fc1_parts;
    for (int slot : order_by_id()) {
      const layers::feed_forward& e = experts[static_cast<std::size_t>(slot)];
      fc1_parts.push_back(e.fc1.packed_part());
      layers::linear fc2 = e.fc2;
      fc2.packed = std::make_shared<const kernels::packed_int8>(kernels::packed_int8::pack(
          {e.fc2.packed_part(gates[static_cast<std::size_t>(slot)])}, e.fc2.in_features(), weights));
      gated_fc2.push_back(std::move(fc2));
    }
    fused_fc1.packed = std::make_shared<const kernels::packed_int8>(
        kernels::packed_int8::pack(fc1_parts, experts.front().fc1.weight.cols, weights));
  }

  std::size_t packed_bytes() const noexcept {
    std::size_t b = fused_fc1.packed_bytes() + (router_packed ? router_packed->bytes() : 0);
    for (const auto& e : experts) b += e.packed_bytes();
    for (const auto& l : gated_fc2) b += l.packed_bytes();
    return b;
  }

  // y [m, d] = MoE(x [m, d]); y must not alias x.
  void forward(const float* x, int m, int d, float* y, moe_workspace& ws) const {
    if (m == 0) return;
    if (task_routed() && fused_fc1.packed) {
      const int ff = experts.front().fc1.out_features(), width = fused_fc1.out_features();
      const std::size_t n = static_cast<std::size_t>(m) * static_cast<std::size_t>(width);
      if (ws.hidden.size() < n) ws.hidden.resize(n);
      const activation act = experts.front().act;
      fused_fc1.forward(x, m, d, ws.hidden.data(), width, act == activation::relu);
      if (act != activation::relu) layers::apply_activation(act, ws.hidden.data(), n);
      for (std::size_t j = 0; j < gated_fc2.size(); ++j)
        gated_fc2[j].forward(ws.hidden.data() + j * static_cast<std::size_t>(ff), m, width, y, d, false, j > 0);
      return;
    }
    const std::size_t md = static_cast<std::size_t>(m) * static_cast<std::size_t>(d);
    for (std::size_t i = 0; i < md; ++i) y[i] = 0.0f;
    if (ws.expert_out.size() < md) ws.expert_out.resize(md);
    if (task_routed()) {
      for (int slot : order_by_id()) {
        experts[slot].forward(x, m, d, ws.expert_out.data(), d, ws.hidden);
        const float g = gates[slot];
        for (std::size_t i = 0; i < md; ++i) y[i] += ws.expert_out[i] * g;
      }
      return;
    }
    route_tokens(x, m, d, ws);
    // slot of each original expert id (every expert is kept for token routing: checked at load)
    for (int slot : order_by_id()) {
      const int e = expert_ids[slot];
      ws.rows.clear();
      ws.row_gate.clear();
      for (int t = 0; t < m; ++t)
        for (int j = 0; j < top_k; ++j)
          if (ws.chosen[static_cast<std::size_t>(t) * top_k + j] == e) {
            ws.rows.push_back(t);
            ws.row_gate.push_back(ws.chosen_gate[static_cast<std::size_t>(t) * top_k + j]);
          }
      const int n = static_cast<int>(ws.rows.size());
      if (n == 0) continue;
      const std::size_t nd = static_cast<std::size_t>(n) * static_cast<std::size_t>(d);
      if (ws.gathered.size() < nd) ws.gathered.resize(nd);
      for (int r = 0; r < n; ++r)
        std::memcpy(ws.gathered.data() + static_cast<std::size_t>(r) * d,
                    x + static_cast<std::size_t>(ws.rows[r]) * d, sizeof(float) * d);
      experts[slot].forward(ws.gathered.data(), n, d, ws.expert_out.data(), d, ws.hidden);
      for (int r = 0; r < n; ++r) {
        float* yr = y + static_cast<std::size_t>(ws.rows[r]) * d;
        const float* er = ws.expert_out.data() + static_cast<std::size_t>(r) * d;
        const float g = ws.row_gate[r];
        for (int c = 0; c < d; ++c) yr[c] += er[c] * g;
      }
    }
  }

  // Per-token routing into ws.chosen / ws.chosen_gate ([m, top_k], best first).
  void route_tokens(const float* x, int m, int d, moe_workspace& ws) const {
    const std::size_t me = static_cast<std::size_t>(m) * static_cast<std::size_t>(num_experts);
    ws.probs.resize(me);
    ws.chosen.resize(static_cast<std::size_t>(m) * top_k);
    ws.chosen_gate.resize(static_cast<std::size_t>(m) * top_k);
    if (router_packed)
      kernels::gemm_packed_f32(m, x, d, *router_packed, ws.probs.data(), num_experts);
    else
      kernels::gemm_f32(m, num_experts, d, 1.0f, x, d, router.data(), d, 0.0f, ws.probs.data(), num_experts);
    kernels::softmax(ws.probs.data(), m, num_experts, num_experts, ws.probs.data(), num_experts);
    for (int t = 0; t < m; ++t) {
      const float* p = ws.probs.data() + static_cast<std::size_t>(t) * num_experts;
      int* idx = ws.chosen.data() + static_cast<std::size_t>(t) * top_k;
      float* g = ws.chosen_gate.data() + static_cast<std::size_t>(t) * top_k;
      select_experts(p, num_experts, top_k, idx, g);
    }
  }

 private:
  std::vector<int> order_by_id() const {
    std::vector<int> order(experts.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [this](int a, int b) { return expert_ids[a] < expert_ids[b]; });
    return order;
  }
};

}  // namespace moe
}  // namespace taskmoe
