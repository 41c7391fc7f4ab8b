// translator::score_batch / score_tokens (forced decoding) against the PyTorch reference's logits
// and scores, and against the translator's own search.

#include <cmath>
#include <string>
#include <vector>

#include "test_model_support.hpp"

using namespace taskmoe;
using taskmoe_test::fixture_dir;
using taskmoe_test::fixture_reference;
using taskmoe_test::ints;

namespace {

// source_ids minus the tag and </s>: what the token API takes.
std::vector<int> pieces_of(const std::vector<int>& ids) { return {ids.begin() + 1, ids.end() - 1}; }

// log_softmax(logits)[token] in double, from the reference's row.
double reference_log_prob(const float* row, int vocab, int token) {
  double m = row[0];
  for (int i = 1; i < vocab; ++i) m = std::max(m, static_cast<double>(row[i]));
  double s = 0;
  for (int i = 0; i < vocab; ++i) s += std::exp(static_cast<double>(row[i]) - m);
  return static_cast<double>(row[token]) - m - std::log(s);
}

}  // namespace

TEST_CASE("scoring the reference's translations gives the reference's scores, every setup and task") {
  for (const char* setup : {"task_target", "task_pair", "token_task", "token_token", "dense"}) {
    CAPTURE(setup);
    const nlohmann::json ref = fixture_reference(setup);
    std::size_t compared = 0;
    for (const auto& c : ref["cases"]) {
      const translator t = translator::from_checkpoint(fixture_dir(setup), c["task"].get<std::string>());
      const std::vector<int> src = pieces_of(ints(c["source_ids"]));
      std::vector<std::vector<int>> targets;
      std::vector<double> expected;
      const auto add = [&](const nlohmann::json& h) {
        std::vector<int> tok = ints(h["tokens"]);
        if (tok.empty() || tok.back() != t.config().eos_id) return;  // cut at max_len: no EOS to score
        tok.pop_back();
        targets.push_back(tok);
        expected.push_back(h["score"].get<double>());
      };
      add(c["greedy"]);
      for (const auto& h : c["beam4"]) add(h);
      const std::vector<scoring_result> r =
          t.score_tokens(std::vector<std::vector<int>>(targets.size(), src), targets);
      REQUIRE(r.size() == targets.size());
      for (std::size_t i = 0; i < r.size(); ++i) {
        CHECK(r[i].tokens.size() == targets[i].size() + 1);
        CHECK(r[i].tokens.back() == t.config().eos_id);
        CHECK(r[i].log_probs.size() == r[i].tokens.size());
        CHECK(r[i].score() == doctest::Approx(expected[i]).epsilon(1e-4));
        ++compared;
      }
    }
    CHECK(compared > 0);
  }
}

TEST_CASE("per-token log-probabilities equal the log-softmax of the reference's logits") {
  const nlohmann::json ref = fixture_reference("task_target");
  for (const auto& c : ref["cases"]) {
    const translator t = translator::from_checkpoint(fixture_dir("task_target"), c["task"].get<std::string>());
    const std::vector<int> dec = ints(c["decoder_input"]);  // [bos, t1, t2]
    const std::vector<int> target(dec.begin() + 1, dec.end());
    const std::vector<float> logits = c["logits"]["data"].get<std::vector<float>>();
    const int vocab = t.config().vocab_size;
    REQUIRE(logits.size() == dec.size() * static_cast<std::size_t>(vocab));
    const auto r = t.score_tokens({pieces_of(ints(c["source_ids"]))}, {target});
    REQUIRE(r[0].log_probs.size() == dec.size());  // t1, t2, then EOS after t2
    for (std::size_t k = 0; k < dec.size(); ++k) {
      const int token = k + 1 < dec.size() ? dec[k + 1] : t.config().eos_id;
      CHECK(r[0].log_probs[k] ==
            doctest::Approx(reference_log_prob(logits.data() + k * static_cast<std::size_t>(vocab), vocab, token))
                .epsilon(1e-4));
    }
  }
}

TEST_CASE("scoring a greedy translation gives the search's score; batching and threads change nothing" *
          doctest::skip(!tokenizer::sentencepiece::available)) {
  translator_options to;
  to.threads = 2;
  const translator t = translator::from_checkpoint(fixture_dir("task_target"), "en-de", to);
  const std::vector<std::string> texts = {"Open file", "Save the current document under a new name",
                                          "Error", "The selected printer is not available.", "Fichier"};
  translation_options g;
  g.beam_size = 1;
  g.max_decoding_length = 12;
  const auto tr = t.translate_batch(texts, g);
  std::vector<std::vector<int>> src, tgt;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    src.push_back(t.encode(texts[i]));
    tgt.push_back(tr[i].hypotheses[0].tokens);
  }
  const auto all = t.score_tokens(src, tgt);
  scoring_options one;
  one.max_batch_size = 1;
  const auto single = t.score_tokens(src, tgt, one);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    CAPTURE(texts[i]);
    // Translations cut at max_decoding_length have no EOS; their score lacks the EOS term.
    if (tr[i].hypotheses[0].tokens.size() + 1 <= 12)
      CHECK(all[i].score() == doctest::Approx(tr[i].hypotheses[0].score).epsilon(1e-4));
    CHECK(all[i].tokens == single[i].tokens);
    REQUIRE(all[i].log_probs.size() == single[i].log_probs.size());
    for (std::size_t k = 0; k < all[i].log_probs.size(); ++k)
      CHECK(all[i].log_probs[k] == doctest::Approx(single[i].log_probs[k]).epsilon(1e-5));
  }
  // The text API tokenizes both sides as translate_batch does.
  std::vector<std::string> targets;
  for (const auto& r : tr) targets.push_back(r.hypotheses[0].text);
  const auto by_text = t.score_batch(texts, targets);
  for (std::size_t i = 0; i < texts.size(); ++i)
    CHECK(by_text[i].tokens == t.score_tokens({t.encode(texts[i])}, {t.encode(targets[i])})[0].tokens);
}

TEST_CASE("a worse target scores lower, and a long source is truncated or refused") {
  const translator t = translator::from_checkpoint(fixture_dir("task_target"), "en-de");
  const nlohmann::json ref = fixture_reference("task_target");
  const auto& c = ref["cases"][0];
  const std::vector<int> src = pieces_of(ints(c["source_ids"]));
  std::vector<int> best = ints(c["greedy"]["tokens"]);
  best.pop_back();
  std::vector<int> worse = best;
  worse.insert(worse.begin(), {200, 201, 202});
  const auto r = t.score_tokens({src, src}, {best, worse});
  CHECK(r[0].score() > r[1].score());
  CHECK(t.score_tokens({src}, {{}})[0].tokens == std::vector<int>{t.config().eos_id});

  scoring_options o;
  o.max_input_length = 2;
  CHECK(t.score_tokens({src}, {best}, o)[0].truncated);
  CHECK_FALSE(t.score_tokens({src}, {best})[0].truncated);
  o.truncate_input = false;
  CHECK_THROWS_AS(t.score_tokens({src}, {best}, o), invalid_argument_error);
}

TEST_CASE("scoring rejects mismatched batches, ids outside the vocabulary, targets too long") {
  const translator t = translator::from_checkpoint(fixture_dir("task_target"), "en-de");
  CHECK_THROWS_WITH_AS(t.score_tokens({{5}}, {}), "score_tokens: 1 sources but 0 targets", invalid_argument_error);
  CHECK_THROWS_AS(t.score_tokens({{5}}, {{t.config().vocab_size}}), invalid_argument_error);
  CHECK_THROWS_AS(t.score_tokens({{-1}}, {{5}}), invalid_argument_error);
  const std::vector<int> too_long(static_cast<std::size_t>(t.config().max_positions), 5);
  CHECK_THROWS_WITH_AS(t.score_tokens({{5}}, {too_long}),
                       ("target 0: " + std::to_string(too_long.size()) + " pieces, more than max_positions - 1 = " +
                        std::to_string(too_long.size() - 1)).c_str(),
                       invalid_argument_error);
  std::vector<int> fits = too_long;
  fits.pop_back();
  CHECK(t.score_tokens({{5}}, {fits})[0].log_probs.size() == too_long.size());
  if (tokenizer::sentencepiece::available)
    CHECK_THROWS_WITH_AS(t.score_batch({"ok"}, {"\xff"}), doctest::Contains("target 0: invalid UTF-8"),
                         invalid_argument_error);
}
