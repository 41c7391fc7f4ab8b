#pragma once
// The public facade: open a .tmoe file, translate text (or token ids) for its task.
//
//   taskmoe::translator t("en-de.tmoe", {/*threads*/ 2});
//   taskmoe::translation_result r = t.translate("Open the file.");
//   std::string text = r.hypotheses[0].text;
//
// Thread safety: a translator is immutable after construction. Every call allocates its own
// workspaces (encoder output, KV caches, scratch), so any number of threads may call translate*
// on one translator at the same time; the weights are shared, never copied. Within a call,
// `translator_options::threads` worker threads translate sub-batches in parallel; threads left
// over, and those of workers that ran out of sub-batches, split each GEMM (kernels/parallel.hpp).
// Behaviour on edge cases is documented in docs/runtime.md.

#include <algorithm>    // std::stable_sort, std::min, std::remove, std::reverse, std::lower_bound
#include <atomic>       // std::atomic
#include <cmath>        // std::ceil
#include <cstdint>      // std::uint64_t
#include <exception>    // std::exception_ptr
#include <memory>       // std::shared_ptr
#include <mutex>        // std::mutex, std::once_flag, std::call_once
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <thread>       // std::thread
#include <vector>       // std::vector

#include <taskmoe/decoding/options.hpp>
#include <taskmoe/decoding/model_session.hpp>
#include <taskmoe/decoding/search.hpp>
#include <taskmoe/decoding/vocabulary_map.hpp>
#include <taskmoe/error.hpp>
#include <taskmoe/format/checkpoint.hpp>
#include <taskmoe/format/tmoe.hpp>
#include <taskmoe/kernels/parallel.hpp>
#include <taskmoe/model/transformer.hpp>
#include <taskmoe/model/weights.hpp>
#include <taskmoe/tokenizer/sentencepiece.hpp>
#include <taskmoe/tokenizer/utf8.hpp>
#include <taskmoe/tokenizer/vocabulary.hpp>

namespace taskmoe {

struct translator_options {
  int threads = 1;               // threads per call: sub-batches in parallel, the rest inside GEMMs
  bool verify_checksums = true;  // check every tensor's CRC when opening a .tmoe file (each as it is packed)
  std::string expected_task;     // non-empty: throw unless the file's task has this name
  bool fuse_qkv = true;          // fuse q/k/v projections at load (a copy of those weights)
  bool int8_output_projection = true;  // int8 files: quantize a float output projection at load
  // The decoder's K/V caches: automatic = float16 for int8 models, float32 otherwise
  // (model::model_options::kv_cache).
  model::model_options::cache_precision kv_cache = model::model_options::cache_precision::automatic;
  // int8 weights as the file has them (full: the same results on every CPU) or narrowed to
  // [-64, 64] for the faster kernel of AVX2 CPUs without VNNI; automatic: narrow on those CPUs
  // only (model::model_options::int8_weights).
  kernels::int8_weights int8_weights = kernels::int8_weights::automatic;
  // Map the .tmoe file (default; shared pages, instant start) or read it into memory (immune to
  // the file being rewritten in place or truncated while in use). A mapped file modified after
  // opening makes every later call throw io_error instead of translating with changed weights.
  bool use_mmap = true;
  // A target-vocabulary shortlist in CTranslate2's vmap format (decoding/vocabulary_map.hpp),
  // read at construction; calls use it with translation_options::use_vocabulary_map. Empty: the
  // map embedded in the .tmoe file (taskmoe-convert --vocabulary-map), if it has one, read on
  // the first call that uses it (so opening the file costs nothing more).
  std::string vocabulary_map;
};

enum class batch_unit { examples, tokens };  // what max_batch_size counts

// Defaults follow CTranslate2's translate_batch.
struct translation_options {
  int beam_size = 2;
  int num_hypotheses = 1;          // <= beam_size
  float length_penalty = 1.0f;     // beam ranking: score / length^length_penalty
  int max_decoding_length = 256;   // generated tokens, EOS included (also capped by max_positions)
  float max_length_ratio = 0.0f;   // > 0: also cap at ceil(ratio * source tokens) + max_length_offset
  int max_length_offset = 0;
  int min_decoding_length = 0;     // tokens before EOS may be generated
  int sampling_topk = 1;           // 1: no sampling; 0: full distribution (beam_size must be 1)
  float sampling_topp = 1.0f;
  float sampling_temperature = 1.0f;
  std::uint64_t seed = 0;          // 0: random seed
  float repetition_penalty = 1.0f;
  int no_repeat_ngram_size = 0;
  bool return_scores = true;
  std::string target_prefix;               // text API: forced start of every translation
  std::vector<int> target_prefix_tokens;   // token API (and text API when non-empty)
  std::size_t max_batch_size = 0;          // 0: no limit
  batch_unit batch_type = batch_unit::examples;
  // Source pieces kept per input (the target tag and </s> are added on top). 0, or more than the
  // model allows: max_positions - 2. Longer inputs are cut to their first pieces and flagged
  // (translation_result::truncated), or rejected with invalid_argument_error when !truncate_input.
  std::size_t max_input_length = 0;
  bool truncate_input = true;
  // Score only the shortlist's candidates for each batch (translator_options::vocabulary_map):
  // faster, approximate (log-probabilities normalized over the candidates), as CTranslate2's use_vmap.
  bool use_vocabulary_map = false;
};

struct translation_hypothesis {
  std::string text;          // empty without SentencePiece (token API)
  std::vector<int> tokens;   // target piece ids, EOS removed
  float score = 0;           // sum of log-probabilities (0 unless return_scores)
  float normalized_score = 0;  // score / (tokens + EOS)^length_penalty
};

struct translation_result {
  std::vector<translation_hypothesis> hypotheses;  // best first
  bool truncated = false;  // the input had more than max_input_length pieces and was cut
};

// score_batch / score_tokens: batching and source length as in translation_options (CTranslate2's
// ScoringOptions). The decoding options do not apply: scores are the model's plain log-softmax.
struct scoring_options {
  std::size_t max_batch_size = 0;                // 0: no limit
  batch_unit batch_type = batch_unit::examples;  // tokens: source tokens
  std::size_t max_input_length = 0;              // source pieces kept, as in translation_options
  bool truncate_input = true;
};

// Forced decoding of one given target: log p(tokens[i] | source, tokens[0..i)) per token.
struct scoring_result {
  std::vector<int> tokens;       // the target's pieces, then EOS (which is scored too)
  std::vector<float> log_probs;  // one per token
  bool truncated = false;        // the source had more than max_input_length pieces and was cut
  // Sum of log_probs, accumulated in double like the search's hypothesis score, so scoring a
  // greedy translation gives that translation's `score`.
  float score() const noexcept {
    double s = 0;
    for (float p : log_probs) s += static_cast<double>(p);
    return static_cast<float>(s);
  }
};

namespace detail {

// Consecutive runs of `order` (sentence indices sorted by length) whose costs add up to at most
// max_cost (0: no bound, one run), longest first: the workers take batches in this order, so the
// longest one starts first instead of leaving one worker busy at the end while the others idle.
// Fewer runs than threads are cut into equal parts (the largest parts first) until every thread
// has one or every part is one sentence: sub-batches on their own threads beat splitting each
// GEMM's columns, which synchronizes every layer and leaves attention and search on one thread
// (two threads, batch 64: 1.4x-1.7x greedy, 1.2x-1.3x beam 4; batch 4: 1.0x-1.2x; stop 36 in
// docs/performance.md).
inline std::vector<std::vector<std::size_t>> split_batches(const std::vector<std::size_t>& order,
                                                           const std::vector<std::size_t>& cost,
                                                           std::size_t max_cost, std::size_t threads) {
  std::vector<std::vector<std::size_t>> batches;
  std::size_t used = 0;
  for (std::size_t i : order) {
    if (!batches.empty() && (max_cost == 0 || used + cost[i] <= max_cost)) {
      batches.back().push_back(i);
      used += cost[i];
    } else {
      batches.push_back({i});
      used = cost[i];
    }
  }
  std::vector<std::size_t> parts(batches.size(), 1);
  for (std::size_t n = batches.size(); n < threads; ++n) {
    // the run with the largest parts that can take one more; ties to the later (longer) sentences
    std::size_t best = batches.size();
    for (std::size_t i = 0; i < batches.size(); ++i)
      if (parts[i] < batches[i].size() &&
          (best == batches.size() || batches[i].size() * parts[best] >= batches[best].size() * parts[i]))
        best = i;
    if (best == batches.size()) break;
    ++parts[best];
  }
  std::vector<std::vector<std::size_t>> out;
  for (std::size_t i = 0; i < batches.size(); ++i) {
    // consecutive, so the parts stay in length order; a shorter part takes the longer sentences
    const auto at = [&](std::size_t p) {
      return batches[i].begin() + static_cast<std::ptrdiff_t>((batches[i].size() * p + parts[i] - 1) / parts[i]);
    };
    for (std::size_t p = 0; p < parts[i]; ++p) out.emplace_back(at(p), at(p + 1));
  }
  std::reverse(out.begin(), out.end());
  return out;
}

// A translator's shortlist: read at construction (a file) or on first use (embedded), once even
// when calls run on several threads.
struct vocabulary_map_slot {
  std::once_flag once;
  std::shared_ptr<const decoding::vocabulary_map> map;
};
}  // namespace detail

class translator {
 public:
  // Opens a .tmoe file (memory-mapped; weights used in place).
  explicit translator(const std::string& path, const translator_options& options = {})
      : options_(options) {
    tmoe_load_options lo;
    lo.verify_checksums = false;  // each tensor as the model reads it, just before packing it
    lo.use_mmap = options.use_mmap;
    auto file = std::make_shared<const tmoe_file>(path, lo);
    init(model::weight_source::from_tmoe(std::move(file), options.verify_checksums));
    model_->source().verify_unread(options.threads);  // what the model never read
  }

  // The full checkpoint directory and one of its tasks (benchmarks, converter --verify).
  static translator from_checkpoint(const std::string& dir, const std::string& task,
                                    const translator_options& options = {}) {
    auto ck = std::make_shared<const checkpoint>(dir);
    return translator(model::weight_source::from_checkpoint(std::move(ck), task), options);
  }

  const task_info& task() const noexcept { return task_; }
  const model_config& config() const noexcept { return model_->config(); }
  const model::transformer& model() const noexcept { return *model_; }
  int target_tag_id() const noexcept { return tag_id_; }
  // Whether calls may set use_vocabulary_map: translator_options::vocabulary_map was given or the
  // file embeds a map.
  bool has_vocabulary_map() const noexcept { return vmap_ != nullptr; }
  // The shortlist, read now if it is the file's embedded one and no call has used it yet (a
  // server checks it at start-up this way). invalid_argument_error without one; format_error for
  // an embedded map that does not parse.
  const decoding::vocabulary_map& vocabulary_map() const {
    if (!vmap_) throw invalid_argument_error("this translator has no vocabulary map");
    return shortlist();
  }

  translation_result translate(std::string_view text, const translation_options& o = {}) const {
    return translate_batch({std::string(text)}, o).front();
  }

  std::vector<translation_result> translate_batch(const std::vector<std::string>& texts,
                                                  const translation_options& o = {}) const {
    // Validate every input before any work, so a bad one is reported whatever comes before it.
    for (std::size_t i = 0; i < texts.size(); ++i)
      tokenizer::check_utf8(texts[i], "input " + std::to_string(i));
    std::vector<std::vector<int>> pieces(texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) pieces[i] = encode_valid(texts[i]);
    translation_options opts = o;
    if (opts.target_prefix_tokens.empty() && !opts.target_prefix.empty()) {
      tokenizer::check_utf8(opts.target_prefix, "target_prefix");
      opts.target_prefix_tokens = spm_->encode(opts.target_prefix);
    }
    return run(pieces, opts, true);
  }

  // Token API: `pieces` are SentencePiece ids of the source text (without tag and </s>; they are
  // added here). Results carry tokens, and text when SentencePiece is available.
  std::vector<translation_result> translate_tokens(const std::vector<std::vector<int>>& pieces,
                                                   const translation_options& o = {}) const {
    return run(pieces, o, tokenizer::sentencepiece::available);
  }

  // SentencePiece ids of `text` (no tag, no </s>): what translate_tokens takes. Lets a caller see
  // lengths before translating (the CLI reports over-long lines itself).
  std::vector<int> encode(std::string_view text) const {
    tokenizer::check_utf8(text);
    return encode_valid(text);
  }

  // The number of source pieces an input may have under `o` (see max_input_length).
  std::size_t max_input_length(const translation_options& o = {}) const noexcept {
    const auto model_limit = static_cast<std::size_t>(std::max(0, config().max_positions - 2));
    return o.max_input_length == 0 ? model_limit : std::min(o.max_input_length, model_limit);
  }

  // [target tag] + pieces + [</s>], pieces cut so the whole fits max_positions.
  std::vector<int> source_ids(const std::vector<int>& pieces) const {
    return source_ids(pieces, max_input_length());
  }
  std::vector<int> source_ids(std::string_view text) const { return source_ids(encode(text)); }

  // Log-probabilities of given translations (forced decoding): targets[i] scored as a
  // translation of sources[i]. What `taskmoe-convert --verify` does by hand with model().step.
  // A blank source is scored as the tag and </s> alone; an empty target scores just EOS.
  std::vector<scoring_result> score_batch(const std::vector<std::string>& sources,
                                          const std::vector<std::string>& targets,
                                          const scoring_options& o = {}) const {
    if (sources.size() != targets.size())
      throw invalid_argument_error("score_batch: " + std::to_string(sources.size()) + " sources but " +
                                   std::to_string(targets.size()) + " targets");
    for (std::size_t i = 0; i < sources.size(); ++i) {
      tokenizer::check_utf8(sources[i], "input " + std::to_string(i));
      tokenizer::check_utf8(targets[i], "target " + std::to_string(i));
    }
    std::vector<std::vector<int>> src(sources.size()), tgt(targets.size());
    for (std::size_t i = 0; i < sources.size(); ++i) {
      src[i] = encode_valid(sources[i]);
      tgt[i] = encode_valid(targets[i]);
    }
    return score_tokens(src, tgt, o);
  }

  // Token API of score_batch: source pieces (no tag, no </s>) and target pieces (no BOS/EOS).
  std::vector<scoring_result> score_tokens(const std::vector<std::vector<int>>& source_pieces,
                                           const std::vector<std::vector<int>>& target_pieces,
                                           const scoring_options& o = {}) const {
    if (source_pieces.size() != target_pieces.size())
      throw invalid_argument_error("score_tokens: " + std::to_string(source_pieces.size()) +
                                   " sources but " + std::to_string(target_pieces.size()) + " targets");
    translation_options limits;  // the batching and source-length fields, shared with translation
    limits.max_batch_size = o.max_batch_size;
    limits.batch_type = o.batch_type;
    limits.max_input_length = o.max_input_length;
    const std::size_t limit = max_input_length(limits);
    // Each target and its EOS must fit the decoder's positions (the search has the same bound).
    const std::size_t target_limit = static_cast<std::size_t>(std::max(1, config().max_positions)) - 1;
    std::vector<scoring_result> results(source_pieces.size());
    std::vector<std::vector<int>> sources(source_pieces.size());
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < source_pieces.size(); ++i) {
      for (int t : source_pieces[i]) check_token(t, "source");
      for (int t : target_pieces[i]) check_token(t, "target");
      if (target_pieces[i].size() > target_limit)
        throw invalid_argument_error("target " + std::to_string(i) + ": " + std::to_string(target_pieces[i].size()) +
                                     " pieces, more than max_positions - 1 = " + std::to_string(target_limit));
      results[i].truncated = cut_input(i, source_pieces[i].size(), limit, o.truncate_input);
      sources[i] = source_ids(source_pieces[i], limit);
      results[i].tokens = target_pieces[i];
      results[i].tokens.push_back(config().eos_id);
      order.push_back(i);
    }
    model_->source().check_unchanged();
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return sources[a].size() < sources[b].size();
    });
    const std::vector<std::vector<std::size_t>> batches = split(order, sources, limits);
    for_each_batch(batches.size(), [&](std::size_t bi) { score_sub_batch(batches[bi], sources, results); });
    model_->source().check_unchanged();
    return results;
  }

 private:
  friend class translator_set;  // builds translators over shared models and tokenizers

  translator(model::weight_source src, const translator_options& options) : options_(options) {
    init(std::move(src));
  }
  // `task` of a model (possibly shared with other tasks) and its tokenizer.
  translator(std::shared_ptr<const model::transformer> model,
             std::shared_ptr<const tokenizer::sentencepiece> spm, const task_info& task,
             const translator_options& options)
      : options_(options), model_(std::move(model)), spm_(std::move(spm)), task_(task) {
    check_options(model_->source().name());
    const std::string spm_model = model_->source().sentencepiece_model();
    tag_id_ = target_tag_id(spm_model, task_, model_->source());
    load_vocabulary_map(spm_model);
  }

  static model::model_options model_options(const translator_options& o) {
    model::model_options mo;
    mo.fuse_qkv = o.fuse_qkv;
    mo.int8_output_projection = o.int8_output_projection;
    mo.kv_cache = o.kv_cache;
    mo.int8_weights = o.int8_weights;
    return mo;
  }

  void check_options(const std::string& source_name) const {
    if (options_.threads < 1) throw invalid_argument_error("translator_options.threads must be >= 1");
    if (!options_.expected_task.empty() && task_.name != options_.expected_task)
      throw invalid_argument_error(source_name + " holds task '" + task_.name + "', but task '" +
                                   options_.expected_task + "' was requested");
  }

  static int target_tag_id(const std::string& spm, const task_info& task, const model::weight_source& src) {
    const int id = tokenizer::find_piece_id(spm, task.target_tag);
    if (id < 0 || id >= src.config().vocab_size)
      throw format_error(src.name(), "target tag '" + task.target_tag +
                                         "' is not a piece of the SentencePiece model");
    return id;
  }

  void init(model::weight_source src) {
    task_ = src.task();
    check_options(src.name());
    const std::string spm = src.sentencepiece_model();
    tag_id_ = target_tag_id(spm, task_, src);
    spm_ = std::make_shared<const tokenizer::sentencepiece>(spm);
    const kernels::scoped_intra_op_threads load_threads(options_.threads);  // packing at load
    model_ = std::make_shared<const model::transformer>(std::move(src), model_options(options_));
    load_vocabulary_map(spm);
  }

  // options_.vocabulary_map's file now, else the file's embedded map on first use (shortlist()).
  void load_vocabulary_map(const std::string& spm) {
    vmap_.reset();
    if (!options_.vocabulary_map.empty()) {
      vmap_ = std::make_shared<detail::vocabulary_map_slot>();
      vmap_->map = read_vocabulary_map(decoding::vocabulary_map::read_file(options_.vocabulary_map), spm,
                                       options_.vocabulary_map);
    } else if (model_->source().has_tensor(tmoe_vocabulary_map_tensor)) {
      vmap_ = std::make_shared<detail::vocabulary_map_slot>();
    }
  }

  std::shared_ptr<const decoding::vocabulary_map> read_vocabulary_map(std::string_view text, std::string_view spm,
                                                                      const std::string& name) const {
    const model_config& c = config();
    return std::make_shared<const decoding::vocabulary_map>(decoding::vocabulary_map::for_sentencepiece(
        text, spm, c.vocab_size, {c.unk_id, c.bos_id, c.eos_id}, name));
  }

  const decoding::vocabulary_map& shortlist() const {
    std::call_once(vmap_->once, [&] {
      if (vmap_->map) return;  // read at construction
      const model::weight_source& src = model_->source();
      vmap_->map = read_vocabulary_map(src.vocabulary_map_text(), src.sentencepiece_model(),
                                       src.name() + ": embedded vocabulary map");
    });
    return *vmap_->map;
  }

  decoding::search_options search_options(const translation_options& o) const {
    decoding::search_options s;
    s.beam_size = o.beam_size;
    s.num_hypotheses = o.num_hypotheses;
    s.length_penalty = o.length_penalty;
    s.min_length = o.min_decoding_length;
    s.sampling_topk = o.sampling_topk;
    s.sampling_topp = o.sampling_topp;
    s.sampling_temperature = o.sampling_temperature;
    s.seed = o.seed;
    s.repetition_penalty = o.repetition_penalty;
    s.no_repeat_ngram_size = o.no_repeat_ngram_size;
    decoding::check_options(s);
    if (o.max_decoding_length < 1) throw invalid_argument_error("max_decoding_length must be >= 1");
    if (o.max_length_ratio < 0) throw invalid_argument_error("max_length_ratio must be >= 0");
    for (int t : o.target_prefix_tokens) check_token(t, "target_prefix_tokens");
    if (o.use_vocabulary_map && !vmap_)
      throw invalid_argument_error("use_vocabulary_map: this translator has no vocabulary map "
                                   "(translator_options::vocabulary_map, or one embedded in the file)");
    return s;
  }

  // Pieces of valid UTF-8 text; blank text has none. NUL bytes are dropped first, as the
  // normaliser drops the other C0 controls (it keeps NUL, which would become <unk>).
  std::vector<int> encode_valid(std::string_view text) const {
    if (tokenizer::is_blank(text)) return {};
    if (text.find('\0') == std::string_view::npos) return spm_->encode(text);
    std::string clean(text);
    clean.erase(std::remove(clean.begin(), clean.end(), '\0'), clean.end());
    return tokenizer::is_blank(clean) ? std::vector<int>{} : spm_->encode(clean);
  }

  std::vector<int> source_ids(const std::vector<int>& pieces, std::size_t limit) const {
    const std::size_t keep = std::min(pieces.size(), limit);
    std::vector<int> ids;
    ids.reserve(keep + 2);
    ids.push_back(tag_id_);
    ids.insert(ids.end(), pieces.begin(), pieces.begin() + static_cast<std::ptrdiff_t>(keep));
    ids.push_back(config().eos_id);
    return ids;
  }

  // Whether input i, of n source pieces, is cut to `limit`; too long with truncation off throws.
  static bool cut_input(std::size_t i, std::size_t n, std::size_t limit, bool truncate) {
    if (n <= limit) return false;
    if (!truncate)
      throw invalid_argument_error("input " + std::to_string(i) + ": " + std::to_string(n) +
                                   " pieces, more than max_input_length " + std::to_string(limit) +
                                   " (truncate_input is false)");
    return true;
  }

  void check_token(int t, const char* what) const {
    if (t < 0 || t >= config().vocab_size)
      throw invalid_argument_error(std::string(what) + ": token id " + std::to_string(t) +
                                   " is outside the vocabulary [0, " + std::to_string(config().vocab_size) + ")");
  }

  int max_length(std::size_t source_len, const translation_options& o) const {
    int m = std::min(o.max_decoding_length, config().max_positions);
    if (o.max_length_ratio > 0) {
      const double cap = std::ceil(o.max_length_ratio * static_cast<double>(source_len)) + o.max_length_offset;
      if (cap < m) m = static_cast<int>(cap);
    }
    return std::max(m, 1);
  }

  std::vector<translation_result> run(const std::vector<std::vector<int>>& pieces,
                                      const translation_options& o, bool with_text) const {
    const decoding::search_options so = search_options(o);
    const std::size_t limit = max_input_length(o);
    std::vector<translation_result> results(pieces.size());
    std::vector<std::vector<int>> sources(pieces.size());
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      for (int t : pieces[i]) check_token(t, "source");
      if (pieces[i].empty()) {  // empty or blank input: an empty translation
        results[i].hypotheses.push_back(translation_hypothesis{});
        continue;
      }
      results[i].truncated = cut_input(i, pieces[i].size(), limit, o.truncate_input);
      sources[i] = source_ids(pieces[i], limit);
      order.push_back(i);
    }
    // A mapped file rewritten in place would feed changed weights to the GEMMs: refuse before
    // and after the work, so no result computed from changed bytes is returned.
    model_->source().check_unchanged();
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return sources[a].size() < sources[b].size();
    });
    std::vector<std::vector<std::size_t>> batches = split(order, sources, o);
    // Sub-batches run in parallel; threads left over (fewer sub-batches than threads, e.g. one
    // sentence), and those of workers out of sub-batches, split GEMM columns (kernels/parallel.hpp).
    for_each_batch(batches.size(), [&](std::size_t bi) { run_batch(batches[bi], sources, o, so, with_text, results); });
    model_->source().check_unchanged();
    return results;
  }

  // The sub-batches of a call (detail::split_batches): costs in examples or source tokens.
  std::vector<std::vector<std::size_t>> split(const std::vector<std::size_t>& order,
                                              const std::vector<std::vector<int>>& sources,
                                              const translation_options& o) const {
    std::vector<std::size_t> cost(sources.size(), 1);
    if (o.batch_type == batch_unit::tokens)
      for (std::size_t i = 0; i < sources.size(); ++i) cost[i] = sources[i].size();
    return detail::split_batches(order, cost, o.max_batch_size, static_cast<std::size_t>(options_.threads));
  }

  void run_batch(const std::vector<std::size_t>& batch, const std::vector<std::vector<int>>& sources,
                 const translation_options& o, const decoding::search_options& so, bool with_text,
                 std::vector<translation_result>& results) const {
    std::vector<std::vector<int>> srcs;
    for (std::size_t i : batch) srcs.push_back(sources[i]);
    // With a shortlist the search's token t is candidates[t] (sorted: ties still go to the lower id).
    std::vector<int> candidates;
    if (o.use_vocabulary_map) candidates = shortlist().candidates(srcs, o.target_prefix_tokens);
    const auto token = [&](int id) {
      if (candidates.empty()) return id;
      return static_cast<int>(std::lower_bound(candidates.begin(), candidates.end(), id) - candidates.begin());
    };
    std::vector<int> prefix;
    for (int id : o.target_prefix_tokens) prefix.push_back(token(id));
    std::vector<decoding::sentence_constraints> cons;
    for (std::size_t i : batch) cons.push_back(decoding::sentence_constraints{max_length(sources[i].size(), o), prefix});
    const int bos = token(config().bos_id), eos = token(config().eos_id);
    model::workspace ws;
    const model::encoder_output enc = model_->encode(srcs, ws);
    decoding::model_session session(*model_, enc, std::move(candidates));
    const auto hyps = decoding::search(session, cons, so, bos, eos);
    for (std::size_t j = 0; j < batch.size(); ++j) {
      translation_result& r = results[batch[j]];
      for (const auto& h : hyps[j]) {
        translation_hypothesis th;
        for (int t : h.tokens) th.tokens.push_back(session.to_id(t));
        if (!th.tokens.empty() && th.tokens.back() == config().eos_id) th.tokens.pop_back();
        if (with_text) th.text = spm_->decode(th.tokens);
        if (o.return_scores) {
          th.score = static_cast<float>(h.score);
          th.normalized_score = static_cast<float>(h.normalized);
        }
        r.hypotheses.push_back(std::move(th));
      }
    }
  }

  // Runs fn(0..count) on up to `threads` workers as run() does; threads left over, and those of
  // workers that ran out of batches, split the remaining workers' GEMMs (kernels::thread_share).
  // The first exception is rethrown after all workers stopped.
  template <class Fn>
  void for_each_batch(std::size_t count, const Fn& fn) const {
    std::atomic<std::size_t> next{0};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    const std::size_t n_threads = std::min<std::size_t>(static_cast<std::size_t>(options_.threads), count);
    kernels::thread_share share(options_.threads, static_cast<int>(n_threads));
    const auto worker = [&] {
      const kernels::scoped_intra_op_threads scope(share);
      for (;;) {
        const std::size_t bi = next.fetch_add(1);
        if (bi >= count) return share.leave();
        try {
          fn(bi);
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          next.store(count);
        }
      }
    };
    if (n_threads <= 1) {
      worker();
    } else {
      std::vector<std::thread> pool;
      for (std::size_t t = 0; t < n_threads; ++t) pool.emplace_back(worker);
      for (auto& th : pool) th.join();
    }
    if (failure) std::rethrow_exception(failure);
  }

  // Teacher forcing: the decoder reads BOS then the target, and each step's log-softmax gives the
  // next target token's log-probability. Rows leave the batch when their target is scored.
  void score_sub_batch(const std::vector<std::size_t>& batch, const std::vector<std::vector<int>>& sources,
                       std::vector<scoring_result>& results) const {
    std::vector<std::vector<int>> srcs;
    for (std::size_t i : batch) srcs.push_back(sources[i]);
    model::workspace ws;
    const model::encoder_output enc = model_->encode(srcs, ws);
    decoding::model_session session(*model_, enc);
    const int vocab = config().vocab_size;
    std::vector<std::size_t> alive = batch;  // result index of each decoder row
    std::vector<int> tokens(batch.size(), config().bos_id);
    std::vector<float> logits;
    for (std::size_t pos = 0; !alive.empty(); ++pos) {
      session.step(tokens, logits);
      std::vector<int> keep;
      std::vector<int> next;
      std::vector<std::size_t> still;
      for (std::size_t r = 0; r < alive.size(); ++r) {
        scoring_result& res = results[alive[r]];
        float* row = logits.data() + r * static_cast<std::size_t>(vocab);
        kernels::log_softmax(row, 1, vocab, vocab, row, vocab);
        res.log_probs.push_back(row[res.tokens[pos]]);
        if (pos + 1 < res.tokens.size()) {
          keep.push_back(static_cast<int>(r));
          next.push_back(res.tokens[pos]);
          still.push_back(alive[r]);
        }
      }
      if (still.size() != alive.size() && !still.empty()) session.reorder(keep);
      alive.swap(still);
      tokens.swap(next);
    }
  }

  translator_options options_;
  std::shared_ptr<const model::transformer> model_;
  std::shared_ptr<const tokenizer::sentencepiece> spm_;
  task_info task_;
  int tag_id_ = -1;
  // translator_options::vocabulary_map or the file's own; null without either.
  std::shared_ptr<detail::vocabulary_map_slot> vmap_;
};

}  // namespace taskmoe
