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

#include <algorithm>  // std::stable_sort, std::min, std::max
#include <cmath>      // std::pow, std::exp, std::log, INFINITY
#include <cstdint>    // std::uint64_t
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
// min_length, n-gram repeats, anything but the forced prefix token).
inline void process_row(float* row, int vocab, const std::vector<int>& history,
                        const sentence_constraints& c, const search_options& o, int eos) {
  if (o.repetition_penalty != 1.0f)
    for (std::size_t i = 0; i < history.size(); ++i) {
      const int t = history[i];
      if (std::find(history.begin(), history.begin() + static_cast<std::ptrdiff_t>(i), t) !=
          history.begin() + static_cast<std::ptrdiff_t>(i))
        continue;  // once per distinct token
      row[t] = row[t] < 0 ? row[t] * o.repetition_penalty : row[t] / o.repetition_penalty;
    }
  kernels::log_softmax(row, 1, vocab, vocab, row, vocab);
  const int step = static_cast<int>(history.size());
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

// Uniform double in [0, 1) from 53 random bits (portable, unlike std::uniform_real_distribution).
inline double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Samples from a row of log-probabilities with temperature, top-k and top-p.
inline int sample(const float* logp, int vocab, const search_options& o, std::mt19937_64& rng,
                  std::vector<int>& idx, std::vector<float>& val) {
  int k = o.sampling_topk == 0 ? vocab : std::min(o.sampling_topk, vocab);
  idx.resize(static_cast<std::size_t>(k));
  val.resize(static_cast<std::size_t>(k));
  kernels::top_k(logp, vocab, k, idx.data(), val.data());
  while (k > 1 && val[static_cast<std::size_t>(k) - 1] == neg_inf) --k;  // never sample forbidden
  const double t = o.sampling_temperature;
  std::vector<double> p(static_cast<std::size_t>(k));
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
  for (int i = 0; i < b; ++i)
    if (sentences[i].max_length <= 0) alive.erase(std::find(alive.begin(), alive.end(), i));
  if (alive.size() != static_cast<std::size_t>(b)) {
    session.reorder(alive);
    std::vector<int> t(alive.size(), bos);
    tokens.swap(t);
  }
  while (!alive.empty()) {
    session.step(tokens, logits);
    std::vector<int> keep;
    std::vector<int> next;
    for (std::size_t r = 0; r < alive.size(); ++r) {
      const int s = alive[r];
      hypothesis& h = out[static_cast<std::size_t>(s)];
      float* row = logits.data() + r * static_cast<std::size_t>(vocab);
      detail::process_row(row, vocab, h.tokens, sentences[s], o, eos);
      const int t = sampling ? detail::sample(row, vocab, o, rngs[static_cast<std::size_t>(s)], idx, val)
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
      std::vector<int> a;
      for (int r : keep) a.push_back(alive[static_cast<std::size_t>(r)]);
      alive.swap(a);
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

// Beam search, fairseq style (docs/decoding.md). n-best per sentence, best first.
template <class Session>
std::vector<std::vector<hypothesis>> beam_search(Session& session,
                                                 const std::vector<sentence_constraints>& sentences,
                                                 const search_options& o, int bos, int eos) {
  check_options(o);
  const int b = static_cast<int>(sentences.size());
  const int k = o.beam_size;
  const int vocab = session.vocab();
  struct beam {
    std::vector<int> tokens;
    float score;
  };
  std::vector<std::vector<hypothesis>> finished(static_cast<std::size_t>(b));
  std::vector<std::vector<beam>> beams(static_cast<std::size_t>(b), std::vector<beam>{beam{{}, 0.0f}});
  std::vector<int> alive;
  for (int i = 0; i < b; ++i)
    if (sentences[i].max_length > 0) alive.push_back(i);
  if (alive.size() != static_cast<std::size_t>(b) && !alive.empty()) session.reorder(alive);
  std::vector<int> tokens(alive.size(), bos);
  std::vector<float> logits, cand;
  std::vector<int> top_i;
  std::vector<float> top_v;
  for (int step = 0; !alive.empty(); ++step) {
    session.step(tokens, logits);
    std::vector<int> next_rows, next_tok, next_alive;
    std::size_t row = 0;
    for (int s : alive) {
      auto& live = beams[static_cast<std::size_t>(s)];
      auto& fin = finished[static_cast<std::size_t>(s)];
      const std::size_t n = live.size();
      cand.resize(n * static_cast<std::size_t>(vocab));
      for (std::size_t j = 0; j < n; ++j) {
        float* lp = logits.data() + (row + j) * static_cast<std::size_t>(vocab);
        detail::process_row(lp, vocab, live[j].tokens, sentences[s], o, eos);
        for (int t = 0; t < vocab; ++t) cand[j * vocab + t] = live[j].score + lp[t];
      }
      const int want = std::min(2 * k, static_cast<int>(cand.size()));
      top_i.resize(static_cast<std::size_t>(want));
      top_v.resize(static_cast<std::size_t>(want));
      kernels::top_k(cand.data(), static_cast<int>(cand.size()), want, top_i.data(), top_v.data());
      struct next_beam {
        std::vector<int> tokens;
        float score;
        std::size_t row;
      };
      std::vector<next_beam> new_live;
      for (int rank = 0; rank < want; ++rank) {
        const float sc = top_v[static_cast<std::size_t>(rank)];
        if (sc == detail::neg_inf) break;  // forbidden by a constraint (never without options)
        const int flat = top_i[static_cast<std::size_t>(rank)];
        const int bi = flat / vocab, t = flat % vocab;
        std::vector<int> toks = live[static_cast<std::size_t>(bi)].tokens;
        toks.push_back(t);
        if (t == eos) {
          if (rank < k) {
            const double nsc = detail::normalize(sc, toks.size(), o.length_penalty);
            fin.push_back(hypothesis{std::move(toks), sc, nsc});
          }
          continue;
        }
        new_live.push_back(next_beam{std::move(toks), sc, row + static_cast<std::size_t>(bi)});
        if (static_cast<int>(new_live.size()) == k) break;
      }
      const bool last = step == sentences[s].max_length - 1;
      if (static_cast<int>(fin.size()) >= k || last || new_live.empty()) {
        if (last)
          for (std::size_t j = 0; j < new_live.size() && static_cast<int>(fin.size()) < k; ++j) {
            const double nsc = detail::normalize(new_live[j].score, new_live[j].tokens.size(), o.length_penalty);
            fin.push_back(hypothesis{std::move(new_live[j].tokens), new_live[j].score, nsc});
          }
      } else {
        live.clear();
        next_alive.push_back(s);
        for (auto& nb : new_live) {
          next_rows.push_back(static_cast<int>(nb.row));
          next_tok.push_back(nb.tokens.back());
          live.push_back(beam{std::move(nb.tokens), nb.score});
        }
      }
      row += n;
    }
    if (next_alive.empty()) break;
    session.reorder(next_rows);
    alive.swap(next_alive);
    tokens.swap(next_tok);
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
