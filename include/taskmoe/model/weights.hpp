#pragma once
// Weights as the runtime uses them, and where they come from.
//
// A `weight_source` answers "give me tensor <name>" for one task: either a memory-mapped .tmoe
// file (experts already extracted, gates in the metadata) or a full checkpoint directory plus a
// task name (gates computed at load from the router and the task embedding, as the converter
// does). The loaders turn a tensor_view into a `weight_matrix`:
//   f32 (4-byte aligned)  used in place, no copy;
//   i8 + per-row scales   used in place (int8 GEMM);
//   f16 embedding tables  used in place (rows widened per lookup; packed for the output projection);
//   f16 / bf16 / unaligned f32  widened to f32 once at load into buffers the model owns.
// Everything the model points at lives either in the source (kept alive by the model) or in its
// `weight_store`, so a loaded model is immutable and can be shared by any number of threads.

#include <cstdint>     // std::int8_t, std::uint16_t, std::uintptr_t
#include <cstring>     // std::memcpy
#include <deque>       // std::deque (stable addresses)
#include <memory>      // std::shared_ptr
#include <mutex>       // std::mutex (verify_on_read)
#include <set>         // std::set
#include <string>      // std::string
#include <string_view> // std::string_view
#include <vector>      // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/format/checkpoint.hpp>
#include <taskmoe/format/model_config.hpp>
#include <taskmoe/format/tmoe.hpp>
#include <taskmoe/kernels/elementwise.hpp>  // to_float16 (quantize at load)
#include <taskmoe/kernels/gemm.hpp>         // quantize_rows_int8 (quantize at load)
#include <taskmoe/moe/gating.hpp>     // compute_task_gate
#include <taskmoe/tensor/tensor_view.hpp>
#include <taskmoe/tensor/weight_matrix.hpp>

namespace taskmoe {
namespace model {

using taskmoe::weight_matrix;  // tensor/weight_matrix.hpp

// Owned buffers of converted or fused weights. A deque never moves its elements, so pointers into
// the vectors stay valid while the store grows during loading.
class weight_store {
 public:
  std::vector<float>& new_f32(std::size_t n) {
    f32_.emplace_back(n);
    return f32_.back();
  }
  std::vector<std::int8_t>& new_i8(std::size_t n) {
    i8_.emplace_back(n);
    return i8_.back();
  }
  std::vector<std::uint16_t>& new_f16(std::size_t n) {
    f16_.emplace_back(n);
    return f16_.back();
  }
  std::size_t bytes() const noexcept {
    std::size_t b = 0;
    for (const auto& v : f32_) b += v.size() * sizeof(float);
    for (const auto& v : i8_) b += v.size();
    for (const auto& v : f16_) b += v.size() * sizeof(std::uint16_t);
    return b;
  }

 private:
  std::deque<std::vector<float>> f32_;
  std::deque<std::vector<std::int8_t>> i8_;
  std::deque<std::vector<std::uint16_t>> f16_;
};

// The routing of one MoE layer once the weight source has been resolved.
struct moe_layer_spec {
  routing route = routing::token;
  // Indices into the first axis of the layer's stacked expert tensors, one per expert to run.
  std::vector<int> slots;
  // Original checkpoint expert id of each slot (task routing: accumulation order; token routing:
  // the router's column for this slot).
  std::vector<int> expert_ids;
  // Task routing: the constant gate of each slot. Token routing: empty.
  std::vector<float> gates;
};

// Where tensors come from: a .tmoe file or a checkpoint directory + task.
class weight_source {
 public:
  // A .tmoe file (weights used in place from the mapping). verify_on_read: check each tensor's
  // CRC the first time it is read (for a file opened without checksums), so the load that packs
  // it right after finds it in cache; verify_unread() then checks the tensors never read.
  static weight_source from_tmoe(std::shared_ptr<const tmoe_file> file, bool verify_on_read = false) {
    weight_source s;
    s.tmoe_ = std::move(file);
    if (verify_on_read) s.verified_ = std::make_shared<verified_set>();
    const tmoe_metadata& m = s.tmoe_->metadata();
    s.config_ = m.model;
    s.task_ = m.task;
    s.name_ = s.tmoe_->path();
    return s;
  }
  // A full checkpoint and one of its tasks (experts sliced from the stacked tensors).
  static weight_source from_checkpoint(std::shared_ptr<const checkpoint> ckpt,
                                       const std::string& task) {
    weight_source s;
    s.task_ = ckpt->task(task);  // throws invalid_argument_error listing the known tasks
    s.ckpt_ = std::move(ckpt);
    s.config_ = s.ckpt_->config();
    s.name_ = s.ckpt_->directory();
    return s;
  }

  const model_config& config() const noexcept { return config_; }
  const task_info& task() const noexcept { return task_; }
  const std::string& name() const noexcept { return name_; }
  bool is_tmoe() const noexcept { return tmoe_ != nullptr; }
  const tmoe_file* tmoe() const noexcept { return tmoe_.get(); }
  const checkpoint* ckpt() const noexcept { return ckpt_.get(); }
  // Throws io_error when the mapped file(s) changed on disk since they were opened.
  void check_unchanged() const {
    if (tmoe_) tmoe_->check_unchanged();
    if (ckpt_) ckpt_->check_unchanged();
  }

  std::string sentencepiece_model() const {
    if (tmoe_) {
      verify_once(tmoe_tokenizer_tensor);
      return std::string(tmoe_->sentencepiece_model());
    }
    return ckpt_->sentencepiece_model();
  }
  // A .tmoe file's embedded vocabulary map (vmap.txt text, viewing the file); empty otherwise.
  std::string_view vocabulary_map_text() const {
    if (!tmoe_ || !tmoe_->contains(tmoe_vocabulary_map_tensor)) return {};
    verify_once(tmoe_vocabulary_map_tensor);
    return tmoe_->vocabulary_map_text();
  }

  const tensor_view& tensor(const std::string& name) const {
    if (tmoe_) {
      const tensor_view& v = tmoe_->require(name);
      verify_once(name);
      return v;
    }
    if (!ckpt_->has_tensor(name))
      throw format_error(name_, "missing required tensor '" + name + "'");
    return ckpt_->tensor(name);
  }
  // verify_on_read: the CRCs of the tensors not read so far, on `threads` threads.
  void verify_unread(int threads) const {
    if (!verified_) return;
    const std::lock_guard<std::mutex> lock(verified_->mutex);
    tmoe_->verify_checksums(threads, [&](const std::string& n) { return verified_->names.count(n) != 0; });
    for (const std::string& n : tmoe_->tensor_names()) verified_->names.insert(n);
  }

  bool has_tensor(const std::string& name) const {
    return tmoe_ ? tmoe_->contains(name) : ckpt_->has_tensor(name);
  }

  // The routing of MoE layer `layer` of stack `s`.
  moe_layer_spec moe_layer(stack s, int layer) const {
    moe_layer_spec spec;
    spec.route = config_.moe(s).route;
    if (tmoe_) {
      const auto& layers = tmoe_->metadata().moe_layers(s);
      for (const auto& l : layers) {
        if (l.layer != layer) continue;
        for (std::size_t j = 0; j < l.experts.size(); ++j) spec.slots.push_back(static_cast<int>(j));
        spec.expert_ids = l.experts;
        spec.gates = l.gates;
        return spec;
      }
      throw format_error(name_, "metadata: moe_layers." + std::string(stack_name(s)) +
                                    " has no entry for layer " + std::to_string(layer));
    }
    if (is_task_routed(spec.route)) {
      const moe::task_gate g = moe::compute_task_gate(ckpt_->router_of(task_, s, layer));
      spec.slots = g.experts;
      spec.expert_ids = g.experts;
      spec.gates = g.weights;
    } else {
      for (int e = 0; e < config_.num_experts; ++e) {
        spec.slots.push_back(e);
        spec.expert_ids.push_back(e);
      }
    }
    return spec;
  }

 private:
  struct verified_set {
    std::mutex mutex;
    std::set<std::string> names;
  };

  void verify_once(const std::string& name) const {
    if (!verified_) return;
    const std::lock_guard<std::mutex> lock(verified_->mutex);
    if (verified_->names.count(name)) return;
    tmoe_->verify_tensor(name);
    verified_->names.insert(name);
  }

  std::shared_ptr<const tmoe_file> tmoe_;
  std::shared_ptr<verified_set> verified_;  // verify_on_read: the tensors checked so far
  std::shared_ptr<const checkpoint> ckpt_;
  model_config config_;
  task_info task_;
  std::string name_;
};

// Turns tensor views into weight matrices and vectors, converting only when needed.
class weight_loader {
 public:
  weight_loader(const weight_source& src, weight_store& store) : src_(src), store_(store) {}

  const weight_source& source() const noexcept { return src_; }

  // A 2-D [rows, cols] matrix, or the `slot`-th [rows, cols] matrix of a 3-D stack.
  weight_matrix matrix(const std::string& name, int rows, int cols, int slot = -1) const {
    const tensor_view& v = src_.tensor(name);
    check_shape(name, v, rows, cols, slot);
    const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
    const std::size_t first = slot < 0 ? 0 : static_cast<std::size_t>(slot) * n;
    weight_matrix w;
    w.rows = rows;
    w.cols = cols;
    if (v.type == dtype::i8) {
      if (v.scales == nullptr) throw format_error(src_.name(), "i8 tensor '" + name + "' has no scales");
      w.i8 = reinterpret_cast<const std::int8_t*>(v.data) + first;
      w.scales = v.scales + (slot < 0 ? 0 : static_cast<std::size_t>(slot) * rows);
      return w;
    }
    w.f32 = floats(name, v, first, n);
    return w;
  }

  // A vector of `n` floats (bias, layer-norm parameter), or row `slot` of a [E, n] stack.
  const float* vector(const std::string& name, int n, int slot = -1) const {
    const tensor_view& v = src_.tensor(name);
    check_shape(name, v, 1, n, slot, true);
    const std::size_t first = slot < 0 ? 0 : static_cast<std::size_t>(slot) * n;
    return floats(name, v, first, static_cast<std::size_t>(n));
  }

  // A [rows, cols] matrix as f32 whatever its dtype (int8 dequantized into the store).
  const float* matrix_f32(const std::string& name, int rows, int cols) const {
    const weight_matrix m = matrix(name, rows, cols);
    if (!m.is_int8()) return m.f32;
    auto& out = store_.new_f32(static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols));
    for (int r = 0; r < rows; ++r) m.row_to_f32(r, out.data() + static_cast<std::size_t>(r) * cols);
    return out.data();
  }

  // matrix(), quantized per row into the store when it is float: the converter's quantizer, so
  // the values equal those of a converted int8 file. A float16 source is widened in a scratch
  // buffer that is not kept.
  weight_matrix matrix_int8(const std::string& name, int rows, int cols, int slot = -1) const {
    const tensor_view& v = src_.tensor(name);
    if (v.type == dtype::i8) return matrix(name, rows, cols, slot);
    check_shape(name, v, rows, cols, slot);
    const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
    std::vector<float> scratch;
    const float* f = floats(name, v, slot < 0 ? 0 : static_cast<std::size_t>(slot) * n, n, &scratch);
    weight_matrix q;
    q.rows = rows;
    q.cols = cols;
    auto& data = store_.new_i8(n);
    auto& sc = store_.new_f32(static_cast<std::size_t>(rows));
    kernels::quantize_rows_int8(f, rows, cols, data.data(), sc.data());
    q.i8 = data.data();
    q.scales = sc.data();
    return q;
  }

  // An embedding table [rows, cols]: row lookups, and the output projection's weights once packed.
  // float16 stays float16 (in place when aligned; no widened copy of the table); with
  // `round_f16` a float table is rounded to float16 into the store, as the converter writes it
  // (quantize at load). Anything else as matrix().
  weight_matrix table(const std::string& name, int rows, int cols, bool round_f16 = false) const {
    const tensor_view& v = src_.tensor(name);
    if (v.type != dtype::f16 && (!round_f16 || v.type == dtype::i8)) return matrix(name, rows, cols);
    check_shape(name, v, rows, cols, -1);
    weight_matrix w;
    w.rows = rows;
    w.cols = cols;
    if (v.type == dtype::f16 && reinterpret_cast<std::uintptr_t>(v.data) % alignof(std::uint16_t) == 0) {
      w.f16 = v.data_as<std::uint16_t>();
      return w;
    }
    const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
    auto& h = store_.new_f16(n);
    if (v.type == dtype::f16) {
      std::memcpy(h.data(), v.data, n * sizeof(std::uint16_t));
    } else {
      std::vector<float> scratch;
      const float* f = floats(name, v, 0, n, &scratch);
      for (int r = 0; r < rows; ++r)
        kernels::to_float16(f + static_cast<std::size_t>(r) * cols, cols, h.data() + static_cast<std::size_t>(r) * cols);
    }
    w.f16 = h.data();
    return w;
  }

  std::vector<float>& owned(std::size_t n) const { return store_.new_f32(n); }

 private:
  void check_shape(const std::string& name, const tensor_view& v, int rows, int cols, int slot,
                   bool vec = false) const {
    const auto u = [](int x) { return static_cast<std::uint64_t>(x); };
    tensor_shape expected;
    if (slot < 0)
      expected = vec ? tensor_shape{u(cols)} : tensor_shape{u(rows), u(cols)};
    if (slot >= 0) {
      const bool ok = v.shape.ndim() == (vec ? 2u : 3u) && v.shape[0] > u(slot) &&
                      v.shape[1] == (vec ? u(cols) : u(rows)) && (vec || v.shape[2] == u(cols));
      if (!ok)
        throw format_error(src_.name(), "tensor '" + name + "' has shape " + v.shape.to_string() +
                                            ", expected [E > " + std::to_string(slot) + ", " +
                                            (vec ? std::to_string(cols) : std::to_string(rows) + ", " + std::to_string(cols)) + "]");
    } else if (v.shape != expected) {
      throw format_error(src_.name(), "tensor '" + name + "' has shape " + v.shape.to_string() +
                                          ", expected " + expected.to_string());
    }
    if (v.type == dtype::u8)
      throw format_error(src_.name(), "tensor '" + name + "' has dtype u8, expected a number type");
  }

  // n floats starting at element `first`: in place for aligned f32, else widened into `scratch`
  // (when given) or the store.
  const float* floats(const std::string& name, const tensor_view& v, std::size_t first,
                      std::size_t n, std::vector<float>* scratch = nullptr) const {
    if (v.type == dtype::f32 && reinterpret_cast<std::uintptr_t>(v.data) % alignof(float) == 0)
      return v.data_as<float>() + first;
    std::vector<float>& out = scratch ? *scratch : store_.new_f32(n);
    out.resize(n);
    tensor_view part = v;
    const std::size_t es = dtype_size(v.type);
    part.data = v.data + first * es;
    part.shape = tensor_shape{static_cast<std::uint64_t>(n)};
    part.byte_size = n * es;
    if (v.type == dtype::i8) {
      // A quantized vector: dequantize row by row with the view's own scales.
      const std::uint64_t row = v.row_length();
      for (std::size_t i = 0; i < n; ++i)
        out[i] = static_cast<float>(static_cast<std::int8_t>(v.data[first + i])) *
                 (v.scales ? v.scales[(first + i) / row] : 1.0f);
      (void)name;
      return out.data();
    }
    to_f32(part, out.data());
    return out.data();
  }

  const weight_source& src_;
  weight_store& store_;
};

}  // namespace model
}  // namespace taskmoe
