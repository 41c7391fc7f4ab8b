#pragma once
// Shared test utilities: temporary directories, file patching, tiny model configs.
// Tests include only the umbrella header so they also compile against single_include/.

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <taskmoe/taskmoe.hpp>

namespace taskmoe_test {

// doctest::Contains takes doctest::String, which has no std::string constructor.
inline doctest::Contains contains(const std::string& s) { return doctest::Contains(s.c_str()); }

// Runs `f`, which must throw format_error whose message is "<file>: ..." containing `problem`.
template <typename F>
void expect_format_error(F&& f, const std::string& file, const std::string& problem) {
  try {
    f();
    FAIL("no exception; expected: " << problem);
  } catch (const taskmoe::format_error& e) {
    const std::string what = e.what();
    CHECK_MESSAGE(what.rfind(file + ": ", 0) == 0, what);
    CHECK_MESSAGE(what.find(problem) != std::string::npos, what << "\n   expected: " << problem);
    CHECK(e.file() == file);
  }
}

// A fresh directory under $TMPDIR, removed (recursively) at scope exit.
class temp_dir {
 public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base ? base : "/tmp") + "/taskmoe-test-XXXXXX";
    if (::mkdtemp(&t[0]) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = t;
  }
  ~temp_dir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
inline void poke(std::string& bytes, std::size_t offset, T value) {
  std::memcpy(&bytes[offset], &value, sizeof(T));
}

template <typename T>
inline T peek(const std::string& bytes, std::size_t offset) {
  T v{};
  std::memcpy(&v, &bytes[offset], sizeof(T));
  return v;
}

// Deterministic pseudo-random floats in [-1, 1).
inline std::vector<float> random_floats(std::size_t n, std::uint32_t seed) {
  std::vector<float> v(n);
  std::uint32_t s = seed * 2654435761u + 1;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = static_cast<float>(s >> 8) / static_cast<float>(1u << 23) - 1.0f;
  }
  return v;
}

// A tiny valid config: d_model 8, 2 heads, 2+2 layers, MoE at layer 1 of each stack.
inline taskmoe::model_config tiny_config(taskmoe::routing enc = taskmoe::routing::task_target,
                                         taskmoe::routing dec = taskmoe::routing::task_target) {
  using namespace taskmoe;
  model_config c;
  c.d_model = 8;
  c.n_heads = 2;
  c.d_ff = 16;
  c.encoder_layers = 2;
  c.decoder_layers = 2;
  c.vocab_size = 32;
  c.max_positions = 16;
  c.has_moe = true;
  c.num_experts = 4;
  c.top_k = 2;
  c.d_ff_expert = 12;
  const auto setup = [](stack_moe_config& s, routing r) {
    s.route = r;
    if (r != routing::dense) s.layers = {1};
    if (r == routing::task_target) s.task_keys = {"de", "en", "fr"};
    if (r == routing::task_pair) s.task_keys = {"de-en", "en-de", "en-fr"};
  };
  setup(c.encoder_moe, enc);
  setup(c.decoder_moe, dec);
  if (c.any_task_routed()) c.task_embedding_dim = 4;
  return c;
}

inline std::vector<taskmoe::task_info> tiny_tasks() {
  return {{"en-de", "en", "de", "<2de>"}, {"de-en", "de", "en", "<2en>"}, {"en-fr", "en", "fr", "<2fr>"}};
}

// config.json text for a checkpoint with this config and these tasks.
inline nlohmann::json checkpoint_json(const taskmoe::model_config& c,
                                      const std::vector<taskmoe::task_info>& tasks) {
  nlohmann::json j = c;
  j["format"] = "taskmoe-checkpoint";
  j["format_version"] = 1;
  j["tasks"] = nlohmann::json::array();
  j["target_tags"] = nlohmann::json::object();
  for (const auto& t : tasks) {
    j["tasks"].push_back({{"name", t.name}, {"source", t.source}, {"target", t.target}});
    j["target_tags"][t.target] = t.target_tag;
  }
  j["weights_dtype"] = "float32";
  return j;
}

// Writes a complete random checkpoint; `edit` may change the tensor set before writing
// (return false from `keep` to drop a tensor, or replace its shape).
struct checkpoint_edit {
  std::function<bool(const std::string&)> keep = [](const std::string&) { return true; };
  std::function<void(const std::string&, taskmoe::tensor_shape&)> reshape =
      [](const std::string&, taskmoe::tensor_shape&) {};
  taskmoe::dtype type = taskmoe::dtype::f32;
};

inline void write_checkpoint(const std::string& dir, const taskmoe::model_config& c,
                             const std::vector<taskmoe::task_info>& tasks,
                             const checkpoint_edit& edit = {}) {
  using namespace taskmoe;
  write_file(dir + "/config.json", checkpoint_json(c, tasks).dump(2));
  write_file(dir + "/sentencepiece.model", "fake sentencepiece model bytes");
  safetensors_writer w;
  std::uint32_t seed = 1;
  for (auto r : required_checkpoint_tensors(c)) {
    if (!edit.keep(r.name)) continue;
    edit.reshape(r.name, r.shape);
    const auto v = random_floats(static_cast<std::size_t>(r.shape.numel()), seed++);
    if (edit.type == dtype::f32) {
      w.add(r.name, dtype::f32, r.shape, v.data(), v.size() * 4);
    } else {
      std::vector<std::uint16_t> h(v.size());
      for (std::size_t i = 0; i < v.size(); ++i)
        h[i] = edit.type == dtype::f16 ? detail::f32_to_f16(v[i]) : detail::f32_to_bf16(v[i]);
      w.add(r.name, edit.type, r.shape, h.data(), h.size() * 2);
    }
  }
  w.write(dir + "/model.safetensors");
}

}  // namespace taskmoe_test
