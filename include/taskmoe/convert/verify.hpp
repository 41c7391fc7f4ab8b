#pragma once
// Checks an extracted .tmoe file against the full checkpoint it came from (taskmoe-convert
// --verify): both models decode the same probe sentences greedily; the extracted model is
// teacher-forced along the full model's greedy path, which gives the largest absolute logit
// difference over every step, and the greedy outputs are identical exactly when the two argmaxes
// agree at every step of that path.

#include <algorithm>  // std::max
#include <cmath>      // std::fabs
#include <cstdint>    // std::uint32_t
#include <string>     // std::string
#include <vector>     // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/translator.hpp>

namespace taskmoe {

struct verify_options {
  int probes = 16;                 // generated probe sentences (when `texts` is empty)
  std::vector<std::string> texts;  // probe sentences (need SentencePiece); empty = generated
  int max_steps = 48;              // decoding steps per probe (also capped by max_positions)
  std::uint32_t seed = 1;
};

struct verify_result {
  int probes = 0;
  int identical = 0;           // probes whose greedy outputs are identical
  float max_abs_logit_diff = 0;
  double identical_share() const { return probes ? static_cast<double>(identical) / probes : 1.0; }
};

inline verify_result verify_task(const std::string& checkpoint_dir, const std::string& task,
                                 const std::string& tmoe_path, const verify_options& o = {}) {
  const translator full = translator::from_checkpoint(checkpoint_dir, task);
  const translator ext(tmoe_path);
  if (ext.task().name != task)
    throw invalid_argument_error(tmoe_path + " holds task '" + ext.task().name + "', not '" + task + "'");
  const model_config& c = full.config();
  std::vector<std::vector<int>> sources;
  if (!o.texts.empty()) {
    for (const auto& t : o.texts) sources.push_back(full.source_ids(t));
  } else {
    // Random piece sequences, 4..16 pieces, avoiding the special ids.
    std::uint32_t s = o.seed * 2654435761u + 12345u;
    const auto next = [&s]() { return (s = s * 1664525u + 1013904223u) >> 8; };
    const int first = std::max({c.pad_id, c.unk_id, c.bos_id, c.eos_id}) + 1;
    for (int p = 0; p < o.probes; ++p) {
      std::vector<int> pieces(4 + next() % 13);
      for (int& id : pieces) id = first + static_cast<int>(next() % static_cast<std::uint32_t>(c.vocab_size - first));
      sources.push_back(full.source_ids(pieces));
    }
  }
  verify_result r;
  const int vocab = c.vocab_size;
  std::vector<float> la(static_cast<std::size_t>(vocab)), lb(static_cast<std::size_t>(vocab));
  const auto argmax = [vocab](const std::vector<float>& l) {
    int best = 0;
    for (int i = 1; i < vocab; ++i)
      if (l[i] > l[best]) best = i;
    return best;
  };
  for (const auto& src : sources) {
    model::workspace wa, wb;
    const model::encoder_output ea = full.model().encode({src}, wa);
    const model::encoder_output eb = ext.model().encode({src}, wb);
    model::decoder_state sa = full.model().start_decoding(ea, {0});
    model::decoder_state sb = ext.model().start_decoding(eb, {0});
    int token = c.bos_id;
    bool same = true;
    const int steps = std::min(o.max_steps, c.max_positions);
    for (int t = 0; t < steps; ++t) {
      full.model().step(sa, &token, la.data());
      ext.model().step(sb, &token, lb.data());
      for (int i = 0; i < vocab; ++i)
        r.max_abs_logit_diff = std::max(r.max_abs_logit_diff, std::fabs(la[i] - lb[i]));
      const int next = argmax(la);
      if (argmax(lb) != next) same = false;
      token = next;
      if (token == c.eos_id) break;
    }
    ++r.probes;
    if (same) ++r.identical;
  }
  return r;
}

}  // namespace taskmoe
