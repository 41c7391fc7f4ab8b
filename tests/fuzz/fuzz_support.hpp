#pragma once
// Shared pieces of the libFuzzer harnesses (tests/fuzz/README.md): feeding bytes to the
// path-based loaders through an in-memory file, a tiny valid model built at start, and seed
// writing (TASKMOE_FUZZ_MAKE_SEEDS=<dir> makes a harness write its seed corpus there and exit).

#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint8_t, std::uint32_t
#include <cstdio>      // std::fprintf
#include <cstdlib>     // std::getenv, std::exit, std::abort
#include <cstring>     // std::memcpy
#include <filesystem>  // std::filesystem::remove_all
#include <fstream>     // std::ifstream, std::ofstream
#include <iterator>    // std::istreambuf_iterator
#include <string>      // std::string
#include <vector>      // std::vector

#include <fcntl.h>     // open
#include <sys/mman.h>  // memfd_create
#include <sys/stat.h>  // mkdir
#include <unistd.h>    // ftruncate, pwrite, close

#include <taskmoe/taskmoe.hpp>
#include <taskmoe/convert/convert.hpp>

#ifndef TASKMOE_FUZZ_DIR
#error "TASKMOE_FUZZ_DIR (tests/fuzz) must be defined by the build"
#endif
#ifndef TASKMOE_TEST_DATA_DIR
#error "TASKMOE_TEST_DATA_DIR (tests/data) must be defined by the build"
#endif

namespace taskmoe_fuzz {

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "fuzz harness setup failed: %s\n", what.c_str());
  std::abort();
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) die("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) die("cannot write " + path);
}

inline std::string bytes_of(const std::uint8_t* data, std::size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// An anonymous in-memory file (memfd) reachable by a path, so the loaders that take a path
// (tmoe_file, safetensors_file: open + fstat + mmap) read fuzz input without touching disk.
class memory_file {
 public:
  memory_file() {
    fd_ = ::memfd_create("taskmoe-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) die("memfd_create");
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~memory_file() { ::close(fd_); }
  memory_file(const memory_file&) = delete;
  memory_file& operator=(const memory_file&) = delete;

  // Replaces the contents; returns the path to open.
  const std::string& set(const void* data, std::size_t size) {
    if (::ftruncate(fd_, 0) != 0) die("ftruncate");
    const auto* p = static_cast<const char*>(data);
    std::size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, p + done, size - done, static_cast<off_t>(done));
      if (n <= 0) die("pwrite");
      done += static_cast<std::size_t>(n);
    }
    return path_;
  }
  const std::string& set(const std::string& s) { return set(s.data(), s.size()); }

 private:
  int fd_ = -1;
  std::string path_;
};

// A fresh directory (removed at exit by the caller's process end; harnesses make one each).
inline std::string make_temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string t = std::string(base ? base : "/tmp") + "/taskmoe-fuzz-XXXXXX";
  if (::mkdtemp(&t[0]) == nullptr) die("mkdtemp");
  return t;
}

inline void remove_tree(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// The 35-piece SentencePiece model (identity normaliser, 489 bytes) the tiny model embeds:
// pad 0, unk 1, <s> 2, </s> 3, then <2de> <2en> <2fr> and pieces of a few English words.
inline const std::string& tiny_sentencepiece() {
  static const std::string bytes = read_file(TASKMOE_FUZZ_DIR "/data/tiny-sentencepiece.model");
  return bytes;
}

// d_model 8, 2 heads, 2+2 layers, vocabulary of the tiny SentencePiece model, task-routed MoE
// at layer 1 of each stack (4 experts, top 2).
inline taskmoe::model_config tiny_config() {
  using namespace taskmoe;
  model_config c;
  c.d_model = 8;
  c.n_heads = 2;
  c.d_ff = 16;
  c.encoder_layers = 2;
  c.decoder_layers = 2;
  c.vocab_size = 35;
  c.max_positions = 16;
  c.has_moe = true;
  c.num_experts = 4;
  c.top_k = 2;
  c.d_ff_expert = 12;
  c.task_embedding_dim = 4;
  for (stack s : {stack::encoder, stack::decoder}) {
    c.moe(s).route = routing::task_target;
    c.moe(s).layers = {1};
    c.moe(s).task_keys = {"de", "en", "fr"};
  }
  return c;
}

inline std::vector<taskmoe::task_info> tiny_tasks() {
  return {{"en-de", "en", "de", "<2de>"}, {"de-en", "de", "en", "<2en>"}, {"en-fr", "en", "fr", "<2fr>"}};
}

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

// model.safetensors bytes of a random checkpoint with config `c`.
inline std::vector<std::byte> tiny_safetensors(const taskmoe::model_config& c) {
  using namespace taskmoe;
  safetensors_writer w;
  std::uint32_t seed = 1;
  for (const auto& r : required_checkpoint_tensors(c)) {
    const auto v = random_floats(static_cast<std::size_t>(r.shape.numel()), seed++);
    w.add_f32(r.name, r.shape, v);
  }
  return w.bytes();
}

// Writes the tiny checkpoint (config.json, model.safetensors, sentencepiece.model) into `dir`.
inline void write_tiny_checkpoint(const std::string& dir) {
  const auto c = tiny_config();
  write_file(dir + "/config.json", checkpoint_json(c, tiny_tasks()).dump(2));
  write_file(dir + "/sentencepiece.model", tiny_sentencepiece());
  const auto st = tiny_safetensors(c);
  write_file(dir + "/model.safetensors",
             std::string(reinterpret_cast<const char*>(st.data()), st.size()));
}

// Converts task `task` of the checkpoint in `dir` to a .tmoe file and returns its bytes.
// `vocabulary_map`: a map file to embed, or empty.
inline std::string convert_to_bytes(const std::string& dir, const std::string& task,
                                    taskmoe::quantization_scheme q, const std::string& vocabulary_map = "") {
  using namespace taskmoe;
  const checkpoint ck(dir);
  convert_options o;
  o.quantization = q;
  o.vocabulary_map = vocabulary_map;
  o.created = "2026-01-01T00:00:00Z";  // reproducible bytes
  o.overwrite = true;
  const std::string out = dir + "/" + task + ".tmoe";
  convert_task(ck, task, o, out);
  std::string bytes = read_file(out);
  std::remove(out.c_str());
  return bytes;
}

// The directory named by TASKMOE_FUZZ_MAKE_SEEDS, or empty.
inline std::string seed_dir() {
  const char* d = std::getenv("TASKMOE_FUZZ_MAKE_SEEDS");
  return d ? std::string(d) : std::string();
}

// Writes one seed, `dir`/`name`.
inline void write_seed(const std::string& dir, const std::string& name, const std::string& bytes) {
  ::mkdir(dir.c_str(), 0755);
  write_file(dir + "/" + name, bytes);
}

template <typename T>
inline void poke(std::string& bytes, std::size_t offset, T value) {
  if (offset + sizeof(T) <= bytes.size()) std::memcpy(&bytes[offset], &value, sizeof(T));
}

}  // namespace taskmoe_fuzz

// Defines LLVMFuzzerInitialize: with TASKMOE_FUZZ_MAKE_SEEDS=<dir>, the harness writes its seed
// corpus there with `writer(dir)` and exits instead of fuzzing.
#define TASKMOE_FUZZ_SEEDS(writer)                            \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {        \
    const std::string seeds = taskmoe_fuzz::seed_dir();       \
    if (!seeds.empty()) {                                     \
      writer(seeds);                                          \
      std::exit(0);                                           \
    }                                                         \
    return 0;                                                 \
  }
