#pragma once
// Greedy search, beam search and random sampling, step by step exactly as the PyTorch reference
// (tools/train/taskmoe_ref/decode.py; algorithm in docs/decoding.md), over any `Session`:
//
//   int  vocab() const;
//   void step(const std::vector<int>& tokens, std::vector<float>& logits);  // [rows, vocab]
//   void reorder(const std::vector<int>& rows);  // new row i = old row rows[i]
//
// The session starts with one row per sentence (row b = sentence b). Finished rows are dropped
// from the batch as soon as they finish. The model's session is decoding/model_session.hpp: search
// itself knows no model.

#include <algorithm>  // std::stable_sort, std::nth_element, std::min, std::max
#include <cmath>      // std::pow, std::exp, std::log, INFINITY
#include <cstdint>    // std::uint64_t
#include <functional>  // std::greater
#include <limits>     // std::numeric_limits
#include <random>     // std::mt19937_64, std::random_device
#include <string>     // std::to_string
#include <vector>     // std::vector

#include <taskmoe/decoding/options.hpp>
#include <taskmoe/error.hpp>
#include <taskmoe/kernels/elementwise.hpp>  // log_softmax, top_k, argmax

namespace taskmoe {
namespace decoding {

// Per-sentence constraints.
struct sentence_constraints {
  int max_length = 128;        // generated tokens at most (EOS included)
  std::vector<int> prefix;     // forced first tokens (target prefix)
};

inline void check_options(const search_options& o) {
  if (o.beam_size < 1) throw invalid_argument_error("beam_size must be >= 1, got " + std::to_string(o.beam_size));
  if (o.num_hypotheses < 1 || o.num_hypotheses > o.beam_size)
    throw invalid_argument_error("num_hypotheses must be in [1, beam_size = " + std::to_string(o.beam_size) +
                                 "], got " + std::to_string(o.num_hypotheses));
  if (o.sampling_topk < 0) throw invalid_argument_error("sampling_topk must be >= 0");
  if (!(o.sampling_topp > 0.0f && o.sampling_topp <= 1.0f))
    throw invalid_argument_error("sampling_topp must be in (0, 1]");
  if (!(o.sampling_temperature > 0.0f)) throw invalid_argument_error("sampling_temperature must be > 0");
  if (!(o.repetition_penalty > 0.0f)) throw invalid_argument_error("repetition_penalty must be > 0");
  if (o.no_repeat_ngram_size < 0) throw invalid_argument_error("no_repeat_ngram_size must be >= 0");
  if (o.min_length < 0) throw invalid_argument_error("min_length must be >= 0");
  if (o.beam_size > 1 && o.sampling_topk != 1)
    throw invalid_argument_error("random sampling (sampling_topk != 1) needs beam_size = 1");
}

namespace detail {

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// Turns one row of logits into log-probabilities with the options' penalties and constraints:
// repetition penalty on the logits, log_softmax, then -inf for forbidden tokens (EOS before
// min_length, n-gram repeats, anything but the forced prefix token). `history` holds the `step`
// tokens generated so far; it is read only when needs_history(o).
inline bool needs_history(const search_options& o) noexcept {
  return o.repetition_penalty != 1.0f || o.no_repeat_ngram_size > 0;
}
inline void process_row(float* row, int vocab, const int* history, int step, const sentence_constraints& c,
                        const search_options& o, int eos) {
  if (o.repetition_penalty != 1.0f)
    for (int i = 0; i < step; ++i) {
      const int t = history[i];
      if (std::find(history, history + i, t) != history + i) continue;  // once per distinct token
      row[t] = row[t] < 0 ? row[t] * o.repetition_penalty : row[t] / o.repetition_penalty;
    }
  kernels::log_softmax(row, 1, vocab, vocab, row, vocab);
  if (step < o.min_length) row[eos] = neg_inf;
  const int n = o.no_repeat_ngram_size;
  if (n > 0) {
    // Each earlier n-gram whose first n-1 tokens equal the last n-1 generated bans its last token.
    for (int start = 0; start + n - 1 < step; ++start) {
      bool same = true;
      for (int j = 0; j < n - 1 && same; ++j) same = history[start + j] == history[step - (n - 1) + j];
      if (same) row[history[start + n - 1]] = neg_inf;
    }
  }
  if (step < static_cast<int>(c.prefix.size())) {
    const int forced = c.prefix[static_cast<std::size_t>(step)];
    const float keep = row[forced];
    for (int t = 0; t < vocab; ++t) row[t] = neg_inf;
    row[forced] = keep;
  }
}

inline double normalize(double score, std::size_t length, float penalty) {
  return score / std::pow(static_cast<double>(length), static_cast<double>(penalty));
}

// Whether a beam-search sentence's n-best is settled: at least `n` finished hypotheses normalize
// to at least `bound`, the best any live beam can still finish with. Log-probabilities are <= 0,
// so a live beam's score only falls; its normalized score is at most its score over the length
// that divides it least (the longest possible for length_penalty >= 0, the next for < 0). The
// full search would then return the same n-best: later hypotheses rank after these on ties
// (stable sort, earlier finished first). `scratch` avoids an allocation per step.
inline bool n_best_settled(const std::vector<hypothesis>& finished, int n, double bound, std::vector<double>& scratch) {
  if (static_cast<int>(finished.size()) < n) return false;
  scratch.clear();
  for (const hypothesis& h : finished) scratch.push_back(h.normalized);
  std::nth_element(scratch.begin(), scratch.begin() + (n - 1), scratch.end(), std::greater<double>());
  return scratch[static_cast<std::size_t>(n) - 1] >= bound;
}

// Uniform double in [0, 1) from 53 random bits (portable, unlike std::uniform_real_distribution).
inline double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Samples from a row of log-probabilities with temperature, top-k and top-p.
inline int sample(const float* logp, int vocab, const search_options& o, std::mt19937_64& rng,
                  std::vector<int>& idx, std::vector<float>& val, std::vector<double>& p) {
  int k = o.sampling_topk == 0 ? vocab : std::min(o.sampling_topk, vocab);
  idx.resize(static_cast<std::size_t>(k));
  val.resize(static_cast<std::size_t>(k));
  kernels::top_k(logp, vocab, k, idx.data(), val.data());
  while (k > 1 && val[static_cast<std::size_t>(k) - 1] == neg_inf) --k;  // never sample forbidden
  const double t = o.sampling_temperature;
  p.resize(static_cast<std::size_t>(k));
  double sum = 0;
  for (int i = 0; i < k; ++i) sum += p[i] = std::exp((val[i] - val[0]) / t);
  if (o.sampling_topp < 1.0f) {
    double cum = 0;
    int keep = 0;
    while (keep < k) {
      cum += p[keep++] / sum;
      if (cum >= o.sampling_topp) break;
    }
    k = keep;
    sum = 0;
    for (int i = 0; i < k; ++i) sum += p[i];
  }
  double u = uniform(rng) * sum;
  for (int i = 0; i < k; ++i) {
    u -= p[i];
    if (u < 0) return idx[i];
  }
  return idx[static_cast<std::size_t>(k) - 1];
}

inline std::uint64_t resolve_seed(std::uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace detail

// Greedy search (sampling_topk == 1) or random sampling (beam_size == 1). One hypothesis each.
// Each hypothesis's tokens grow in place; the per-step lists are reused, so a step allocates
// nothing once they reach the batch size.
template <class Session>
std::vector<std::vector<hypothesis>> greedy_search(Session& session,
                                                   const std::vector<sentence_constraints>& sentences,
                                                   const search_options& o, int bos, int eos) {
  check_options(o);
  const int b = static_cast<int>(sentences.size());
  const int vocab = session.vocab();
  std::vector<hypothesis> out(static_cast<std::size_t>(b));
  std::vector<int> alive(static_cast<std::size_t>(b));
  for (int i = 0; i < b; ++i) alive[i] = i;
  std::vector<int> tokens(static_cast<std::size_t>(b), bos);
  const bool sampling = o.sampling_topk != 1;
  std::vector<std::mt19937_64> rngs;
  if (sampling) {
    const std::uint64_t seed = detail::resolve_seed(o.seed);
    for (int i = 0; i < b; ++i) rngs.emplace_back(seed);  // each sentence its own stream
  }
  std::vector<float> logits;
  std::vector<int> idx;
  std::vector<float> val;
  std::vector<double> probs;
  for (int i = 0; i < b; ++i)
    if (sentences[i].max_length <= 0) alive.erase(std::find(alive.begin(), alive.end(), i));
  if (alive.size() != static_cast<std::size_t>(b)) {
    session.reorder(alive);
    tokens.assign(alive.size(), bos);
  }
  std::vector<int> keep, next, still;
  while (!alive.empty()) {
    session.step(tokens, logits);
    keep.clear();
    next.clear();
    for (std::size_t r = 0; r < alive.size(); ++r) {
      const int s = alive[r];
      hypothesis& h = out[static_cast<std::size_t>(s)];
      float* row = logits.data() + r * static_cast<std::size_t>(vocab);
      detail::process_row(row, vocab, h.tokens.data(), static_cast<int>(h.tokens.size()), sentences[s], o, eos);
      const int t = sampling ? detail::sample(row, vocab, o, rngs[static_cast<std::size_t>(s)], idx, val, probs)
                             : kernels::argmax(row, vocab);
      h.tokens.push_back(t);
      h.score += static_cast<double>(row[t]);
      if (t != eos && static_cast<int>(h.tokens.size()) < sentences[s].max_length) {
        keep.push_back(static_cast<int>(r));
        next.push_back(t);
      }
    }
    if (keep.size() != alive.size()) {
      if (!keep.empty()) session.reorder(keep);
      still.clear();
      for (int r : keep) still.push_back(alive[static_cast<std::size_t>(r)]);
      alive.swap(still);
    }
    tokens.swap(next);
  }
  std::vector<std::vector<hypothesis>> result(static_cast<std::size_t>(b));
  for (int i = 0; i < b; ++i) {
    hypothesis& h = out[static_cast<std::size_t>(i)];
    h.normalized = h.tokens.empty() ? 0.0 : detail::normalize(h.score, h.tokens.size(), o.length_penalty);
    result[static_cast<std::size_t>(i)].push_back(std::move(h));
  }
  return result;
}

namespace detail {

// A beam search's hypotheses as a tree: node i is one generated token and its parent (-1: the
// first token). Extending a hypothesis appends one node and copies no history; a hypothesis's
// tokens are read back only when it finishes (or when a penalty needs them).
struct token_tree {
  std::vector<int> parent, token;

  int add(int from, int t) {
    parent.push_back(from);
    token.push_back(t);
    return static_cast<int>(token.size()) - 1;
  }
  // The `length` tokens that end at `node`, first to last.
  void path(int node, int length, std::vector<int>& out) const {
    out.resize(static_cast<std::size_t>(length));
    for (int i = length; i-- > 0; node = parent[static_cast<std::size_t>(node)])
      out[static_cast<std::size_t>(i)] = token[static_cast<std::size_t>(node)];
  }
};

}  // namespace detail

// Beam search, fairseq style (docs/decoding.md). n-best per sentence, best first.
// Live beams are (tree node, length, score) in session row order; a step allocates nothing once
// its lists reach the batch size (the token tree grows by one node per kept candidate).
// A sentence also stops as soon as its n-best can no longer change (detail::n_best_settled; with
// length_penalty 0, once its best beam has finished): same results, fewer steps. `settle_early`
// false runs every sentence to k finished hypotheses, for tests to compare.
template <class Session>
std::vector<std::vector<hypothesis>> beam_search(Session& session,
                                                 const std::vector<sentence_constraints>& sentences,
                                                 const search_options& o, int bos, int eos,
                                                 bool settle_early = true) {
  check_options(o);
  const int b = static_cast<int>(sentences.size());
  const int k = o.beam_size;
  const int vocab = session.vocab();
  struct beam {
    int node;    // last token in the tree (-1: none yet)
    int length;  // tokens so far
    float score;
  };
  detail::token_tree tree;
  std::vector<std::vector<hypothesis>> finished(static_cast<std::size_t>(b));
  // Each alive sentence's beams are consecutive session rows: `counts` of them in `beams`.
  std::vector<int> alive, counts;
  std::vector<beam> beams;
  for (int i = 0; i < b; ++i)
    if (sentences[i].max_length > 0) {
      alive.push_back(i);
      counts.push_back(1);
      beams.push_back(beam{-1, 0, 0.0f});
    }
  if (alive.size() != static_cast<std::size_t>(b) && !alive.empty()) session.reorder(alive);
  std::vector<int> tokens(alive.size(), bos);
  std::vector<float> logits, cand;
  std::vector<int> top_i, history, next_rows, next_alive, next_counts;
  std::vector<float> top_v;
  std::vector<double> settled_scratch;
  std::vector<beam> next_beams, fresh;
  const bool with_history = detail::needs_history(o);
  auto finish = [&](std::vector<hypothesis>& fin, int node, int length, float score) {
    hypothesis h;
    tree.path(node, length, h.tokens);
    h.score = score;
    h.normalized = detail::normalize(score, h.tokens.size(), o.length_penalty);
    fin.push_back(std::move(h));
  };
  for (int step = 0; !alive.empty(); ++step) {
    session.step(tokens, logits);
    next_rows.clear();
    next_alive.clear();
    next_counts.clear();
    next_beams.clear();
    tokens.clear();
    std::size_t row = 0;
    for (std::size_t a = 0; a < alive.size(); ++a) {
      const int s = alive[a];
      auto& fin = finished[static_cast<std::size_t>(s)];
      const std::size_t n = static_cast<std::size_t>(counts[a]);
      cand.resize(n * static_cast<std::size_t>(vocab));
      for (std::size_t j = 0; j < n; ++j) {
        const beam& from = beams[row + j];
        float* lp = logits.data() + (row + j) * static_cast<std::size_t>(vocab);
        if (with_history) tree.path(from.node, from.length, history);
        detail::process_row(lp, vocab, history.data(), from.length, sentences[s], o, eos);
        for (int t = 0; t < vocab; ++t) cand[j * vocab + t] = from.score + lp[t];
      }
      const int want = std::min(2 * k, static_cast<int>(cand.size()));
      top_i.resize(static_cast<std::size_t>(want));
      top_v.resize(static_cast<std::size_t>(want));
      kernels::top_k(cand.data(), static_cast<int>(cand.size()), want, top_i.data(), top_v.data());
      fresh.clear();
      for (int rank = 0; rank < want; ++rank) {
        const float sc = top_v[static_cast<std::size_t>(rank)];
        if (sc == detail::neg_inf) break;  // forbidden by a constraint (never without options)
        const int flat = top_i[static_cast<std::size_t>(rank)];
        const int bi = flat / vocab, t = flat % vocab;
        const beam& from = beams[row + static_cast<std::size_t>(bi)];
        if (t == eos) {
          if (rank < k) finish(fin, tree.add(from.node, t), from.length + 1, sc);
          continue;
        }
        fresh.push_back(beam{tree.add(from.node, t), from.length + 1, sc});
        next_rows.push_back(static_cast<int>(row) + bi);
        if (static_cast<int>(fresh.size()) == k) break;
      }
      const bool last = step == sentences[s].max_length - 1;
      const auto settled = [&] {
        const float best = fresh.front().score;  // top_k ranks best first
        const int len = o.length_penalty >= 0.0f ? sentences[s].max_length : fresh.front().length + 1;
        return detail::n_best_settled(fin, o.num_hypotheses,
                                      detail::normalize(best, static_cast<std::size_t>(len), o.length_penalty),
                                      settled_scratch);
      };
      if (static_cast<int>(fin.size()) >= k || last || fresh.empty() || (settle_early && settled())) {
        if (last)
          for (std::size_t j = 0; j < fresh.size() && static_cast<int>(fin.size()) < k; ++j)
            finish(fin, fresh[j].node, fresh[j].length, fresh[j].score);
        next_rows.resize(next_rows.size() - fresh.size());  // the sentence leaves the batch
      } else {
        next_alive.push_back(s);
        next_counts.push_back(static_cast<int>(fresh.size()));
        for (const beam& nb : fresh) {
          next_beams.push_back(nb);
          tokens.push_back(tree.token[static_cast<std::size_t>(nb.node)]);
        }
      }
      row += n;
    }
    if (next_alive.empty()) break;
    session.reorder(next_rows);
    alive.swap(next_alive);
    counts.swap(next_counts);
    beams.swap(next_beams);
  }
  for (auto& fin : finished) {
    std::stable_sort(fin.begin(), fin.end(),
                     [](const hypothesis& a, const hypothesis& c) { return a.normalized > c.normalized; });
    if (static_cast<int>(fin.size()) > o.num_hypotheses) fin.resize(static_cast<std::size_t>(o.num_hypotheses));
  }
  return finished;
}

// Greedy / sampling when beam_size == 1, beam search otherwise.
template <class Session>
std::vector<std::vector<hypothesis>> search(Session& session, const std::vector<sentence_constraints>& sentences,
                                            const search_options& o, int bos, int eos) {
  return o.beam_size <= 1 ? greedy_search(session, sentences, o, bos, eos)
                          : beam_search(session, sentences, o, bos, eos);
}

}  // namespace decoding
}  // namespace taskmoe
