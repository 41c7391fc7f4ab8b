#pragma once
// The model spec: every tensor name of the architecture (docs/checkpoint-format.md, "Tensors"),
// in one place. The checkpoint reader checks against it, the model loads by it, the converter
// plans by it (role, stack and layer come with each tensor: nobody parses names back).

#include <cstdint>      // std::uint64_t
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <utility>      // std::move
#include <vector>       // std::vector

#include <taskmoe/format/model_config.hpp>
#include <taskmoe/tensor/tensor_view.hpp>  // tensor_shape

namespace taskmoe {

// What a tensor is, which decides its dtype under each quantization scheme (convert/).
enum class tensor_role {
  embedding,       // embed_tokens [vocab, d]: row lookups (also the output projection when shared)
  output_projection,  // a separate output_projection [vocab, d]: a GEMM's weights only
  positions,       // learned embed_positions
  task_embedding,  // a task-routed stack's task table (task data: replaced by gates in a .tmoe)
  attention,       // {self,encoder}_attn.{q,k,v,out}_proj.weight
  ffn,             // dense ffn.fc{1,2}.weight
  expert,          // moe.experts.fc{1,2}.weight
  router,          // moe.router.weight
  small,           // biases, layer norms: always float32
};

namespace spec {

inline std::string layer(stack s, int i) { return std::string(stack_name(s)) + ".layers." + std::to_string(i) + "."; }

// Token embeddings of a stack (one shared table when the config says so).
inline std::string embed_tokens(const model_config& c, stack s) {
  return c.shared_embeddings ? "embed_tokens.weight" : std::string(stack_name(s)) + ".embed_tokens.weight";
}
inline constexpr std::string_view output_projection = "decoder.output_projection.weight";
inline std::string embed_positions(stack s) { return std::string(stack_name(s)) + ".embed_positions.weight"; }
inline std::string task_embedding(stack s) { return std::string(stack_name(s)) + ".task_embedding.weight"; }
// Prefixes: ".weight" / ".bias" (norms, projections) or ".fc1" / ".fc2" (FFNs) are appended.
inline std::string final_norm(stack s) { return std::string(stack_name(s)) + ".layer_norm"; }
inline std::string self_attention(stack s, int i) { return layer(s, i) + "self_attn"; }
inline std::string cross_attention(int i) { return layer(stack::decoder, i) + "encoder_attn"; }
inline std::string attention_norm(const std::string& attention) { return attention + "_layer_norm"; }
inline std::string q_proj(const std::string& attention) { return attention + ".q_proj"; }
inline std::string k_proj(const std::string& attention) { return attention + ".k_proj"; }
inline std::string v_proj(const std::string& attention) { return attention + ".v_proj"; }
inline std::string out_proj(const std::string& attention) { return attention + ".out_proj"; }
inline std::string ffn_norm(stack s, int i) { return layer(s, i) + "final_layer_norm"; }
inline std::string ffn(stack s, int i) { return layer(s, i) + "ffn"; }
inline std::string experts(stack s, int i) { return layer(s, i) + "moe.experts"; }
inline std::string router(stack s, int i) { return layer(s, i) + "moe.router.weight"; }

}  // namespace spec

// A tensor the config requires, with its exact shape and what it is.
struct required_tensor {
  std::string name;
  tensor_shape shape;
  tensor_role role = tensor_role::small;
  stack in_stack = stack::encoder;  // meaningful when layer >= 0 or for per-stack tensors
  int layer = -1;                   // the layer it belongs to; -1: not a layer's
  bool per_expert = false;          // an [E, ...] stack of the experts' weights or biases
};

// Calls visit(required_tensor) for every tensor a checkpoint with this config must hold, in a
// fixed order. The count grows with the layer counts of the config, which a file may set to
// 2^31 - 1: a reader checks each tensor as it is visited, so the first missing one stops it (visit
// throws) before anything proportional is built.
template <typename Visit>
inline void for_each_required_checkpoint_tensor(const model_config& c, Visit&& visit) {
  using u = std::uint64_t;
  const u d = static_cast<u>(c.d_model), v = static_cast<u>(c.vocab_size);
  stack cur = stack::encoder;
  int cur_layer = -1;
  const auto add = [&](std::string n, tensor_shape s, tensor_role r) {
    visit(required_tensor{std::move(n), s, r, cur, cur_layer, r == tensor_role::expert});
  };
  // A weight and its bias (prefix.weight, prefix.bias; biases are small, expert ones per expert).
  const auto add_pair = [&](const std::string& prefix, tensor_shape w, tensor_shape b, tensor_role r) {
    add(prefix + ".weight", w, r);
    visit(required_tensor{prefix + ".bias", b, tensor_role::small, cur, cur_layer, r == tensor_role::expert});
  };
  add(spec::embed_tokens(c, stack::encoder), {v, d}, tensor_role::embedding);
  if (!c.shared_embeddings) {
    cur = stack::decoder;
    add(spec::embed_tokens(c, stack::decoder), {v, d}, tensor_role::embedding);
    add(std::string(spec::output_projection), {v, d}, tensor_role::output_projection);
  }
  for (stack s : {stack::encoder, stack::decoder}) {
    cur = s;
    cur_layer = -1;
    if (c.positions == positional_encoding::learned)
      add(spec::embed_positions(s), {static_cast<u>(c.max_positions), d}, tensor_role::positions);
    const auto& m = c.moe(s);
    const bool task_routed = c.has_moe && is_task_routed(m.route);
    if (task_routed)
      add(spec::task_embedding(s), {static_cast<u>(m.task_keys.size()), static_cast<u>(c.task_embedding_dim)},
          tensor_role::task_embedding);
    if (c.norm == norm_placement::pre) add_pair(spec::final_norm(s), {d}, {d}, tensor_role::small);
    for (int i = 0; i < c.num_layers(s); ++i) {
      cur_layer = i;
      std::vector<std::string> attns = {spec::self_attention(s, i)};
      if (s == stack::decoder) attns.push_back(spec::cross_attention(i));
      for (const auto& a : attns) {
        for (const std::string& proj : {spec::q_proj(a), spec::k_proj(a), spec::v_proj(a), spec::out_proj(a)})
          add_pair(proj, {d, d}, {d}, tensor_role::attention);
        add_pair(spec::attention_norm(a), {d}, {d}, tensor_role::small);
      }
      add_pair(spec::ffn_norm(s, i), {d}, {d}, tensor_role::small);
      if (c.has_moe && c.is_moe_layer(s, i)) {
        const u e = static_cast<u>(c.num_experts), f = static_cast<u>(c.d_ff_expert);
        add_pair(spec::experts(s, i) + ".fc1", {e, f, d}, {e, f}, tensor_role::expert);
        add_pair(spec::experts(s, i) + ".fc2", {e, d, f}, {e, d}, tensor_role::expert);
        add(spec::router(s, i), {e, task_routed ? static_cast<u>(c.task_embedding_dim) : d}, tensor_role::router);
      } else {
        const u f = static_cast<u>(c.d_ff);
        add_pair(spec::ffn(s, i) + ".fc1", {f, d}, {f}, tensor_role::ffn);
        add_pair(spec::ffn(s, i) + ".fc2", {d, f}, {d}, tensor_role::ffn);
      }
    }
  }
}

// Every tensor a checkpoint with this config must hold, as a list (see above: for a config that
// has passed a check against real tensors, or one built in code).
inline std::vector<required_tensor> required_checkpoint_tensors(const model_config& c) {
  std::vector<required_tensor> r;
  for_each_required_checkpoint_tensor(c, [&r](required_tensor t) { r.push_back(std::move(t)); });
  return r;
}

}  // namespace taskmoe
