#pragma once
// The model architecture and MoE routing, as written in a checkpoint's config.json ("model" and
// "moe" objects, docs/checkpoint-format.md) and repeated verbatim in a .tmoe file's metadata
// (docs/format.md). One struct for both, so the converter copies it without translation.

#include <algorithm>    // std::find, std::is_sorted, std::adjacent_find
#include <cmath>        // std::isfinite
#include <cstdint>      // std::int64_t
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <vector>       // std::vector

#include <nlohmann/json.hpp>

#include <taskmoe/error.hpp>
#include <taskmoe/format/architecture.hpp>  // stack, routing, activation, ... (no JSON)

namespace taskmoe {

// MoE settings of one stack (`moe.encoder` / `moe.decoder`).
struct stack_moe_config {
  routing route = routing::dense;
  std::vector<int> layers;              // indices of MoE layers, sorted, unique
  std::vector<std::string> task_keys;   // rows of the task embedding table (task routing only)
};

struct model_config {
  // "model"
  int d_model = 0;
  int n_heads = 0;
  int d_ff = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  int vocab_size = 0;
  int max_positions = 0;
  norm_placement norm = norm_placement::pre;
  activation act = activation::relu;
  positional_encoding positions = positional_encoding::sinusoidal;
  bool shared_embeddings = true;
  bool scale_embeddings = true;
  double layer_norm_eps = 1e-5;
  int pad_id = 0;
  int unk_id = 1;
  int bos_id = 2;
  int eos_id = 3;

  // "moe" (has_moe == false: the object was absent, a dense model)
  bool has_moe = false;
  int num_experts = 0;
  int top_k = 0;
  int d_ff_expert = 0;
  int task_embedding_dim = 0;  // 0 when no stack is task-routed
  stack_moe_config encoder_moe;
  stack_moe_config decoder_moe;

  const stack_moe_config& moe(stack s) const noexcept {
    return s == stack::encoder ? encoder_moe : decoder_moe;
  }
  stack_moe_config& moe(stack s) noexcept { return s == stack::encoder ? encoder_moe : decoder_moe; }
  int num_layers(stack s) const noexcept {
    return s == stack::encoder ? encoder_layers : decoder_layers;
  }
  bool is_moe_layer(stack s, int layer) const {
    const auto& l = moe(s).layers;
    return std::find(l.begin(), l.end(), layer) != l.end();
  }
  bool any_task_routed() const noexcept {
    return has_moe && (is_task_routed(encoder_moe.route) || is_task_routed(decoder_moe.route));
  }
  int d_head() const noexcept { return n_heads > 0 ? d_model / n_heads : 0; }

  // Throws config_error naming the field ("moe.encoder.layers: ...") on the first broken rule of
  // docs/checkpoint-format.md.
  void validate() const;
};

// One translation task of a checkpoint.
struct task_info {
  std::string name;        // "fr-en"; never parsed, source/target are authoritative
  std::string source;      // "fr"
  std::string target;      // "en"
  std::string target_tag;  // "<2en>", the SentencePiece piece prepended to the source
};

namespace detail {

[[noreturn]] inline void config_fail(const std::string& field, const std::string& problem) {
  throw config_error(field + ": " + problem);
}

inline const nlohmann::json& json_member(const nlohmann::json& obj, const char* key,
                                         const std::string& field) {
  auto it = obj.find(key);
  if (it == obj.end()) config_fail(field, "required key is missing");
  return *it;
}

inline int json_int(const nlohmann::json& v, const std::string& field) {
  if (!v.is_number_integer()) config_fail(field, "must be an integer");
  const auto x = v.get<std::int64_t>();
  if (x < -2147483647 || x > 2147483647) config_fail(field, "integer out of range");
  return static_cast<int>(x);
}

inline int json_int(const nlohmann::json& obj, const char* key, const std::string& prefix) {
  const std::string field = prefix + key;
  return json_int(json_member(obj, key, field), field);
}

inline bool json_bool(const nlohmann::json& obj, const char* key, const std::string& prefix) {
  const std::string field = prefix + key;
  const auto& v = json_member(obj, key, field);
  if (!v.is_boolean()) config_fail(field, "must be a boolean");
  return v.get<bool>();
}

inline double json_number(const nlohmann::json& obj, const char* key, const std::string& prefix) {
  const std::string field = prefix + key;
  const auto& v = json_member(obj, key, field);
  if (!v.is_number()) config_fail(field, "must be a number");
  return v.get<double>();
}

inline std::string json_string(const nlohmann::json& v, const std::string& field) {
  if (!v.is_string()) config_fail(field, "must be a string");
  return v.get<std::string>();
}

inline std::string json_string(const nlohmann::json& obj, const char* key,
                               const std::string& prefix) {
  const std::string field = prefix + key;
  return json_string(json_member(obj, key, field), field);
}

inline const nlohmann::json& json_object(const nlohmann::json& obj, const char* key,
                                         const std::string& prefix) {
  const std::string field = prefix + key;
  const auto& v = json_member(obj, key, field);
  if (!v.is_object()) config_fail(field, "must be an object");
  return v;
}

inline const nlohmann::json& json_array(const nlohmann::json& obj, const char* key,
                                        const std::string& prefix) {
  const std::string field = prefix + key;
  const auto& v = json_member(obj, key, field);
  if (!v.is_array()) config_fail(field, "must be an array");
  return v;
}

// Parse a string enum; `names` lists the spellings in enum order.
template <typename E, std::size_t N>
E json_enum(const nlohmann::json& obj, const char* key, const std::string& prefix,
            const char* const (&names)[N]) {
  const std::string field = prefix + key;
  const std::string s = json_string(obj, key, prefix);
  for (std::size_t i = 0; i < N; ++i)
    if (s == names[i]) return static_cast<E>(i);
  std::string allowed;
  for (std::size_t i = 0; i < N; ++i) allowed += (i ? ", " : "") + std::string(names[i]);
  config_fail(field, "'" + s + "' is not one of " + allowed);
}

inline constexpr const char* routing_names[] = {"dense", "token", "task:target", "task:pair"};
inline constexpr const char* norm_names[] = {"pre", "post"};
inline constexpr const char* activation_names[] = {"relu", "gelu"};
inline constexpr const char* positional_names[] = {"sinusoidal", "learned"};

inline stack_moe_config stack_moe_from_json(const nlohmann::json& obj, const std::string& prefix) {
  stack_moe_config s;
  s.route = json_enum<routing>(obj, "routing", prefix, routing_names);
  const auto& layers = json_array(obj, "layers", prefix);
  for (std::size_t i = 0; i < layers.size(); ++i)
    s.layers.push_back(json_int(layers[i], prefix + "layers[" + std::to_string(i) + "]"));
  if (obj.contains("task_keys")) {
    const auto& keys = json_array(obj, "task_keys", prefix);
    for (std::size_t i = 0; i < keys.size(); ++i)
      s.task_keys.push_back(json_string(keys[i], prefix + "task_keys[" + std::to_string(i) + "]"));
  }
  return s;
}

inline nlohmann::json stack_moe_to_json(const stack_moe_config& s) {
  nlohmann::json j = {{"routing", std::string(routing_name(s.route))}, {"layers", s.layers}};
  if (is_task_routed(s.route) || !s.task_keys.empty()) j["task_keys"] = s.task_keys;
  return j;
}

}  // namespace detail

inline void model_config::validate() const {
  using detail::config_fail;
  const auto positive = [](int v, const char* field) {
    if (v <= 0) config_fail(field, "must be > 0, got " + std::to_string(v));
  };
  positive(d_model, "model.d_model");
  positive(n_heads, "model.n_heads");
  positive(d_ff, "model.d_ff");
  positive(encoder_layers, "model.encoder_layers");
  positive(decoder_layers, "model.decoder_layers");
  positive(vocab_size, "model.vocab_size");
  positive(max_positions, "model.max_positions");
  if (d_model % n_heads != 0) config_fail("model.n_heads", "must divide model.d_model");
  if (positions == positional_encoding::sinusoidal && d_model % 2 != 0)
    config_fail("model.d_model", "must be even for sinusoidal positions");
  if (!(layer_norm_eps > 0) || !std::isfinite(layer_norm_eps))
    config_fail("model.layer_norm_eps", "must be a finite number > 0");
  const int ids[] = {pad_id, unk_id, bos_id, eos_id};
  const char* id_names[] = {"model.pad_id", "model.unk_id", "model.bos_id", "model.eos_id"};
  for (int i = 0; i < 4; ++i)
    if (ids[i] < 0 || ids[i] >= vocab_size) config_fail(id_names[i], "must be in [0, vocab_size)");
  if (!has_moe) return;
  positive(num_experts, "moe.num_experts");
  positive(top_k, "moe.top_k");
  positive(d_ff_expert, "moe.d_ff_expert");
  if (top_k > num_experts) config_fail("moe.top_k", "must be <= moe.num_experts");
  for (stack s : {stack::encoder, stack::decoder}) {
    const auto& m = moe(s);
    const std::string prefix = "moe." + std::string(stack_name(s)) + ".";
    if (m.route == routing::dense && !m.layers.empty())
      config_fail(prefix + "layers", "must be empty for dense routing");
    for (int l : m.layers)
      if (l < 0 || l >= num_layers(s))
        config_fail(prefix + "layers", "layer " + std::to_string(l) + " is not < " +
                                           std::string(stack_name(s)) + "_layers");
    if (!std::is_sorted(m.layers.begin(), m.layers.end()) ||
        std::adjacent_find(m.layers.begin(), m.layers.end()) != m.layers.end())
      config_fail(prefix + "layers", "must be sorted and unique");
    if (is_task_routed(m.route)) {
      if (m.task_keys.empty()) config_fail(prefix + "task_keys", "required for task routing");
      for (std::size_t i = 0; i < m.task_keys.size(); ++i)
        for (std::size_t j = i + 1; j < m.task_keys.size(); ++j)
          if (m.task_keys[i] == m.task_keys[j])
            config_fail(prefix + "task_keys", "duplicate key '" + m.task_keys[i] + "'");
    }  // task_keys of a token/dense stack are allowed and unused ("required iff task-routed")
  }
  if (any_task_routed()) positive(task_embedding_dim, "moe.task_embedding_dim");
}

// JSON: the object holds the "model" and optional "moe" keys (other keys, such as "tasks", are
// ignored), so the same functions read config.json and .tmoe metadata. from_json validates.
inline void to_json(nlohmann::json& j, const model_config& c) {
  using namespace detail;
  if (!j.is_object()) j = nlohmann::json::object();
  j["model"] = {{"d_model", c.d_model},
                {"n_heads", c.n_heads},
                {"d_ff", c.d_ff},
                {"encoder_layers", c.encoder_layers},
                {"decoder_layers", c.decoder_layers},
                {"vocab_size", c.vocab_size},
                {"max_positions", c.max_positions},
                {"norm", norm_names[static_cast<int>(c.norm)]},
                {"activation", activation_names[static_cast<int>(c.act)]},
                {"positional_encoding", positional_names[static_cast<int>(c.positions)]},
                {"shared_embeddings", c.shared_embeddings},
                {"scale_embeddings", c.scale_embeddings},
                {"layer_norm_eps", c.layer_norm_eps},
                {"pad_id", c.pad_id},
                {"unk_id", c.unk_id},
                {"bos_id", c.bos_id},
                {"eos_id", c.eos_id}};
  if (c.has_moe) {
    nlohmann::json m = {{"num_experts", c.num_experts},
                        {"top_k", c.top_k},
                        {"d_ff_expert", c.d_ff_expert},
                        {"encoder", stack_moe_to_json(c.encoder_moe)},
                        {"decoder", stack_moe_to_json(c.decoder_moe)}};
    if (c.any_task_routed()) m["task_embedding_dim"] = c.task_embedding_dim;
    j["moe"] = std::move(m);
  }
}

inline void from_json(const nlohmann::json& j, model_config& c) {
  using namespace detail;
  if (!j.is_object()) config_fail("(root)", "must be a JSON object");
  c = model_config{};
  const auto& m = json_object(j, "model", "");
  const std::string p = "model.";
  c.d_model = json_int(m, "d_model", p);
  c.n_heads = json_int(m, "n_heads", p);
  c.d_ff = json_int(m, "d_ff", p);
  c.encoder_layers = json_int(m, "encoder_layers", p);
  c.decoder_layers = json_int(m, "decoder_layers", p);
  c.vocab_size = json_int(m, "vocab_size", p);
  c.max_positions = json_int(m, "max_positions", p);
  c.norm = json_enum<norm_placement>(m, "norm", p, norm_names);
  c.act = json_enum<activation>(m, "activation", p, activation_names);
  c.positions = json_enum<positional_encoding>(m, "positional_encoding", p, positional_names);
  c.shared_embeddings = json_bool(m, "shared_embeddings", p);
  c.scale_embeddings = json_bool(m, "scale_embeddings", p);
  c.layer_norm_eps = json_number(m, "layer_norm_eps", p);
  if (m.contains("pad_id")) c.pad_id = json_int(m, "pad_id", p);
  if (m.contains("unk_id")) c.unk_id = json_int(m, "unk_id", p);
  if (m.contains("bos_id")) c.bos_id = json_int(m, "bos_id", p);
  if (m.contains("eos_id")) c.eos_id = json_int(m, "eos_id", p);
  if (j.contains("moe") && !j["moe"].is_null()) {
    const auto& moe = json_object(j, "moe", "");
    c.has_moe = true;
    c.num_experts = json_int(moe, "num_experts", "moe.");
    c.top_k = json_int(moe, "top_k", "moe.");
    c.d_ff_expert = json_int(moe, "d_ff_expert", "moe.");
    if (moe.contains("task_embedding_dim"))
      c.task_embedding_dim = json_int(moe, "task_embedding_dim", "moe.");
    c.encoder_moe = stack_moe_from_json(json_object(moe, "encoder", "moe."), "moe.encoder.");
    c.decoder_moe = stack_moe_from_json(json_object(moe, "decoder", "moe."), "moe.decoder.");
  }
  c.validate();
}

inline void to_json(nlohmann::json& j, const task_info& t) {
  j = {{"name", t.name}, {"source", t.source}, {"target", t.target}, {"target_tag", t.target_tag}};
}

// Reads name/source/target and, when present, target_tag (config.json keeps tags separately in
// "target_tags"; the checkpoint reader fills them in).
inline void from_json(const nlohmann::json& j, task_info& t) {
  using namespace detail;
  if (!j.is_object()) config_fail("task", "must be an object");
  t.name = json_string(j, "name", "task.");
  t.source = json_string(j, "source", "task.");
  t.target = json_string(j, "target", "task.");
  t.target_tag = j.contains("target_tag") ? json_string(j, "target_tag", "task.") : std::string();
}

// Row of the stack's task embedding table used by `task` (task routing only); -1 if absent.
inline int task_key_index(const model_config& c, stack s, const task_info& task) {
  const auto& m = c.moe(s);
  const std::string& key = m.route == routing::task_pair ? task.name : task.target;
  auto it = std::find(m.task_keys.begin(), m.task_keys.end(), key);
  return it == m.task_keys.end() ? -1 : static_cast<int>(it - m.task_keys.begin());
}

// Cross-checks of the task list against the config (docs/checkpoint-format.md, "tasks").
inline void validate_tasks(const model_config& c, const std::vector<task_info>& tasks) {
  using detail::config_fail;
  if (tasks.empty()) config_fail("tasks", "must not be empty");
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const task_info& t = tasks[i];
    const std::string field = "tasks[" + std::to_string(i) + "]";
    if (t.name.empty() || t.source.empty() || t.target.empty())
      config_fail(field, "name, source and target must be non-empty");
    for (std::size_t j = 0; j < i; ++j)
      if (tasks[j].name == t.name) config_fail(field + ".name", "duplicate task '" + t.name + "'");
    if (t.target_tag.empty())
      config_fail("target_tags", "no tag for target language '" + t.target + "'");
    if (!c.has_moe) continue;
    for (stack s : {stack::encoder, stack::decoder}) {
      if (!is_task_routed(c.moe(s).route)) continue;
      if (task_key_index(c, s, t) < 0)
        config_fail("moe." + std::string(stack_name(s)) + ".task_keys",
                    "missing key '" +
                        (c.moe(s).route == routing::task_pair ? t.name : t.target) +
                        "' for task '" + t.name + "'");
    }
  }
}

}  // namespace taskmoe
