#pragma once
// The encoder-decoder Transformer of docs/checkpoint-format.md, built from a weight_source, with
// incremental decoding:
//   encode()          runs the encoder on packed (unpadded) source tokens;
//   start_decoding()  computes every layer's cross-attention keys/values once per sentence;
//   step()            one decoder position for every live row (self-attention K/V cached);
//   reorder()         keeps / duplicates rows (beam reordering, finished rows dropped).
// The self-attention cache is written once: row index r writes position p into slot
// (block r, position p), which nothing else ever writes, and each row keeps the list of slots that
// make up its history. A reorder copies those lists (ints), never keys or values, so beam search
// costs no cache traffic that grows with the output length; a row that is never reordered (greedy)
// reads its history from one contiguous block. Keys and values live in separate arrays, so that
// attention's two passes (scores over keys, sums over values) each stream contiguous memory.
// A transformer is immutable after construction: all mutable state lives in encoder_output /
// decoder_state, which belong to the caller, so one model serves any number of threads.

#include <algorithm>  // std::min, std::copy_n
#include <cmath>      // std::sin, std::cos, std::pow, std::sqrt
#include <cstddef>    // std::size_t
#include <cstring>    // std::memcpy
#include <memory>     // std::shared_ptr
#include <string>     // std::string
#include <vector>     // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/format/model_config.hpp>
#include <taskmoe/format/model_spec.hpp>  // spec:: tensor names
#include <taskmoe/kernels/elementwise.hpp>
#include <taskmoe/layers/attention.hpp>
#include <taskmoe/layers/feed_forward.hpp>
#include <taskmoe/layers/linear.hpp>
#include <taskmoe/model/weights.hpp>
#include <taskmoe/moe/moe_layer.hpp>
#include <taskmoe/tensor/buffer.hpp>

namespace taskmoe {
namespace model {

// Sinusoidal table P[pos, 2i] = sin(pos / 10000^(2i/d)), P[pos, 2i+1] = cos(...), computed in
// double and rounded to float like the reference. divisor(i2) = 10000^(i2/d).
template <class Divisor>
void sinusoidal_row(int pos, int d, const Divisor& divisor, float* out) {
  for (int i2 = 0; i2 < d; i2 += 2) {
    const double angle = pos / divisor(i2);
    out[i2] = static_cast<float>(std::sin(angle));
    if (i2 + 1 < d) out[i2 + 1] = static_cast<float>(std::cos(angle));
  }
}

inline double sinusoidal_divisor(int i2, int d) { return std::pow(10000.0, static_cast<double>(i2) / d); }

inline void sinusoidal_position(int pos, int d, float* out) {
  sinusoidal_row(pos, d, [d](int i2) { return sinusoidal_divisor(i2, d); }, out);
}

// The table's rows; the divisors once per column, not per entry (pow was a twentieth of a load).
inline std::vector<float> sinusoidal_positions(int n, int d) {
  std::vector<double> divisors;
  for (int i2 = 0; i2 < d; i2 += 2) divisors.push_back(sinusoidal_divisor(i2, d));
  std::vector<float> p(static_cast<std::size_t>(n) * static_cast<std::size_t>(d));
  for (int pos = 0; pos < n; ++pos)
    sinusoidal_row(pos, d, [&](int i2) { return divisors[static_cast<std::size_t>(i2 / 2)]; },
                   p.data() + static_cast<std::size_t>(pos) * d);
  return p;
}

// Rows of the sinusoidal table computed at load; positions past it are computed when used (the
// same values). max_positions comes from the file: up to 2^31 - 1, a table of 8 GiB per unit of
// d_model (found by tests/fuzz/fuzz_config).
inline constexpr int sinusoidal_table_rows = 1024;

struct model_options {
  // Fuse the q/k/v projections (and cross-attention k/v) into one GEMM at load (packed together
  // from the parts).
  bool fuse_qkv = true;
  // In a model with int8 layers, quantize a float output projection per row at load (the same
  // quantizer as the converter) so the largest decoder GEMM runs int8 too. BENCHMARKS.md
  // section 4 has its measured BLEU cost.
  bool int8_output_projection = true;
  // Precision of the decoder's attention caches (self-attention keys and values of every written
  // position, cross-attention keys and values of the source). At large batches attention waits
  // on DRAM for them (BENCHMARKS.md section 0); float16 halves those bytes at a relative error of
  // at most 2^-11 per element. automatic: float16 in models with int8 layers (already
  // approximate; BLEU in BENCHMARKS.md section 4), float32 otherwise (exact against the reference).
  enum class cache_precision { automatic, float32, float16 };
  cache_precision kv_cache = cache_precision::automatic;
  // Quantize float weights per row at load exactly as `taskmoe-convert --quantization int8`
  // (its defaults: attention projections, dense FFNs, experts and a separate output projection
  // int8, embedding tables float16; routers and small tensors stay float), so a checkpoint runs
  // like its converted int8 file.
  // Weights already int8 are used as they are.
  bool quantize_int8 = false;
  // How the int8 weights are packed (kernels::int8_weights): full keeps the file's values (every
  // CPU bit-identical); narrow requantizes rows to [-64, 64] for the faster AVX2 kernel of CPUs
  // without VNNI; automatic picks narrow where that kernel runs. BENCHMARKS.md section 4 has its
  // BLEU cost on the demo model.
  kernels::int8_weights int8_weights = kernels::int8_weights::automatic;
};

// Encoder output for a batch of sentences, packed without padding.
struct encoder_output {
  int d_model = 0;
  std::vector<float> memory;   // [total tokens, d]
  std::vector<int> offsets;    // first token row of each sentence
  std::vector<int> lengths;    // tokens of each sentence
  int batch() const noexcept { return static_cast<int>(lengths.size()); }
  const float* sentence(int b) const { return memory.data() + static_cast<std::size_t>(offsets[b]) * d_model; }
};

// Scratch shared by the encoder and decoder steps.
struct workspace {
  std::vector<float> x, h, y, qkv, attn, scores;
  std::vector<float> ffn_hidden;
  moe::moe_workspace moe;
};

// Keys or values of one attention cache: float32, or float16 bits (model_options::kv_cache).
struct kv_array {
  bool half = false;
  uninitialized_buffer<float> f32;
  uninitialized_buffer<std::uint16_t> f16;

  kv_array() = default;
  kv_array(bool half_precision, std::size_t n) : half(half_precision) {
    if (half)
      f16 = uninitialized_buffer<std::uint16_t>(n);
    else
      f32 = uninitialized_buffer<float>(n);
  }
  // Elements [at, at + n) from floats (rounded to float16 when half).
  void write(std::size_t at, const float* x, int n) {
    if (half)
      kernels::to_float16(x, n, f16.data() + at);
    else
      std::memcpy(f32.data() + at, x, sizeof(float) * static_cast<std::size_t>(n));
  }
  // Elements [from, from + n) of `other` (the same precision) to [to, to + n).
  void copy(const kv_array& other, std::size_t from, std::size_t to, std::size_t n) {
    if (half)
      std::copy_n(other.f16.data() + from, n, f16.data() + to);
    else
      std::copy_n(other.f32.data() + from, n, f32.data() + to);
  }
};

// fn(keys + at, values + at), both typed by their precision: const float* or const std::uint16_t*.
template <class Fn>
void visit_kv(const kv_array& keys, const kv_array& values, std::size_t at, Fn&& fn) {
  if (keys.half)
    fn(static_cast<const std::uint16_t*>(keys.f16.data() + at), static_cast<const std::uint16_t*>(values.f16.data() + at));
  else
    fn(static_cast<const float*>(keys.f32.data() + at), static_cast<const float*>(values.f32.data() + at));
}

// Incremental decoding state for `rows` decoder rows.
struct decoder_state {
  const encoder_output* encoded = nullptr;
  int rows = 0;
  int length = 0;               // positions already in the self-attention cache
  int capacity = 0;             // positions per cache block (and per row in key_slots)
  int blocks = 0;               // cache blocks allocated (at least rows)
  std::vector<int> row_source;  // sentence (in encoded) of each row
  std::vector<int> key_slots;   // [rows, capacity]: slot (block * capacity + position) of row r's position p
  std::vector<int> spare;       // reorder's gather buffer (swapped with key_slots)
  std::vector<kv_array> self_k, self_v;    // per layer [blocks * capacity, d]
  std::vector<kv_array> cross_k, cross_v;  // per layer [total source tokens, d]
  // Logits only for these target ids (a shortlist; transformer::restrict_output), else (null) for
  // the whole vocabulary.
  std::shared_ptr<const layers::linear> output;
  std::vector<int> output_ids;
  workspace ws;
};

class transformer {
 public:
  explicit transformer(weight_source source, model_options opts = {})
      : src_(std::move(source)), cfg_(src_.config()), opts_(opts) {
    load();
  }
  // Another task of `base`'s checkpoint: every layer but the task-routed MoE layers is shared
  // with `base` (kept alive through the pointer), so serving many tasks maps, converts and packs
  // the common weights once; only `source`'s kept experts are loaded.
  transformer(std::shared_ptr<const transformer> base, weight_source source)
      : src_(std::move(source)), cfg_(base->cfg_), opts_(base->opts_), base_(std::move(base)) {
    if (!base_->src_.ckpt() || src_.ckpt() != base_->src_.ckpt())
      throw invalid_argument_error("transformer: a task model can share weights only with a model "
                                   "of the same checkpoint object");
    pre_ = base_->pre_;
    embed_scale_ = base_->embed_scale_;
    half_cache_ = base_->half_cache_;
    int8_ = base_->int8_;  // the shared layers' packing, whatever the instruction set is now
    encoder_ = base_->encoder_;
    decoder_ = base_->decoder_;
    output_ = base_->output_;
    const weight_loader w(src_, store_);
    for (stack s : {stack::encoder, stack::decoder}) {
      stack_weights& sw = s == stack::encoder ? encoder_ : decoder_;
      for (int i = 0; i < cfg_.num_layers(s); ++i) {
        layer& l = sw.layers[static_cast<std::size_t>(i)];
        if (l.is_moe && l.moe.task_routed()) l.moe = load_moe(w, s, i);
      }
    }
  }
  // Layers point into store_ and into the source's mapping: never copy or move a model (share it
  // through a pointer instead).
  transformer(const transformer&) = delete;
  transformer& operator=(const transformer&) = delete;

  const model_config& config() const noexcept { return cfg_; }
  const task_info& task() const noexcept { return src_.task(); }
  const weight_source& source() const noexcept { return src_; }
  // Bytes of converted and packed weights this model owns (a shared base's not included).
  std::size_t owned_bytes() const noexcept {
    std::size_t b = store_.bytes();
    for (const stack_weights* s : {&encoder_, &decoder_})
      for (const layer& l : s->layers) {
        if (l.is_moe && (base_ == nullptr || l.moe.task_routed())) b += l.moe.packed_bytes();
        if (base_ != nullptr) continue;  // every other layer is the base's
        for (const attention_block* a : {&l.self, &l.cross})
          for (const layers::linear* lin : {&a->qkv, &a->kv, &a->q, &a->k, &a->v, &a->out}) b += lin->packed_bytes();
        b += l.ffn.packed_bytes();
      }
    return base_ == nullptr ? b + output_.packed_bytes() : b;
  }
  // The model whose layers this one shares (nullptr: none).
  const transformer* base() const noexcept { return base_.get(); }

  // Encoder over `sources` (token ids, each 1..max_positions long).
  encoder_output encode(const std::vector<std::vector<int>>& sources, workspace& ws) const {
    const int d = cfg_.d_model;
    encoder_output out;
    out.d_model = d;
    int total = 0;
    for (const auto& s : sources) {
      if (s.empty() || static_cast<int>(s.size()) > cfg_.max_positions)
        throw invalid_argument_error("encode: a source must have 1.." +
                                     std::to_string(cfg_.max_positions) + " tokens, got " +
                                     std::to_string(s.size()));
      out.offsets.push_back(total);
      out.lengths.push_back(static_cast<int>(s.size()));
      total += static_cast<int>(s.size());
    }
    out.memory.resize(static_cast<std::size_t>(total) * d);
    float* x = out.memory.data();
    for (std::size_t b = 0; b < sources.size(); ++b)
      for (std::size_t t = 0; t < sources[b].size(); ++t)
        embed(encoder_, sources[b][t], static_cast<int>(t),
              x + (static_cast<std::size_t>(out.offsets[b]) + t) * d);
    for (const auto& l : encoder_.layers) {
      sublayer(l.self_ln, x, total, ws, [&](const float* h, float* y) {
        self_attention_encoder(l, h, out, y, ws);
      });
      feed_forward_sublayer(l, x, total, ws);
    }
    if (encoder_.final_ln.present()) encoder_.final_ln.apply(x, total, d, x);
    return out;
  }

  // Decoding state for rows reading sentences `row_source` of `encoded` (which must outlive it).
  decoder_state start_decoding(const encoder_output& encoded, std::vector<int> row_source) const {
    const int d = cfg_.d_model;
    decoder_state st;
    st.encoded = &encoded;
    st.rows = static_cast<int>(row_source.size());
    st.row_source = std::move(row_source);
    const std::size_t layers = decoder_.layers.size();
    for (std::size_t i = 0; i < layers; ++i) {
      st.self_k.emplace_back(half_cache_, 0);
      st.self_v.emplace_back(half_cache_, 0);
    }
    const int total = static_cast<int>(encoded.memory.size() / static_cast<std::size_t>(d));
    const std::size_t n = static_cast<std::size_t>(total) * d;
    std::vector<float>& kv = st.ws.qkv;  // [total, 2d] out of the projection(s), split into K and V
    kv.resize(2 * n);
    for (std::size_t i = 0; i < layers; ++i) {
      const auto& l = decoder_.layers[i];
      if (l.cross.fused) {
        l.cross.kv.forward(encoded.memory.data(), total, d, kv.data(), 2 * d);
      } else {
        l.cross.k.forward(encoded.memory.data(), total, d, kv.data(), 2 * d);
        l.cross.v.forward(encoded.memory.data(), total, d, kv.data() + d, 2 * d);
      }
      st.cross_k.emplace_back(half_cache_, n);
      st.cross_v.emplace_back(half_cache_, n);
      for (std::size_t t = 0; t < static_cast<std::size_t>(total); ++t) {
        st.cross_k.back().write(t * d, kv.data() + t * 2 * d, d);
        st.cross_v.back().write(t * d, kv.data() + t * 2 * d + d, d);
      }
    }
    return st;
  }

  // From now on, st's steps compute logits only for target ids `ids` (sorted or not, each in
  // [0, vocab)), in that order: [rows, ids.size()], each equal to the full logits' column.
  void restrict_output(decoder_state& st, std::vector<int> ids) const {
    st.output = std::make_shared<const layers::linear>(output_.select_rows(ids));
    st.output_ids = std::move(ids);
  }
  // Logit columns per row of st's steps: the vocabulary, or the restricted ids.
  int output_size(const decoder_state& st) const noexcept {
    return st.output ? static_cast<int>(st.output_ids.size()) : cfg_.vocab_size;
  }

  // One decoder position for every row: tokens[rows] in, logits [rows, output_size(st)] out.
  void step(decoder_state& st, const int* tokens, float* logits) const {
    const int d = cfg_.d_model, rows = st.rows, pos = st.length;
    if (pos >= cfg_.max_positions)
      throw invalid_argument_error("decoder step: position " + std::to_string(pos) +
                                   " >= max_positions");
    grow_cache(st, pos + 1);
    for (int r = 0; r < rows; ++r)
      st.key_slots[static_cast<std::size_t>(r) * st.capacity + pos] = r * st.capacity + pos;
    workspace& ws = st.ws;
    ws.x.resize(static_cast<std::size_t>(rows) * d);
    float* x = ws.x.data();
    for (int r = 0; r < rows; ++r) embed(decoder_, tokens[r], pos, x + static_cast<std::size_t>(r) * d);
    for (std::size_t i = 0; i < decoder_.layers.size(); ++i) {
      const auto& l = decoder_.layers[i];
      sublayer(l.self_ln, x, rows, ws, [&](const float* h, float* y) {
        self_attention_step(l, i, h, st, y);
      });
      sublayer(l.cross_ln, x, rows, ws, [&](const float* h, float* y) {
        cross_attention_step(l, i, h, st, y);
      });
      feed_forward_sublayer(l, x, rows, ws);
    }
    if (decoder_.final_ln.present()) decoder_.final_ln.apply(x, rows, d, x);
    const int n = output_size(st);
    (st.output ? *st.output : output_).forward(x, rows, d, logits, n);
    st.length = pos + 1;
  }

  // Row i of the new state is row rows[i] of the old one (rows may repeat or be dropped). Only the
  // slot lists move (`length` ints per row); the keys and values stay where they were written.
  void reorder(decoder_state& st, const std::vector<int>& rows) const {
    for (const int r : rows)
      if (r < 0 || r >= st.rows) throw invalid_argument_error("reorder: row " + std::to_string(r) + " out of range");
    const std::size_t cap = static_cast<std::size_t>(st.capacity);
    st.spare.resize(rows.size() * cap);
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::copy_n(st.key_slots.data() + static_cast<std::size_t>(rows[i]) * cap, st.length, st.spare.data() + i * cap);
    st.key_slots.swap(st.spare);
    std::vector<int> src(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) src[i] = st.row_source[static_cast<std::size_t>(rows[i])];
    st.row_source.swap(src);
    st.rows = static_cast<int>(rows.size());
  }

 private:
  struct attention_block {
    bool fused = false;
    layers::linear qkv;  // self-attention, fused [3d, d]
    layers::linear kv;   // cross-attention, fused [2d, d]
    layers::linear q, k, v, out;
  };
  struct layer {
    layers::layer_norm self_ln, cross_ln, ffn_ln;
    attention_block self, cross;
    bool is_moe = false;
    layers::feed_forward ffn;
    moe::moe_layer moe;
  };
  struct stack_weights {
    std::vector<layer> layers;
    weight_matrix embed;
    const float* positions = nullptr;  // [position_rows, d]
    int position_rows = 0;             // learned: max_positions; sinusoidal: the table's rows
    layers::layer_norm final_ln;
  };

  // x = E[token] * scale + P[pos]
  void embed(const stack_weights& s, int token, int pos, float* out) const {
    if (token < 0 || token >= cfg_.vocab_size)
      throw invalid_argument_error("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                                   std::to_string(cfg_.vocab_size) + ")");
    const int d = cfg_.d_model;
    s.embed.row_to_f32(token, out);
    std::vector<float> row;
    const float* p = s.positions + static_cast<std::size_t>(pos) * d;
    if (pos >= s.position_rows) {  // sinusoidal, past the table
      row.resize(static_cast<std::size_t>(d));
      sinusoidal_position(pos, d, row.data());
      p = row.data();
    }
    for (int c = 0; c < d; ++c) out[c] = out[c] * embed_scale_ + p[c];
  }

  // Pre-norm: x += f(LN(x)). Post-norm: x = LN(x + f(x)). f writes [rows, d] into its second arg.
  template <class F>
  void sublayer(const layers::layer_norm& ln, float* x, int rows, workspace& ws, F&& f) const {
    const std::size_t n = static_cast<std::size_t>(rows) * cfg_.d_model;
    ws.h.resize(n);
    ws.y.resize(n);
    const int d = cfg_.d_model;
    if (pre_) {
      ln.apply(x, rows, d, ws.h.data());
      f(ws.h.data(), ws.y.data());
      kernels::residual_add(x, rows, d, d, ws.y.data(), d);
    } else {
      std::memcpy(ws.h.data(), x, n * sizeof(float));
      f(ws.h.data(), ws.y.data());
      kernels::residual_add(x, rows, d, d, ws.y.data(), d);
      ln.apply(x, rows, d, x);
    }
  }

  void feed_forward_sublayer(const layer& l, float* x, int rows, workspace& ws) const {
    sublayer(l.ffn_ln, x, rows, ws, [&](const float* h, float* y) {
      if (l.is_moe)
        l.moe.forward(h, rows, cfg_.d_model, y, ws.moe);
      else
        l.ffn.forward(h, rows, cfg_.d_model, y, cfg_.d_model, ws.ffn_hidden);
    });
  }

  void project_qkv(const attention_block& a, const float* h, int rows, std::vector<float>& qkv) const {
    const int d = cfg_.d_model;
    qkv.resize(static_cast<std::size_t>(rows) * 3 * d);
    if (a.fused) {
      a.qkv.forward(h, rows, d, qkv.data(), 3 * d);
    } else {
      a.q.forward(h, rows, d, qkv.data(), 3 * d);
      a.k.forward(h, rows, d, qkv.data() + d, 3 * d);
      a.v.forward(h, rows, d, qkv.data() + 2 * d, 3 * d);
    }
  }

  void self_attention_encoder(const layer& l, const float* h, const encoder_output& enc, float* y,
                              workspace& ws) const {
    const int d = cfg_.d_model, total = static_cast<int>(enc.memory.size() / static_cast<std::size_t>(d));
    project_qkv(l.self, h, total, ws.qkv);
    ws.attn.resize(static_cast<std::size_t>(total) * d);
    for (int b = 0; b < enc.batch(); ++b) {
      const float* base = ws.qkv.data() + static_cast<std::size_t>(enc.offsets[b]) * 3 * d;
      layers::multi_head_attention(base, 3 * d, enc.lengths[b], base + d, 3 * d, base + 2 * d, 3 * d,
                                   enc.lengths[b], cfg_.n_heads, cfg_.d_head(), -1,
                                   ws.attn.data() + static_cast<std::size_t>(enc.offsets[b]) * d, d,
                                   ws.scores);
    }
    l.self.out.forward(ws.attn.data(), total, d, y, d);
  }

  void self_attention_step(const layer& l, std::size_t li, const float* h, decoder_state& st,
                           float* y) const {
    const int d = cfg_.d_model, rows = st.rows, pos = st.length;
    workspace& ws = st.ws;
    project_qkv(l.self, h, rows, ws.qkv);
    // Row r's key and value (columns d and 2d of its qkv row) into slot (block r, position pos).
    kv_array& keys = st.self_k[li];
    kv_array& values = st.self_v[li];
    for (int r = 0; r < rows; ++r) {
      const std::size_t slot = static_cast<std::size_t>(r) * st.capacity + pos;
      const float* kv = ws.qkv.data() + static_cast<std::size_t>(r) * 3 * d + d;
      keys.write(slot * d, kv, d);
      values.write(slot * d, kv + d, d);
    }
    ws.attn.resize(static_cast<std::size_t>(rows) * d);
    visit_kv(keys, values, 0, [&](auto* k, auto* v) {
      for (int r = 0; r < rows; ++r)
        layers::multi_head_attention(ws.qkv.data() + static_cast<std::size_t>(r) * 3 * d, 3 * d, 1, k, d, v, d,
                                     pos + 1, cfg_.n_heads, cfg_.d_head(), -1,
                                     ws.attn.data() + static_cast<std::size_t>(r) * d, d, ws.scores,
                                     st.key_slots.data() + static_cast<std::size_t>(r) * st.capacity);
    });
    l.self.out.forward(ws.attn.data(), rows, d, y, d);
  }

  void cross_attention_step(const layer& l, std::size_t li, const float* h, decoder_state& st,
                            float* y) const {
    const int d = cfg_.d_model, rows = st.rows;
    workspace& ws = st.ws;
    ws.qkv.resize(static_cast<std::size_t>(rows) * d);
    l.cross.q.forward(h, rows, d, ws.qkv.data(), d);
    ws.attn.resize(static_cast<std::size_t>(rows) * d);
    for (int r = 0; r < rows; ++r) {
      const int s = st.row_source[static_cast<std::size_t>(r)];
      const std::size_t first = static_cast<std::size_t>(st.encoded->offsets[s]) * d;
      visit_kv(st.cross_k[li], st.cross_v[li], first, [&](auto* k, auto* v) {
        layers::multi_head_attention(ws.qkv.data() + static_cast<std::size_t>(r) * d, d, 1, k, d, v, d,
                                     st.encoded->lengths[s], cfg_.n_heads, cfg_.d_head(), -1,
                                     ws.attn.data() + static_cast<std::size_t>(r) * d, d, ws.scores);
      });
    }
    l.cross.out.forward(ws.attn.data(), rows, d, y, d);
  }

  // Room for `needed` positions in a block per row. Growing moves the written keys and values to
  // the new block size (slot numbers change with it): doubling keeps that to one copy of the
  // cache in all. Blocks never shrink, so a row index always has its own.
  void grow_cache(decoder_state& st, int needed) const {
    if (needed <= st.capacity && st.rows <= st.blocks) return;
    int cap = st.capacity < 16 ? 16 : st.capacity;
    while (cap < needed) cap *= 2;
    if (cap > cfg_.max_positions) cap = cfg_.max_positions;
    const int blocks = std::max(st.rows, st.blocks);
    const std::size_t d = static_cast<std::size_t>(cfg_.d_model), old_cap = static_cast<std::size_t>(st.capacity);
    for (auto* cache : {&st.self_k, &st.self_v})
      for (kv_array& layer_cache : *cache) {
        kv_array next(layer_cache.half, static_cast<std::size_t>(blocks) * cap * d);
        for (int b = 0; b < st.blocks; ++b)
          next.copy(layer_cache, b * old_cap * d, static_cast<std::size_t>(b) * cap * d,
                    static_cast<std::size_t>(st.length) * d);
        layer_cache = std::move(next);
      }
    std::vector<int> slots(static_cast<std::size_t>(st.rows) * cap);
    for (int r = 0; r < st.rows; ++r)
      for (int p = 0; p < st.length; ++p) {
        const int old = st.key_slots[static_cast<std::size_t>(r) * old_cap + p];
        slots[static_cast<std::size_t>(r) * cap + p] =
            old / st.capacity * cap + old % st.capacity;  // (block, position) kept
      }
    st.key_slots.swap(slots);
    st.capacity = cap;
    st.blocks = blocks;
  }

  // ---- loading -----------------------------------------------------------------------------
  void load() {
    cfg_.validate();
    pre_ = cfg_.norm == norm_placement::pre;
    embed_scale_ = cfg_.scale_embeddings ? static_cast<float>(std::sqrt(static_cast<double>(cfg_.d_model))) : 1.0f;
    const weight_loader w(src_, store_);
    const int d = cfg_.d_model;
    for (stack s : {stack::encoder, stack::decoder}) {
      stack_weights& sw = s == stack::encoder ? encoder_ : decoder_;
      sw.embed = s == stack::decoder && cfg_.shared_embeddings ? encoder_.embed : embedding(w, spec::embed_tokens(cfg_, s));
      if (cfg_.positions == positional_encoding::learned) {
        sw.positions = w.matrix_f32(spec::embed_positions(s), cfg_.max_positions, d);
        sw.position_rows = cfg_.max_positions;
      } else if (s == stack::decoder) {  // the encoder's table: the same values
        sw.positions = encoder_.positions;
        sw.position_rows = encoder_.position_rows;
      } else {
        auto& p = w.owned(0);
        sw.position_rows = std::min(cfg_.max_positions, sinusoidal_table_rows);
        p = sinusoidal_positions(sw.position_rows, d);
        sw.positions = p.data();
      }
      if (pre_) sw.final_ln = norm(w, spec::final_norm(s));
      for (int i = 0; i < cfg_.num_layers(s); ++i)
        sw.layers.push_back(load_layer(w, s, i));
    }
    output_.weight = cfg_.shared_embeddings ? encoder_.embed : embedding(w, std::string(spec::output_projection), false);
    half_cache_ = opts_.kv_cache == model_options::cache_precision::float16 ||
                  (opts_.kv_cache == model_options::cache_precision::automatic && has_int8_layers());
    if (opts_.int8_output_projection && has_int8_layers())
      output_.pack_quantized(int8_);  // int8 as it is, float quantized per row
    else
      output_.pack(int8_);
  }

  // Some attention projection, FFN or expert holds int8 weights (an int8 file).
  bool has_int8_layers() const noexcept {
    for (const stack_weights* s : {&encoder_, &decoder_})
      for (const layer& l : s->layers) {
        if (l.self.out.weight.is_int8() || l.ffn.fc1.weight.is_int8()) return true;
        for (const auto& e : l.moe.experts)
          if (e.fc1.weight.is_int8()) return true;
      }
    return false;
  }

  // A [vocab, d] embedding table, or a separate output projection (`lookups` false). Quantizing
  // at load does what the converter's int8 default writes: tables float16, the projection int8.
  weight_matrix embedding(const weight_loader& w, const std::string& name, bool lookups = true) const {
    if (opts_.quantize_int8 && !lookups) return w.matrix_int8(name, cfg_.vocab_size, cfg_.d_model);
    return w.table(name, cfg_.vocab_size, cfg_.d_model, opts_.quantize_int8);
  }

  layers::layer_norm norm(const weight_loader& w, const std::string& prefix) const {
    layers::layer_norm ln;
    ln.gamma = w.vector(prefix + ".weight", cfg_.d_model);
    ln.beta = w.vector(prefix + ".bias", cfg_.d_model);
    ln.eps = static_cast<float>(cfg_.layer_norm_eps);
    return ln;
  }

  layers::linear lin(const weight_loader& w, const std::string& prefix, int out, int in, bool bias = true,
                     int slot = -1) const {
    layers::linear l;
    l.weight = opts_.quantize_int8 ? w.matrix_int8(prefix + ".weight", out, in, slot)
                                   : w.matrix(prefix + ".weight", out, in, slot);
    if (bias) l.bias = w.vector(prefix + ".bias", out, slot);
    return l;
  }

  attention_block attention(const weight_loader& w, const std::string& p, bool self) const {
    const int d = cfg_.d_model;
    attention_block a;
    a.q = lin(w, spec::q_proj(p), d, d);
    a.k = lin(w, spec::k_proj(p), d, d);
    a.v = lin(w, spec::v_proj(p), d, d);
    a.out = lin(w, spec::out_proj(p), d, d);
    const bool same = a.q.weight.is_int8() == a.k.weight.is_int8() && a.k.weight.is_int8() == a.v.weight.is_int8();
    const bool int8 = a.q.weight.is_int8();
    if (opts_.fuse_qkv && same) {
      // Packed straight from the parts: no row-major copy of the fused matrix.
      a.fused = true;
      const std::vector<const layers::linear*> parts =
          self ? std::vector<const layers::linear*>{&a.q, &a.k, &a.v} : std::vector<const layers::linear*>{&a.k, &a.v};
      layers::linear& fused = self ? a.qkv : a.kv;
      if (int8) {
        std::vector<kernels::packed_int8::part> p;
        for (const layers::linear* l : parts) p.push_back(l->packed_part());
        fused.packed = std::make_shared<const kernels::packed_int8>(kernels::packed_int8::pack(p, d, int8_));
      } else {
        std::vector<kernels::packed_f32::part> p;
        for (const layers::linear* l : parts) p.push_back(l->packed_f32_part());
        fused.packed_f32 = std::make_shared<const kernels::packed_f32>(kernels::packed_f32::pack(p, d));
      }
      if (!self) a.q.pack(int8_);
      a.out.pack(int8_);
    } else {
      for (layers::linear* l : {&a.q, &a.k, &a.v, &a.out}) l->pack(int8_);
    }
    return a;
  }

  layer load_layer(const weight_loader& w, stack s, int i) const {
    const int d = cfg_.d_model;
    layer l;
    l.self_ln = norm(w, spec::attention_norm(spec::self_attention(s, i)));
    l.self = attention(w, spec::self_attention(s, i), true);
    if (s == stack::decoder) {
      l.cross_ln = norm(w, spec::attention_norm(spec::cross_attention(i)));
      l.cross = attention(w, spec::cross_attention(i), false);
    }
    l.ffn_ln = norm(w, spec::ffn_norm(s, i));
    l.is_moe = cfg_.has_moe && cfg_.is_moe_layer(s, i);
    if (!l.is_moe) {
      l.ffn.fc1 = lin(w, spec::ffn(s, i) + ".fc1", cfg_.d_ff, d);
      l.ffn.fc2 = lin(w, spec::ffn(s, i) + ".fc2", d, cfg_.d_ff);
      l.ffn.act = cfg_.act;
      l.ffn.pack(int8_);
      return l;
    }
    l.moe = load_moe(w, s, i);
    return l;
  }

  moe::moe_layer load_moe(const weight_loader& w, stack s, int i) const {
    const int d = cfg_.d_model;
    const std::string p = spec::layer(s, i);
    const moe_layer_spec route = src_.moe_layer(s, i);
    moe::moe_layer m;
    m.route = route.route;
    m.expert_ids = route.expert_ids;
    m.gates = route.gates;
    m.top_k = cfg_.top_k;
    const int f = cfg_.d_ff_expert;
    for (int slot : route.slots) {
      layers::feed_forward e;
      e.fc1 = lin(w, spec::experts(s, i) + ".fc1", f, d, true, slot);
      e.fc2 = lin(w, spec::experts(s, i) + ".fc2", d, f, true, slot);
      e.act = cfg_.act;
      m.experts.push_back(std::move(e));
    }
    if (!m.task_routed()) {
      m.num_experts = cfg_.num_experts;
      if (static_cast<int>(route.expert_ids.size()) != cfg_.num_experts)
        throw format_error(src_.name(), p + "moe: a token-routed layer must keep all " +
                                            std::to_string(cfg_.num_experts) + " experts");
      const weight_matrix r = w.matrix(spec::router(s, i), cfg_.num_experts, d);
      m.router.resize(static_cast<std::size_t>(cfg_.num_experts) * d);
      for (int e = 0; e < cfg_.num_experts; ++e) r.row_to_f32(e, m.router.data() + static_cast<std::size_t>(e) * d);
    } else if (m.gates.size() != m.experts.size()) {
      throw format_error(src_.name(), p + "moe: needs one gate per kept expert");
    }
    m.pack(int8_);
    return m;
  }

  weight_source src_;
  model_config cfg_;
  model_options opts_;
  // opts_.int8_weights resolved once, so that every matrix of the model is packed alike.
  kernels::int8_weights int8_ = kernels::resolve_int8_weights(opts_.int8_weights);
  std::shared_ptr<const transformer> base_;  // shared layers point into its store and mapping
  weight_store store_;
  bool pre_ = true;
  float embed_scale_ = 1.0f;
  bool half_cache_ = false;  // decoder attention caches in float16 (model_options::kv_cache)
  stack_weights encoder_, decoder_;
  layers::linear output_;
};

}  // namespace model
}  // namespace taskmoe
