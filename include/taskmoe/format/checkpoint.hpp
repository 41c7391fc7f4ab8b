#pragma once
// Reader for the full multi-task checkpoint directory (docs/checkpoint-format.md): config.json,
// model.safetensors (or a sharded index) and sentencepiece.model. It validates the config, the
// presence, dtype and shape of every tensor the config implies, and computes task gates exactly as
// documented, which is what the converter needs to extract a per-task model.

#include <algorithm>  // std::sort
#include <cmath>      // std::isfinite
#include <cstddef>    // std::ptrdiff_t
#include <cstdint>    // std::uint64_t
#include <cstdio>     // std::snprintf
#include <cstring>    // std::memcpy
#include <string>     // std::string
#include <sys/stat.h> // stat
#include <utility>    // std::move
#include <vector>     // std::vector

#include <nlohmann/json.hpp>

#include <taskmoe/detail/crc32c.hpp>
#include <taskmoe/detail/mmap.hpp>
#include <taskmoe/error.hpp>
#include <taskmoe/format/model_config.hpp>
#include <taskmoe/format/model_spec.hpp>  // for_each_required_checkpoint_tensor, spec::
#include <taskmoe/format/safetensors.hpp>
#include <taskmoe/tensor/tensor_view.hpp>

namespace taskmoe {

// What a task's gate at one MoE layer is computed from (moe::compute_task_gate does the math).
struct task_router {
  std::vector<float> router;  // [num_experts, dim]
  std::vector<float> task;    // [dim]: the task's row of the stack's task embedding
  int num_experts = 0;
  int dim = 0;
  int top_k = 0;
};

struct checkpoint_options {
  // Reject NaN/Inf in any float tensor (reads every weight once; a few hundred ms per GB).
  bool check_finite = true;
};

class checkpoint {
 public:
  explicit checkpoint(std::string dir, checkpoint_options opts = {}) : dir_(std::move(dir)) {
    while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
    load_config();
    load_tensors();
    load_sentencepiece();
    scan_tensors(opts);
  }

  const std::string& directory() const noexcept { return dir_; }
  const model_config& config() const noexcept { return config_; }
  const std::vector<task_info>& tasks() const noexcept { return tasks_; }
  // Throws invalid_argument_error listing the known tasks.
  const task_info& task(const std::string& name) const {
    for (const auto& t : tasks_)
      if (t.name == name) return t;
    std::string known;
    for (const auto& t : tasks_) known += (known.empty() ? "" : ", ") + t.name;
    throw invalid_argument_error("unknown task '" + name + "' (checkpoint has: " + known + ")");
  }
  // Index of the task in config.json's "tasks" (the .tmoe task id).
  int task_id(const std::string& name) const {
    const task_info& t = task(name);
    return static_cast<int>(&t - tasks_.data());
  }
  const nlohmann::json& raw_config() const noexcept { return raw_; }
  bool has_tensor(const std::string& name) const { return tensors_.contains(name); }
  const tensor_view& tensor(const std::string& name) const { return tensors_.tensor(name); }
  std::vector<std::string> tensor_names() const { return tensors_.names(); }
  // Throws io_error when a weight file was modified since it was mapped.
  void check_unchanged() const { tensors_.check_unchanged(); }
  // Raw bytes of sentencepiece.model.
  const std::string& sentencepiece_model() const noexcept { return spm_; }
  // Names of tensors present but not required (ignored, reported so callers can warn).
  const std::vector<std::string>& extra_tensors() const noexcept { return extra_; }

  // 64-bit content hash (docs/format.md, "source_checkpoint.hash"), and as 16 hex digits.
  std::uint64_t content_hash() const noexcept { return hash_; }
  std::string content_hash_hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(hash_));
    return buf;
  }

  // The router and task row for `task`'s gate at MoE layer `layer` of `s` (task-routed stacks only).
  task_router router_of(const task_info& task, stack s, int layer) const {
    const auto& m = config_.moe(s);
    const std::string sn(stack_name(s));
    if (!config_.has_moe || !is_task_routed(m.route))
      throw invalid_argument_error("router_of: the " + sn + " stack is not task-routed");
    if (!config_.is_moe_layer(s, layer))
      throw invalid_argument_error("router_of: " + sn + " layer " + std::to_string(layer) +
                                   " is not an MoE layer");
    const int k = task_key_index(config_, s, task);
    if (k < 0) throw invalid_argument_error("router_of: task '" + task.name + "' has no task key");
    task_router r;
    r.dim = config_.task_embedding_dim;
    r.num_experts = config_.num_experts;
    r.top_k = config_.top_k;
    const std::vector<float> table = to_f32(tensor(spec::task_embedding(s)));
    const auto row = table.begin() + static_cast<std::ptrdiff_t>(k) * r.dim;
    r.task.assign(row, row + r.dim);
    r.router = to_f32(tensor(spec::router(s, layer)));
    return r;
  }

 private:
  std::string file(const char* name) const { return dir_ + "/" + name; }

  static bool exists(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0;
  }

  void load_config() {
    const std::string path = file("config.json");
    if (!exists(path)) throw format_error(dir_, "not a checkpoint: config.json is missing");
    const detail::mapped_file f(path);
    const char* p = reinterpret_cast<const char*>(f.data());
    raw_ = nlohmann::json::parse(p, p + f.size(), nullptr, false);
    if (raw_.is_discarded()) throw format_error(path, "not valid JSON");
    try {
      using namespace detail;
      if (!raw_.is_object()) config_fail("(root)", "must be a JSON object");
      if (json_string(raw_, "format", "") != "taskmoe-checkpoint")
        config_fail("format", "must be \"taskmoe-checkpoint\"");
      const int v = json_int(raw_, "format_version", "");
      if (v != 1) config_fail("format_version", "unsupported version " + std::to_string(v));
      config_ = raw_.get<model_config>();
      const auto& tasks = json_array(raw_, "tasks", "");
      const auto& tags = json_object(raw_, "target_tags", "");
      for (std::size_t i = 0; i < tasks.size(); ++i) {
        task_info t;
        try {
          t = tasks[i].get<task_info>();
        } catch (const config_error& e) {
          config_fail("tasks[" + std::to_string(i) + "]", e.what());
        }
        if (tags.contains(t.target))
          t.target_tag = json_string(tags[t.target], "target_tags." + t.target);
        tasks_.push_back(std::move(t));
      }
      validate_tasks(config_, tasks_);
    } catch (const config_error& e) {
      throw format_error(path, e.what());
    }
  }

  void load_tensors() {
    const std::string single = file("model.safetensors");
    const std::string index = file("model.safetensors.index.json");
    if (exists(single))
      tensors_ = safetensors_archive::open_file(single);
    else if (exists(index))
      tensors_ = safetensors_archive::open_index(index);
    else
      throw format_error(dir_, "neither model.safetensors nor model.safetensors.index.json exists");
    std::vector<std::string> required_names;
    // Visited, not listed first: a config.json claiming 2^31 - 1 layers stops at the first
    // missing tensor instead of listing billions (found by tests/fuzz/fuzz_config).
    for_each_required_checkpoint_tensor(config_, [&](const required_tensor& r) {
      if (!tensors_.contains(r.name))
        throw format_error(dir_, "missing required tensor '" + r.name + "'");
      const tensor_view& v = tensors_.tensor(r.name);
      const std::string& f = tensors_.file_of(r.name);
      if (v.type != dtype::f32 && v.type != dtype::f16 && v.type != dtype::bf16)
        throw format_error(f, "tensor '" + r.name + "' has dtype " +
                                  std::string(dtype_name(v.type)) + ", expected F32, F16 or BF16");
      if (v.shape != r.shape)
        throw format_error(f, "tensor '" + r.name + "' has shape " + v.shape.to_string() +
                                  ", expected " + r.shape.to_string());
      required_names.push_back(r.name);
    });
    std::sort(required_names.begin(), required_names.end());
    for (const auto& n : tensors_.names())
      if (!std::binary_search(required_names.begin(), required_names.end(), n)) extra_.push_back(n);
    std::sort(extra_.begin(), extra_.end());  // scan_tensors looks names up in it
  }

  void load_sentencepiece() {
    const std::string path = file("sentencepiece.model");
    if (!exists(path)) throw format_error(dir_, "sentencepiece.model is missing");
    const detail::mapped_file f(path);
    if (f.size() == 0) throw format_error(path, "empty file");
    spm_.assign(reinterpret_cast<const char*>(f.data()), f.size());
  }

  // FNV-1a 64 over a canonical stream: the config JSON re-serialised with sorted keys, then for
  // each tensor in name order: name, NUL, dtype name, NUL, dims as u64 LE, CRC32C of the data as
  // u32 LE; then the CRC32C of sentencepiece.model as u32 LE. Bulk bytes go through CRC32C (fast,
  // hardware); FNV only sees the small stream. Any change of config, tensor or tokenizer changes it.
  // The same single pass checks values (check_finite) and then releases each tensor's pages, so
  // opening a checkpoint larger than memory keeps the resident set near one tensor.
  void scan_tensors(const checkpoint_options& opts) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    const auto mix = [&h](const void* data, std::size_t n) {
      const auto* p = static_cast<const unsigned char*>(data);
      for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    };
    const std::string cfg = raw_.dump();
    mix(cfg.data(), cfg.size());
    for (const auto& name : tensors_.names()) {
      const tensor_view& v = tensors_.tensor(name);
      mix(name.c_str(), name.size() + 1);
      const std::string_view dn = dtype_name(v.type);
      mix(dn.data(), dn.size());
      mix("", 1);
      mix(v.shape.data(), v.shape.ndim() * sizeof(std::uint64_t));
      if (opts.check_finite && !std::binary_search(extra_.begin(), extra_.end(), name))
        detail::check_finite(v, name, tensors_.file_of(name));
      const std::uint32_t crc = detail::crc32c(v.data, v.byte_size);
      mix(&crc, 4);
      detail::release_pages(v.data, v.byte_size);
    }
    const std::uint32_t crc = detail::crc32c(spm_.data(), spm_.size());
    mix(&crc, 4);
    hash_ = h;
  }

  std::string dir_;
  nlohmann::json raw_;
  model_config config_;
  std::vector<task_info> tasks_;
  safetensors_archive tensors_;
  std::string spm_;
  std::vector<std::string> extra_;
  std::uint64_t hash_ = 0;
};

}  // namespace taskmoe
