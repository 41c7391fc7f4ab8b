#pragma once
// Extraction of per-task models from a multi-task checkpoint (docs/converter.md): the library
// behind taskmoe-convert, usable from tests and benchmarks.
//
//   plan_task      what a task's .tmoe file will hold: kept experts and gates per MoE layer, every
//                  tensor with its source, output dtype and bytes, and the exact file size.
//   convert_task   writes that file: streams tensor by tensor from the memory-mapped checkpoint
//                  through tmoe_writer (temporary file beside the output, fsync, rename).
//
// Task-routed MoE layers keep the task's top-k experts (moe::compute_task_gate), sliced from the stacked
// [E, ...] expert tensors in gate order; the router and the task embedding table are dropped and
// the gates go into the metadata. Gates are *not* folded into the expert weights: the runtime
// multiplies each expert's output by its gate, exactly as the full model does, so a float32
// extraction is bit-exact (folding g into fc2 would round every weight and bias once more).
// Token-routed stacks keep all experts and the router; dense layers pass through.

#include <algorithm>   // std::min
#include <chrono>      // std::chrono::system_clock, steady_clock
#include <cmath>       // std::isfinite
#include <cstddef>     // std::size_t, std::byte
#include <cstdint>     // std::uint64_t, std::int8_t
#include <cstring>     // std::memcpy
#include <ctime>       // std::gmtime_r, std::strftime
#include <filesystem>  // std::filesystem::path
#include <functional>  // std::function
#include <string>      // std::string
#include <string_view> // std::string_view
#include <vector>      // std::vector

#include <sys/mman.h>  // madvise
#include <unistd.h>    // sysconf

#include <nlohmann/json.hpp>

#include <taskmoe/decoding/vocabulary_map.hpp>  // checks a map before embedding it
#include <taskmoe/detail/half.hpp>         // f32_to_f16, f32_to_bf16
#include <taskmoe/error.hpp>               // format_error, io_error, invalid_argument_error
#include <taskmoe/format/checkpoint.hpp>   // checkpoint, task_router
#include <taskmoe/format/tmoe.hpp>         // tmoe_writer, tmoe_alignment
#include <taskmoe/format/tmoe_metadata.hpp>
#include <taskmoe/kernels/gemm.hpp>        // kernels::quantize_rows_int8 (the runtime's own)
#include <taskmoe/moe/gating.hpp>          // compute_task_gate
#include <taskmoe/tensor/tensor_view.hpp>

namespace taskmoe {

struct convert_progress {
  std::size_t tensor_index = 0;  // tensors written so far (1-based after the first)
  std::size_t tensor_count = 0;
  std::uint64_t bytes_done = 0;  // output bytes written so far
  std::uint64_t bytes_total = 0;
  std::string_view tensor;       // name of the tensor just written
};

// int8 files: the type of the token embedding tables (docs/converter.md, "What int8 quantizes").
//   float16  lookups within 2^-11 of float32 at half its bytes; a separate output projection is
//            written int8, a shared table is quantized for it at load (the default: int8 lookups
//            cost up to 0.49 BLEU on a demo task, float16 ones none measurable; BENCHMARKS.md 4)
//   int8     the smallest file; the table is the output projection's int8 weights as well
//   float32  embeddings and a separate output projection float32 (the runtime quantizes the
//            projection at load)
enum class embedding_precision { float16, int8, float32 };

inline constexpr const char* embedding_precision_names[] = {"float16", "int8", "float32"};

struct convert_options {
  quantization_scheme quantization = quantization_scheme::int8;
  // int8 only: also quantize the attention projections (default on; docs/converter.md).
  bool int8_attention = true;
  // int8 only: the embeddings' type (above).
  embedding_precision embeddings = embedding_precision::float16;
  bool overwrite = false;  // replace an existing output file (atomically)
  // ISO 8601 UTC time stored as "created"; empty = the current time. Set it for reproducible files.
  std::string created;
  // Name stored as source_checkpoint.name; empty = the checkpoint folder's name.
  std::string source_name;
  // A target-vocabulary shortlist (CTranslate2's vmap.txt format) to embed as
  // tokenizer.vocabulary_map; empty = none. Checked against the checkpoint's pieces first.
  std::string vocabulary_map;
  // Called after every tensor; it may throw to abandon the conversion (nothing is left behind).
  std::function<void(const convert_progress&)> progress;
};

// One tensor of the output file.
struct planned_tensor {
  std::string name;              // name in the .tmoe (= the checkpoint name)
  tensor_role role = tensor_role::small;
  tensor_shape shape;            // output shape (first axis = kept experts for sliced experts)
  dtype type = dtype::f32;       // output dtype
  std::vector<int> experts;      // sliced from the stacked source along axis 0; empty = whole
  std::uint64_t data_bytes = 0;  // product(shape) * sizeof(type)
  std::uint64_t scale_bytes = 0; // i8: 4 * rows
};

struct conversion_plan {
  tmoe_metadata metadata;              // complete, as it will be written
  std::vector<planned_tensor> tensors; // in file order (the tokenizer's tensors last)
  std::string vocabulary_map;          // the map's text (convert_options::vocabulary_map), or empty
  std::uint64_t file_size = 0;         // exact size of the .tmoe file
  std::uint64_t parameters = 0;        // number of weights kept (excluding the tokenizer)
};

struct convert_result {
  std::filesystem::path path;
  std::uint64_t file_size = 0;
  std::size_t tensor_count = 0;
  double seconds = 0;
};

inline std::string_view quantization_name(quantization_scheme q) noexcept {
  return quantization_scheme_names[static_cast<int>(q)];
}

// "float32" | "float16" | "bfloat16" | "int8" (also "f32", "f16", "fp16", "bf16", "i8").
inline quantization_scheme parse_quantization(std::string_view s) {
  if (s == "float32" || s == "f32" || s == "fp32") return quantization_scheme::float32;
  if (s == "float16" || s == "f16" || s == "fp16") return quantization_scheme::float16;
  if (s == "bfloat16" || s == "bf16") return quantization_scheme::bfloat16;
  if (s == "int8" || s == "i8") return quantization_scheme::int8;
  throw invalid_argument_error("unknown quantization '" + std::string(s) +
                               "' (expected float32, float16, bfloat16 or int8)");
}

// "float16" | "int8" | "float32" (also "f16", "fp16", "i8", "f32", "fp32").
inline embedding_precision parse_embedding_precision(std::string_view s) {
  if (s == "float16" || s == "f16" || s == "fp16") return embedding_precision::float16;
  if (s == "int8" || s == "i8") return embedding_precision::int8;
  if (s == "float32" || s == "f32" || s == "fp32") return embedding_precision::float32;
  throw invalid_argument_error("unknown embedding type '" + std::string(s) + "' (expected float16, int8 or float32)");
}

namespace detail {

inline dtype output_dtype(tensor_role role, const convert_options& o) noexcept {
  switch (o.quantization) {
    case quantization_scheme::float32:
      return dtype::f32;
    case quantization_scheme::float16:
    case quantization_scheme::bfloat16: {
      const bool big = role == tensor_role::embedding || role == tensor_role::output_projection ||
                       role == tensor_role::attention || role == tensor_role::ffn || role == tensor_role::expert;
      if (!big) return dtype::f32;
      return o.quantization == quantization_scheme::float16 ? dtype::f16 : dtype::bf16;
    }
    case quantization_scheme::int8:
      if (role == tensor_role::ffn || role == tensor_role::expert) return dtype::i8;
      if (role == tensor_role::attention && o.int8_attention) return dtype::i8;
      if (role == tensor_role::embedding || role == tensor_role::output_projection) {
        if (o.embeddings == embedding_precision::float32) return dtype::f32;
        if (o.embeddings == embedding_precision::int8 || role == tensor_role::output_projection) return dtype::i8;
        return dtype::f16;
      }
      return dtype::f32;
  }
  return dtype::f32;
}

inline std::string utc_now_iso8601() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

inline std::string folder_name(const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  const auto slash = d.rfind('/');
  std::string n = slash == std::string::npos ? d : d.substr(slash + 1);
  if (n.empty() || n == "." || n == "..") n = "checkpoint";
  return n;
}

inline std::uint64_t align_up(std::uint64_t x, std::uint64_t a) noexcept { return (x + a - 1) / a * a; }

// Converts `n` elements starting at element `first` of `v` to f32 into `out`, rejecting NaN/Inf.
inline void read_f32_checked(const tensor_view& v, std::uint64_t first, std::uint64_t n, float* out,
                             const std::string& name, const std::string& file) {
  if (v.type == dtype::f32) {
    std::memcpy(out, v.data + 4 * first, static_cast<std::size_t>(4 * n));
  } else {
    for (std::uint64_t i = 0; i < n; ++i) out[i] = element_f32(v, first + i);
  }
  for (std::uint64_t i = 0; i < n; ++i)
    if (!std::isfinite(out[i]))
      throw format_error(file, "tensor '" + name + "' has a non-finite value at element " +
                                   std::to_string(first + i));
}

// A map must parse (format_error naming the line) and share pieces with the checkpoint's
// vocabulary: one made for another tokenizer would silently shortlist nothing but the specials.
inline void check_vocabulary_map(std::string_view text, const checkpoint& ck, const std::string& path) {
  const model_config& c = ck.config();
  const auto vm = decoding::vocabulary_map::for_sentencepiece(text, ck.sentencepiece_model(), c.vocab_size, {}, path);
  if (vm.rules() == 0 && vm.always().empty())
    throw format_error(path, "the vocabulary map holds no piece of the checkpoint's vocabulary");
}

}  // namespace detail

// The gates of every MoE layer of `task` (all experts, no gates for token-routed stacks).
inline std::vector<moe_layer_info> task_moe_layers(const checkpoint& ck, const task_info& task,
                                                   stack s) {
  const model_config& c = ck.config();
  std::vector<moe_layer_info> out;
  if (!c.has_moe) return out;
  const auto& m = c.moe(s);
  if (is_task_routed(m.route)) {
    // The gate reads the task table and the router: reject non-finite values there by name.
    const std::string table = spec::task_embedding(s);
    if (ck.has_tensor(table))
      detail::check_finite(ck.tensor(table), table, ck.directory());
  }
  for (int layer : m.layers) {
    moe_layer_info l;
    l.layer = layer;
    l.route = m.route;
    if (is_task_routed(m.route)) {
      const std::string router = spec::router(s, layer);
      detail::check_finite(ck.tensor(router), router, ck.directory());
      moe::task_gate g = moe::compute_task_gate(ck.router_of(task, s, layer));
      l.experts = std::move(g.experts);
      l.gates = std::move(g.weights);
    } else {
      for (int e = 0; e < c.num_experts; ++e) l.experts.push_back(e);
    }
    out.push_back(std::move(l));
  }
  return out;
}

// Everything about `task`'s file except the bytes: throws invalid_argument_error for an unknown
// task (listing the known ones).
inline conversion_plan plan_task(const checkpoint& ck, std::string_view task_name,
                                 const convert_options& opts = {}) {
  const model_config& c = ck.config();
  const task_info& task = ck.task(std::string(task_name));
  conversion_plan p;
  tmoe_metadata& m = p.metadata;
  m.model = c;
  m.task = task;
  m.task_id = ck.task_id(task.name);
  for (stack s : {stack::encoder, stack::decoder}) m.moe_layers(s) = task_moe_layers(ck, task, s);
  m.quantization.scheme = opts.quantization;
  m.source_hash = ck.content_hash_hex();
  m.source_name = opts.source_name.empty() ? detail::folder_name(ck.directory()) : opts.source_name;
  if (m.source_name.find('/') != std::string::npos)
    throw invalid_argument_error("source_name must not contain '/'");
  m.created = opts.created.empty() ? detail::utc_now_iso8601() : opts.created;

  for (const auto& r : required_checkpoint_tensors(c)) {
    const std::string& n = r.name;
    if (r.role == tensor_role::task_embedding) continue;  // task data: in the gates
    planned_tensor t;
    t.name = n;
    t.role = r.role;
    t.shape = r.shape;
    if (r.layer >= 0 && c.has_moe && c.is_moe_layer(r.in_stack, r.layer) && is_task_routed(c.moe(r.in_stack).route)) {
      if (t.role == tensor_role::router) continue;  // dropped: the gates replace it
      if (r.per_expert) {
        for (const auto& l : m.moe_layers(r.in_stack))
          if (l.layer == r.layer) t.experts = l.experts;
        std::uint64_t dims[tensor_shape::max_dims];
        for (std::size_t i = 0; i < r.shape.ndim(); ++i) dims[i] = r.shape[i];
        dims[0] = t.experts.size();
        t.shape = tensor_shape::from(dims, r.shape.ndim());
      }
    }
    t.type = detail::output_dtype(t.role, opts);
    t.data_bytes = t.shape.numel() * dtype_size(t.type);
    if (t.type == dtype::i8) {
      t.scale_bytes = 4 * (t.shape.numel() / t.shape[t.shape.ndim() - 1]);
      m.quantization.tensors.push_back(n);
    }
    p.parameters += t.shape.numel();
    p.tensors.push_back(std::move(t));
  }
  planned_tensor spm;
  spm.name = tmoe_tokenizer_tensor;
  spm.type = dtype::u8;
  spm.shape = tensor_shape{static_cast<std::uint64_t>(ck.sentencepiece_model().size())};
  spm.data_bytes = ck.sentencepiece_model().size();
  p.tensors.push_back(std::move(spm));
  if (!opts.vocabulary_map.empty()) {
    p.vocabulary_map = decoding::vocabulary_map::read_file(opts.vocabulary_map);
    detail::check_vocabulary_map(p.vocabulary_map, ck, opts.vocabulary_map);
    planned_tensor vmap;
    vmap.name = tmoe_vocabulary_map_tensor;
    vmap.type = dtype::u8;
    vmap.shape = tensor_shape{static_cast<std::uint64_t>(p.vocabulary_map.size())};
    vmap.data_bytes = p.vocabulary_map.size();
    p.tensors.push_back(std::move(vmap));
  }

  // The file layout of tmoe_writer: header, 64-aligned blobs, metadata JSON, tensor table.
  std::uint64_t pos = 64;
  std::uint64_t table = 0;
  for (const auto& t : p.tensors) {
    pos = detail::align_up(pos, tmoe_alignment) + t.data_bytes;
    if (t.scale_bytes) pos = detail::align_up(pos, tmoe_alignment) + t.scale_bytes;
    table += 2 + t.name.size() + 1 + 1 + 8 * t.shape.ndim() + 8 * 4 + 4;
  }
  try {
    m.validate();
  } catch (const config_error& e) {
    throw invalid_argument_error(std::string("plan_task: invalid metadata: ") + e.what());
  }
  p.file_size = pos + nlohmann::json(m).dump().size() + table;
  return p;
}

// Writes `task`'s .tmoe file to `out`. Throws invalid_argument_error (unknown task), format_error
// (non-finite weight, naming the tensor), io_error (output folder missing, file exists without
// overwrite, disk full). On any failure nothing is left at `out`, and no temporary file either.
// `plan` is plan_task(ck, task, opts)'s (a caller that checked every task first reuses it).
inline convert_result convert_task(const checkpoint& ck, const conversion_plan& plan, const convert_options& opts,
                                   const std::filesystem::path& out) {
  const auto start = std::chrono::steady_clock::now();
  const std::filesystem::path parent = out.has_parent_path() ? out.parent_path() : ".";
  std::error_code ec;
  if (!std::filesystem::is_directory(parent, ec))
    throw io_error(out.string() + ": output folder '" + parent.string() + "' does not exist");
  if (!opts.overwrite && std::filesystem::exists(out, ec))
    throw io_error(out.string() + ": file exists (set overwrite to replace it)");

  tmoe_writer w(out.string(), tmoe_write_options{opts.overwrite});
  w.set_metadata(plan.metadata);
  convert_progress prog;
  prog.tensor_count = plan.tensors.size();
  for (const auto& t : plan.tensors) prog.bytes_total += t.data_bytes + t.scale_bytes;

  std::vector<std::byte> buf;       // output tensor (reused)
  std::vector<float> scales;        // i8 scales
  std::vector<float> row;           // one source row as f32
  for (const auto& t : plan.tensors) {
    if (t.name == tmoe_tokenizer_tensor) {
      w.add_sentencepiece(ck.sentencepiece_model());
    } else if (t.name == tmoe_vocabulary_map_tensor) {
      w.add_vocabulary_map(plan.vocabulary_map);
    } else {
      const tensor_view& src = ck.tensor(t.name);
      const std::string& file = ck.directory();
      const std::uint64_t row_len = src.row_length();
      const std::uint64_t numel = t.shape.numel();
      const std::uint64_t rows = row_len ? numel / row_len : 0;
      // Source row of output row r: experts are stacked on axis 0, each `per_slice` rows.
      const std::uint64_t per_slice = t.experts.empty() ? rows : rows / t.experts.size();
      const auto source_row = [&](std::uint64_t r) -> std::uint64_t {
        if (t.experts.empty()) return r;
        return static_cast<std::uint64_t>(t.experts[r / per_slice]) * per_slice + r % per_slice;
      };
      if (t.type == dtype::f32 && src.type == dtype::f32 && t.experts.empty()) {
        // Pass through in place: no copy, only the finiteness check.
        row.resize(static_cast<std::size_t>(row_len));
        for (std::uint64_t r = 0; r < rows; ++r)
          detail::read_f32_checked(src, r * row_len, row_len, row.data(), t.name, file);
        w.add_tensor(t.name, dtype::f32, t.shape, src.data, static_cast<std::size_t>(t.data_bytes));
      } else {
        buf.resize(static_cast<std::size_t>(t.data_bytes));
        row.resize(static_cast<std::size_t>(row_len));
        if (t.type == dtype::i8) scales.resize(static_cast<std::size_t>(rows));
        for (std::uint64_t r = 0; r < rows; ++r) {
          detail::read_f32_checked(src, source_row(r) * row_len, row_len, row.data(), t.name, file);
          std::byte* o = buf.data() + r * row_len * dtype_size(t.type);
          switch (t.type) {
            case dtype::f32:
              std::memcpy(o, row.data(), static_cast<std::size_t>(4 * row_len));
              break;
            case dtype::f16:
            case dtype::bf16:
              for (std::uint64_t i = 0; i < row_len; ++i) {
                const std::uint16_t h = t.type == dtype::f16 ? detail::f32_to_f16(row[i])
                                                             : detail::f32_to_bf16(row[i]);
                const float back = t.type == dtype::f16 ? detail::f16_to_f32(h) : detail::bf16_to_f32(h);
                if (!std::isfinite(back))
                  throw format_error(file, "tensor '" + t.name + "': value " +
                                               std::to_string(row[i]) + " at element " +
                                               std::to_string(source_row(r) * row_len + i) +
                                               " overflows " + std::string(dtype_name(t.type)) +
                                               " (use bfloat16 or float32)");
                std::memcpy(o + 2 * i, &h, 2);
              }
              break;
            case dtype::i8:
              kernels::quantize_rows_int8(row.data(), 1, static_cast<int>(row_len),
                                          reinterpret_cast<std::int8_t*>(o), scales.data() + r);
              break;
            case dtype::u8:
              throw invalid_argument_error("convert_task: u8 output for '" + t.name + "'");
          }
        }
        w.add_tensor(t.name, t.type, t.shape, buf.data(), buf.size(),
                     t.type == dtype::i8 ? scales.data() : nullptr,
                     t.type == dtype::i8 ? scales.size() : 0);
      }
      detail::release_pages(src.data, src.byte_size);
    }
    ++prog.tensor_index;
    prog.bytes_done += t.data_bytes + t.scale_bytes;
    prog.tensor = t.name;
    if (opts.progress) opts.progress(prog);
  }
  w.finish();
  convert_result res;
  res.path = out;
  res.file_size = std::filesystem::file_size(out, ec);
  res.tensor_count = plan.tensors.size();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return res;
}

inline convert_result convert_task(const checkpoint& ck, std::string_view task_name, const convert_options& opts,
                                   const std::filesystem::path& out) {
  return convert_task(ck, plan_task(ck, task_name, opts), opts, out);
}

}  // namespace taskmoe
