#pragma once
// Runtime test support: golden fixture access and a small task extractor (checkpoint -> .tmoe)
// written here with tmoe_writer, independent of tools/convert, so the runtime's extracted path
// can be checked against the checkpoint-direct path.

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_helpers.hpp"

namespace taskmoe_test {

inline const std::vector<std::string>& fixture_setups() {
  static const std::vector<std::string> s = {"task_target", "task_pair", "token_task", "token_token",
                                             "dense"};
  return s;
}

// A JSON array of ints (the reference's token ids).
inline std::vector<int> ints(const nlohmann::json& j) { return j.get<std::vector<int>>(); }

inline std::string fixture_dir(const std::string& setup) {
  return std::string(TASKMOE_TEST_DATA_DIR) + "/fixtures/" + setup;
}

inline nlohmann::json fixture_reference(const std::string& setup) {
  std::ifstream f(fixture_dir(setup) + "/reference.json");
  return nlohmann::json::parse(f);
}

// Extracts `task` of `ck` into a .tmoe at `path`: task-routed experts sliced to the task's top-k
// (stacked in gate order), routers and task embeddings of task-routed stacks dropped.
inline void extract_task(const taskmoe::checkpoint& ck, const std::string& task, const std::string& path) {
  using namespace taskmoe;
  const model_config& c = ck.config();
  const task_info& t = ck.task(task);
  tmoe_metadata m;
  m.model = c;
  m.task = t;
  m.task_id = ck.task_id(task);
  m.source_hash = ck.content_hash_hex();
  m.source_name = "fixture";
  m.converter_name = "taskmoe-tests";
  std::map<std::string, std::vector<int>> sliced;  // expert tensor -> kept slots
  for (stack s : {stack::encoder, stack::decoder}) {
    if (!c.has_moe) continue;
    for (int layer : c.moe(s).layers) {
      moe_layer_info l;
      l.layer = layer;
      l.route = c.moe(s).route;
      if (is_task_routed(l.route)) {
        const moe::task_gate g = moe::compute_task_gate(ck.router_of(t, s, layer));
        l.experts = g.experts;
        l.gates = g.weights;
        const std::string p = std::string(stack_name(s)) + ".layers." + std::to_string(layer) + ".moe.";
        for (const char* n : {"experts.fc1.weight", "experts.fc1.bias", "experts.fc2.weight", "experts.fc2.bias"})
          sliced[p + n] = g.experts;
      } else {
        for (int e = 0; e < c.num_experts; ++e) l.experts.push_back(e);
      }
      m.moe_layers(s).push_back(l);
    }
  }
  tmoe_write_options wo;
  wo.overwrite = true;
  tmoe_writer w(path, wo);
  w.set_metadata(m);
  for (const auto& r : required_checkpoint_tensors(c)) {
    const bool task_stack_extra =
        (r.name.find(".moe.router.") != std::string::npos || r.name.find(".task_embedding.") != std::string::npos) &&
        is_task_routed(c.moe(r.name.rfind("encoder", 0) == 0 ? stack::encoder : stack::decoder).route);
    if (task_stack_extra) continue;
    const tensor_view& v = ck.tensor(r.name);
    auto it = sliced.find(r.name);
    if (it == sliced.end()) {
      w.add_tensor(r.name, v);
      continue;
    }
    const std::uint64_t per = v.byte_size / v.shape[0];
    std::string bytes;
    for (int e : it->second)
      bytes.append(reinterpret_cast<const char*>(v.data) + per * static_cast<std::uint64_t>(e), per);
    tensor_shape shape = v.shape.ndim() == 3 ? tensor_shape{it->second.size(), v.shape[1], v.shape[2]}
                                             : tensor_shape{it->second.size(), v.shape[1]};
    w.add_tensor(r.name, v.type, shape, bytes.data(), bytes.size());
  }
  w.add_sentencepiece(ck.sentencepiece_model());
  w.finish();
}

}  // namespace taskmoe_test
