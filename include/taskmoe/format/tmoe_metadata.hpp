#pragma once
// The typed metadata of a .tmoe file (docs/format.md, "Metadata"): JSON in the file, this struct
// in memory. from_json checks every key's presence and type and the cross-field rules, throwing
// config_error naming the field; the reader turns that into a format_error naming the file.

#include <cmath>    // std::isfinite
#include <string>   // std::string
#include <vector>   // std::vector

#include <nlohmann/json.hpp>

#include <taskmoe/error.hpp>
#include <taskmoe/format/model_config.hpp>
#include <taskmoe/version.hpp>

namespace taskmoe {

// One MoE layer of the extracted model.
struct moe_layer_info {
  int layer = 0;
  routing route = routing::token;
  // Kept experts, as ids of the original checkpoint, in the order they are stored in the file's
  // stacked expert tensors. Task routing: the top_k experts of the task. Token routing: all kept.
  std::vector<int> experts;
  // Task routing: the task's constant gate weights g_j, one per kept expert (sum 1).
  // Token routing: empty (the router tensor decides per token).
  std::vector<float> gates;
};

enum class quantization_scheme { float32, float16, bfloat16, int8 };

inline constexpr const char* quantization_scheme_names[] = {"float32", "float16", "bfloat16",
                                                            "int8"};

struct quantization_info {
  quantization_scheme scheme = quantization_scheme::float32;
  std::vector<std::string> tensors;  // names of the tensors stored as i8 (scheme int8 only)
};

struct tmoe_metadata {
  model_config model;   // "model" + "moe", exactly as in the checkpoint's config.json
  task_info task;       // "task": name, source, target, target_tag (+ "id")
  int task_id = 0;      // index of the task in the checkpoint's "tasks"
  std::vector<moe_layer_info> encoder_moe_layers;  // "moe_layers.encoder"
  std::vector<moe_layer_info> decoder_moe_layers;  // "moe_layers.decoder"
  quantization_info quantization;
  std::string source_hash;  // checkpoint::content_hash_hex(), 16 lowercase hex digits
  std::string source_name;  // checkpoint name without any path
  std::string converter_name = "taskmoe-convert";
  std::string converter_version = TASKMOE_VERSION_STRING;
  std::string created;  // optional ISO 8601 time; empty = absent

  const std::vector<moe_layer_info>& moe_layers(stack s) const noexcept {
    return s == stack::encoder ? encoder_moe_layers : decoder_moe_layers;
  }
  std::vector<moe_layer_info>& moe_layers(stack s) noexcept {
    return s == stack::encoder ? encoder_moe_layers : decoder_moe_layers;
  }
  // Throws config_error naming the field.
  void validate() const;
};

inline void tmoe_metadata::validate() const {
  using detail::config_fail;
  model.validate();
  if (task.name.empty() || task.source.empty() || task.target.empty() || task.target_tag.empty())
    config_fail("task", "name, source, target and target_tag must be non-empty");
  if (task_id < 0) config_fail("task.id", "must be >= 0");
  for (stack s : {stack::encoder, stack::decoder}) {
    const std::string f = "moe_layers." + std::string(stack_name(s));
    const auto& layers = moe_layers(s);
    const auto& expected = model.moe(s).layers;
    if (layers.size() != (model.has_moe ? expected.size() : 0))
      config_fail(f, "must have one entry per MoE layer of moe." + std::string(stack_name(s)));
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const auto& l = layers[i];
      const std::string fi = f + "[" + std::to_string(i) + "]";
      if (l.layer != expected[i]) config_fail(fi + ".layer", "does not match moe.*.layers");
      if (l.route != model.moe(s).route) config_fail(fi + ".routing", "does not match moe routing");
      if (l.experts.empty()) config_fail(fi + ".experts", "must not be empty");
      for (std::size_t a = 0; a < l.experts.size(); ++a) {
        if (l.experts[a] < 0 || l.experts[a] >= model.num_experts)
          config_fail(fi + ".experts", "expert id out of range");
        for (std::size_t b = 0; b < a; ++b)
          if (l.experts[a] == l.experts[b]) config_fail(fi + ".experts", "duplicate expert id");
      }
      if (is_task_routed(l.route)) {
        if (l.experts.size() != static_cast<std::size_t>(model.top_k))
          config_fail(fi + ".experts", "task routing keeps exactly top_k experts");
        if (l.gates.size() != l.experts.size())
          config_fail(fi + ".gates", "needs one weight per kept expert");
        for (float g : l.gates)
          if (!std::isfinite(g) || g < 0) config_fail(fi + ".gates", "must be finite and >= 0");
      } else if (!l.gates.empty()) {
        config_fail(fi + ".gates", "must be empty for token routing");
      }
    }
  }
  if (quantization.scheme != quantization_scheme::int8 && !quantization.tensors.empty())
    config_fail("quantization.tensors", "only int8 lists quantized tensors");
  if (source_hash.empty()) config_fail("source_checkpoint.hash", "must be non-empty");
  if (source_name.find('/') != std::string::npos)
    config_fail("source_checkpoint.name", "must not contain a path");
  if (converter_name.empty()) config_fail("converter.name", "must be non-empty");
}

inline void to_json(nlohmann::json& j, const moe_layer_info& l) {
  j = {{"layer", l.layer},
       {"routing", std::string(routing_name(l.route))},
       {"experts", l.experts},
       {"gates", l.gates}};
}

inline void to_json(nlohmann::json& j, const tmoe_metadata& m) {
  j = nlohmann::json::object();
  j["format"] = "taskmoe";
  j["format_version"] = 1;
  to_json(j, m.model);  // adds "model" and "moe"
  j["task"] = {{"name", m.task.name},         {"source", m.task.source},
               {"target", m.task.target},     {"id", m.task_id},
               {"target_tag", m.task.target_tag}};
  j["moe_layers"] = {{"encoder", m.encoder_moe_layers}, {"decoder", m.decoder_moe_layers}};
  j["quantization"] = {{"scheme", quantization_scheme_names[static_cast<int>(m.quantization.scheme)]},
                       {"tensors", m.quantization.tensors}};
  j["source_checkpoint"] = {{"hash", m.source_hash}, {"name", m.source_name}};
  j["converter"] = {{"name", m.converter_name}, {"version", m.converter_version}};
  if (!m.created.empty()) j["created"] = m.created;
}

inline void from_json(const nlohmann::json& j, tmoe_metadata& m) {
  using namespace detail;
  if (!j.is_object()) config_fail("(root)", "must be a JSON object");
  m = tmoe_metadata{};
  if (json_string(j, "format", "") != "taskmoe") config_fail("format", "must be \"taskmoe\"");
  json_int(j, "format_version", "");  // informative; the binary header carries the version
  m.model = j.get<model_config>();
  const auto& t = json_object(j, "task", "");
  m.task.name = json_string(t, "name", "task.");
  m.task.source = json_string(t, "source", "task.");
  m.task.target = json_string(t, "target", "task.");
  m.task.target_tag = json_string(t, "target_tag", "task.");
  m.task_id = json_int(t, "id", "task.");
  const auto& ml = json_object(j, "moe_layers", "");
  for (stack s : {stack::encoder, stack::decoder}) {
    const std::string prefix = "moe_layers.";
    const std::string sn(stack_name(s));
    const auto& arr = json_array(ml, sn.c_str(), prefix);
    for (std::size_t i = 0; i < arr.size(); ++i) {
      const std::string fi = prefix + sn + "[" + std::to_string(i) + "].";
      if (!arr[i].is_object()) config_fail(fi, "must be an object");
      moe_layer_info l;
      l.layer = json_int(arr[i], "layer", fi);
      l.route = json_enum<routing>(arr[i], "routing", fi, routing_names);
      const auto& ex = json_array(arr[i], "experts", fi);
      for (std::size_t k = 0; k < ex.size(); ++k)
        l.experts.push_back(json_int(ex[k], fi + "experts[" + std::to_string(k) + "]"));
      const auto& gs = json_array(arr[i], "gates", fi);
      for (std::size_t k = 0; k < gs.size(); ++k) {
        if (!gs[k].is_number()) config_fail(fi + "gates[" + std::to_string(k) + "]", "must be a number");
        l.gates.push_back(gs[k].get<float>());
      }
      m.moe_layers(s).push_back(std::move(l));
    }
  }
  const auto& q = json_object(j, "quantization", "");
  m.quantization.scheme =
      json_enum<quantization_scheme>(q, "scheme", "quantization.", quantization_scheme_names);
  const auto& qt = json_array(q, "tensors", "quantization.");
  for (std::size_t i = 0; i < qt.size(); ++i)
    m.quantization.tensors.push_back(
        json_string(qt[i], "quantization.tensors[" + std::to_string(i) + "]"));
  const auto& src = json_object(j, "source_checkpoint", "");
  m.source_hash = json_string(src, "hash", "source_checkpoint.");
  m.source_name = json_string(src, "name", "source_checkpoint.");
  const auto& conv = json_object(j, "converter", "");
  m.converter_name = json_string(conv, "name", "converter.");
  m.converter_version = json_string(conv, "version", "converter.");
  if (j.contains("created")) m.created = json_string(j, "created", "");
  m.validate();
}

}  // namespace taskmoe
