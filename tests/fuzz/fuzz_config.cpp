// libFuzzer harness: a checkpoint's config.json (and the same "model"/"moe" objects as .tmoe
// metadata). Each input is
//   1. parsed as JSON and read as model_config, task_info list and tmoe_metadata directly, and
//   2. written as config.json into a checkpoint directory whose model.safetensors and
//      sentencepiece.model are those of the tiny valid model, then opened with checkpoint: config
//      and task checks, the required-tensor table, dtype/shape checks, the content hash. When it
//      opens: every task's gates, the conversion plan, and a few decoding steps from the
//      checkpoint (so edits the tensors still fit, such as norm, activation, ids, eps, reach
//      the model).

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t

#include "fuzz_support.hpp"

namespace {

using namespace taskmoe;

struct checkpoint_dir {
  std::string path = taskmoe_fuzz::make_temp_dir();
  checkpoint_dir() { taskmoe_fuzz::write_tiny_checkpoint(path); }
  ~checkpoint_dir() { taskmoe_fuzz::remove_tree(path); }
};

void parse_directly(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return;
  try {
    const model_config c = j.get<model_config>();
    (void)nlohmann::json(c).dump();
    if (j.is_object() && j.contains("tasks") && j["tasks"].is_array()) {
      std::vector<task_info> tasks;
      for (const auto& t : j["tasks"]) tasks.push_back(t.get<task_info>());
      validate_tasks(c, tasks);
    }
  } catch (const taskmoe::error&) {
  }
  try {
    const tmoe_metadata m = j.get<tmoe_metadata>();
    (void)nlohmann::json(m).dump();
  } catch (const taskmoe::error&) {
  }
}

void open_checkpoint(const std::string& dir) {
  const auto ck = std::make_shared<const checkpoint>(dir);
  const model_config& c = ck->config();
  for (const auto& t : ck->tasks()) {
    for (stack s : {stack::encoder, stack::decoder})
      if (c.has_moe && is_task_routed(c.moe(s).route))
        for (int layer : c.moe(s).layers) (void)moe::compute_task_gate(ck->router_of(t, s, layer));
    for (auto q : {quantization_scheme::float32, quantization_scheme::int8}) {
      convert_options o;
      o.quantization = q;
      (void)plan_task(*ck, t.name, o);
    }
  }
  const translator tr = translator::from_checkpoint(dir, ck->tasks().front().name);
  translation_options o;
  o.beam_size = 1;
  o.max_decoding_length = 3;
  const int v = c.vocab_size;
  (void)tr.translate_tokens({{4 % v, 5 % v}}, o);
}

void write_seeds(const std::string& dir) {
  using namespace taskmoe_fuzz;
  const auto c = tiny_config();
  const nlohmann::json good = checkpoint_json(c, tiny_tasks());
  write_seed(dir, "tiny-config.json", good.dump(1));
  for (const char* f : {"dense", "task_pair", "token_token"})
    write_seed(dir, std::string("fixture-") + f + ".json",
               read_file(std::string(TASKMOE_TEST_DATA_DIR "/fixtures/") + f + "/config.json"));
  // The mutations test_model_config.cpp and test_checkpoint.cpp make by hand.
  const auto edit = [&](const char* name, auto&& f) {
    nlohmann::json j = good;
    f(j);
    write_seed(dir, name, j.dump(1));
  };
  edit("wrong-format", [](nlohmann::json& j) { j["format"] = "other"; });
  edit("version-2", [](nlohmann::json& j) { j["format_version"] = 2; });
  edit("heads-do-not-divide", [](nlohmann::json& j) { j["model"]["n_heads"] = 3; });
  edit("top-k-too-big", [](nlohmann::json& j) { j["moe"]["top_k"] = 5; });
  edit("layer-out-of-range", [](nlohmann::json& j) { j["moe"]["encoder"]["layers"] = {7}; });
  edit("huge-layers", [](nlohmann::json& j) { j["model"]["encoder_layers"] = 2147483647; });
  edit("missing-tag", [](nlohmann::json& j) { j["target_tags"].erase("fr"); });
  edit("duplicate-task", [](nlohmann::json& j) { j["tasks"].push_back(j["tasks"][0]); });
  edit("token-routing", [](nlohmann::json& j) { j["moe"]["decoder"]["routing"] = "token"; });
  edit("post-gelu", [](nlohmann::json& j) {
    j["model"]["norm"] = "post";
    j["model"]["activation"] = "gelu";
    j["model"]["layer_norm_eps"] = 1e-30;
  });
  edit("no-moe", [](nlohmann::json& j) { j.erase("moe"); });
  write_seed(dir, "not-json", "{\"model\": {\"d_model\": 8,");
  // The .tmoe metadata form (the same model/moe objects), from the tiny .tmoe file.
  const std::string ck = make_temp_dir();
  write_tiny_checkpoint(ck);
  const std::string t = convert_to_bytes(ck, "en-de", quantization_scheme::int8);
  remove_tree(ck);
  std::uint64_t off = 0, n = 0;
  std::memcpy(&off, t.data() + 16, 8);
  std::memcpy(&n, t.data() + 24, 8);
  write_seed(dir, "tmoe-metadata.json", t.substr(off, n));
}

}  // namespace

TASKMOE_FUZZ_SEEDS(write_seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const checkpoint_dir dir;
  const std::string text = taskmoe_fuzz::bytes_of(data, size);
  parse_directly(text);
  taskmoe_fuzz::write_file(dir.path + "/config.json", text);
  try {
    open_checkpoint(dir.path);
  } catch (const taskmoe::error&) {
  }
  return 0;
}
