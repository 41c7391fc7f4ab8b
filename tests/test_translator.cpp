// The public facade: text and token APIs against the fixtures, decoding options, batching,
// threads, and defined behaviour on bad input.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <thread>

#include <fstream>

#include "test_helpers.hpp"
#include "test_model_support.hpp"

using namespace taskmoe;
using taskmoe_test::fixture_dir;
using taskmoe_test::fixture_reference;
using taskmoe_test::ints;

namespace {

std::vector<int> strip_eos(std::vector<int> v) {
  if (!v.empty() && v.back() == 3) v.pop_back();
  return v;
}

translation_options greedy12() {
  translation_options o;
  o.beam_size = 1;
  o.max_decoding_length = 12;
  return o;
}

const translator& fixture_translator() {
  static const translator t = translator::from_checkpoint(fixture_dir("task_target"), "en-de");
  return t;
}

// The fixture's target pieces in id order (a vocabulary map's words).
std::vector<std::string> fixture_pieces() {
  const translator& t = fixture_translator();
  std::vector<std::string> pieces;
  tokenizer::for_each_piece(t.model().source().sentencepiece_model(), [&](int id, std::string_view p) {
    if (id < t.config().vocab_size) pieces.emplace_back(p);
    return false;
  });
  return pieces;
}

}  // namespace

// Needs SentencePiece to turn text into pieces: compiled as skipped without it, so the run says so.
TEST_CASE("translate follows the reference for text input (greedy and beam)" *
          doctest::skip(!tokenizer::sentencepiece::available)) {
  const translator& t = fixture_translator();
  const nlohmann::json ref = fixture_reference("task_target");
  std::size_t cases = 0;
  for (const auto& c : ref["cases"]) {
    if (c["task"] != "en-de") continue;
    const std::string text = c["text"].get<std::string>();
    CAPTURE(text);
    ++cases;
    {
      CHECK(t.source_ids(text) == ints(c["source_ids"]));
      const auto g = t.translate(text, greedy12());
      REQUIRE(g.hypotheses.size() == 1);
      CHECK(g.hypotheses[0].tokens == strip_eos(ints(c["greedy"]["tokens"])));
      translation_options b;
      b.beam_size = 4;
      b.num_hypotheses = 2;
      b.max_decoding_length = 12;
      const auto r = t.translate(text, b);
      REQUIRE(r.hypotheses.size() == 2);
      for (std::size_t h = 0; h < 2; ++h) {
        CHECK(r.hypotheses[h].tokens == strip_eos(ints(c["beam4"][h]["tokens"])));
        CHECK(r.hypotheses[h].score == doctest::Approx(c["beam4"][h]["score"].get<double>()).epsilon(1e-4));
      }
    }
  }
  CHECK(cases > 0);
}

TEST_CASE("batch results come back in caller order and equal one-by-one results") {
  translator_options to;
  to.threads = 2;
  const translator t = translator::from_checkpoint(fixture_dir("token_task"), "en-de", to);
  std::vector<std::vector<int>> srcs = {{7, 89, 19}, {40}, {5, 6, 7, 8, 9, 10, 11}, {100, 101}, {19, 18, 178}};
  for (int beam : {1, 3}) {
    translation_options o;
    o.beam_size = beam;
    o.max_decoding_length = 10;
    std::vector<translation_result> single;
    for (const auto& s : srcs) single.push_back(t.translate_tokens({s}, o)[0]);
    for (std::size_t mbs : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{8}}) {
      for (batch_unit bt : {batch_unit::examples, batch_unit::tokens}) {
        o.max_batch_size = mbs;
        o.batch_type = bt;
        const auto batch = t.translate_tokens(srcs, o);
        REQUIRE(batch.size() == srcs.size());
        for (std::size_t i = 0; i < srcs.size(); ++i) {
          CHECK(batch[i].hypotheses[0].tokens == single[i].hypotheses[0].tokens);
          CHECK(batch[i].hypotheses[0].score == doctest::Approx(single[i].hypotheses[0].score).epsilon(1e-5));
        }
      }
    }
  }
}

TEST_CASE("sub-batches: bounded runs of the length order, longest first, cut so every thread has one") {
  using batches = std::vector<std::vector<std::size_t>>;
  const auto split = [](std::size_t n, std::size_t max_cost, std::size_t threads, std::vector<std::size_t> cost = {}) {
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;  // already sorted by length
    if (cost.empty()) cost.assign(n, 1);
    return taskmoe::detail::split_batches(order, cost, max_cost, threads);
  };
  CHECK(split(0, 0, 2).empty());
  CHECK(split(5, 0, 1) == batches{{0, 1, 2, 3, 4}});
  CHECK(split(5, 0, 2) == batches{{3, 4}, {0, 1, 2}});  // the longer sentences in the smaller part
  CHECK(split(5, 2, 1) == batches{{4}, {2, 3}, {0, 1}});
  // One bounded batch and two threads: two halves, not one batch whose GEMMs split columns.
  CHECK(split(64, 64, 2).size() == 2);
  CHECK(split(64, 64, 2)[0].size() == 32);
  CHECK(split(6, 6, 3) == batches{{4, 5}, {2, 3}, {0, 1}});
  CHECK(split(2, 8, 4) == batches{{1}, {0}});  // never an empty part
  CHECK(split(1, 8, 4) == batches{{0}});
  // Runs of 4 and 2 on four threads: the larger parts are cut first (2 + 2), then on a tie the
  // longer sentences' run (1 + 1).
  CHECK(split(6, 4, 4, {1, 1, 1, 1, 1, 1}) == batches{{5}, {4}, {2, 3}, {0, 1}});
  // Token costs bound the runs; every index appears once, in length order.
  const batches t = split(10, 6, 3, {1, 1, 2, 2, 2, 3, 3, 3, 4, 4});
  std::vector<std::size_t> all;
  for (auto it = t.rbegin(); it != t.rend(); ++it) all.insert(all.end(), it->begin(), it->end());
  CHECK(all == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  for (const auto& b : t) {
    std::size_t c = 0;
    for (std::size_t i : b) c += std::vector<std::size_t>{1, 1, 2, 2, 2, 3, 3, 3, 4, 4}[i];
    CHECK(c <= 6);
    CHECK(!b.empty());
  }
}

TEST_CASE("one translator serves several threads at once") {
  const translator& t = fixture_translator();
  const std::vector<std::vector<int>> srcs = {{7, 89, 19}, {40, 41, 42}, {19, 18, 178}};
  translation_options o;
  o.max_decoding_length = 10;
  const auto expected = t.translate_tokens(srcs, o);
  std::vector<std::vector<translation_result>> got(4);
  std::vector<std::thread> pool;
  for (std::size_t i = 0; i < got.size(); ++i)
    pool.emplace_back([&, i] { got[i] = t.translate_tokens(srcs, o); });
  for (auto& th : pool) th.join();
  for (const auto& g : got)
    for (std::size_t i = 0; i < srcs.size(); ++i) CHECK(g[i].hypotheses[0].tokens == expected[i].hypotheses[0].tokens);
}

TEST_CASE("decoding options: sampling, n-gram blocking, min length, prefix, n-best order") {
  const translator& t = fixture_translator();
  const std::vector<std::vector<int>> srcs = {{7, 89, 19, 18, 178}, {40, 41}, {116, 7, 116}};
  const auto greedy = t.translate_tokens(srcs, greedy12());

  SUBCASE("top-k sampling: reproducible per seed, different across seeds; tiny top-p is greedy") {
    translation_options s = greedy12();
    s.sampling_topk = 5;
    s.sampling_temperature = 1.5f;
    s.seed = 1234;
    const auto a = t.translate_tokens(srcs, s), b = t.translate_tokens(srcs, s);
    for (std::size_t i = 0; i < srcs.size(); ++i) {
      CHECK(a[i].hypotheses[0].tokens == b[i].hypotheses[0].tokens);
      CHECK(a[i].hypotheses[0].score == b[i].hypotheses[0].score);
    }
    std::set<std::vector<std::vector<int>>> outputs;  // distinct whole-batch samples over 8 seeds
    bool off_greedy = false;
    for (std::uint64_t seed = 1; seed <= 8; ++seed) {
      s.seed = seed;
      const auto c = t.translate_tokens(srcs, s);
      std::vector<std::vector<int>> toks;
      for (std::size_t i = 0; i < srcs.size(); ++i) {
        toks.push_back(c[i].hypotheses[0].tokens);
        off_greedy |= toks.back() != greedy[i].hypotheses[0].tokens;
      }
      outputs.insert(toks);
    }
    CHECK(outputs.size() >= 4);
    CHECK(off_greedy);
    // The nucleus of p = 1e-6 is the single most likely token: the sampling path then equals
    // argmax (this goes through sample(), unlike sampling_topk = 1, which *is* greedy search).
    s.sampling_topk = 0;
    s.sampling_topp = 1e-6f;
    const auto nucleus = t.translate_tokens(srcs, s);
    for (std::size_t i = 0; i < srcs.size(); ++i)
      CHECK(nucleus[i].hypotheses[0].tokens == greedy[i].hypotheses[0].tokens);
  }
  SUBCASE("no_repeat_ngram_size forbids repeated n-grams the unconstrained decode repeats") {
    const auto repeats = [](const std::vector<int>& tok, int n) {
      std::set<std::vector<int>> seen;
      for (std::size_t i = 0; i + n <= tok.size(); ++i)
        if (!seen.insert(std::vector<int>(tok.begin() + static_cast<long>(i), tok.begin() + static_cast<long>(i) + n)).second)
          return true;
      return false;
    };
    // Sources whose unconstrained decodes (greedy and beam) repeat 1-, 2- and 3-grams.
    const std::vector<std::vector<int>> rep = {{116, 7, 116}, {40, 41, 42, 40, 41, 42}, {19, 18, 19, 18, 19}};
    for (int n : {1, 2, 3}) {
      for (int beam : {1, 4}) {
        CAPTURE(n); CAPTURE(beam);
        translation_options o = greedy12();
        o.beam_size = beam;
        const auto free = t.translate_tokens(rep, o);
        o.no_repeat_ngram_size = n;
        const auto blocked = t.translate_tokens(rep, o);
        std::size_t broken = 0;
        for (std::size_t i = 0; i < rep.size(); ++i) {
          CAPTURE(i);
          CHECK_FALSE(repeats(blocked[i].hypotheses[0].tokens, n));
          if (repeats(free[i].hypotheses[0].tokens, n)) {
            ++broken;
            CHECK(blocked[i].hypotheses[0].tokens != free[i].hypotheses[0].tokens);
          }
        }
        REQUIRE(broken >= 2);  // without the option the rule is broken on these inputs
      }
    }
  }
  SUBCASE("repetition_penalty rescales each generated token's logit once, then log_softmax") {
    // process_row against a plain computation: tokens 2 and 5 were generated (2 twice), 2's logit
    // is positive (divided), 5's negative (multiplied); the others are untouched.
    const std::vector<float> logits = {0.5f, -1.0f, 2.0f, 0.25f, -0.5f, -3.0f, 1.0f};
    const int history[] = {2, 5, 2};
    decoding::search_options o;
    o.repetition_penalty = 1.7f;
    std::vector<float> row = logits;
    decoding::detail::process_row(row.data(), 7, history, 3, decoding::sentence_constraints{}, o, 3);
    std::vector<double> expect(logits.begin(), logits.end());
    expect[2] = 2.0 / 1.7f;
    expect[5] = -3.0 * 1.7f;
    double sum = 0;
    for (double v : expect) sum += std::exp(v);
    for (std::size_t i = 0; i < expect.size(); ++i) {
      CAPTURE(i);
      CHECK(row[i] == doctest::Approx(expect[i] - std::log(sum)).epsilon(1e-6));
    }
    // End to end, greedy and beam: a strong penalty changes outputs that repeat a token, and every
    // run is reproducible (beam search rebuilds each hypothesis's history from its token tree).
    const std::vector<std::vector<int>> rep = {{116, 7, 116}, {40, 41, 42, 40, 41, 42}, {19, 18, 19, 18, 19}};
    for (int beam : {1, 4}) {
      CAPTURE(beam);
      translation_options p = greedy12();
      p.beam_size = beam;
      const auto free = t.translate_tokens(rep, p);
      p.repetition_penalty = 5.0f;
      const auto penalized = t.translate_tokens(rep, p), again = t.translate_tokens(rep, p);
      std::size_t changed = 0;
      for (std::size_t i = 0; i < rep.size(); ++i) {
        CAPTURE(i);
        const auto& toks = free[i].hypotheses[0].tokens;
        const bool repeats = std::set<int>(toks.begin(), toks.end()).size() != toks.size();
        if (repeats && penalized[i].hypotheses[0].tokens != toks) ++changed;
        CHECK(again[i].hypotheses[0].tokens == penalized[i].hypotheses[0].tokens);
        CHECK(again[i].hypotheses[0].score == penalized[i].hypotheses[0].score);
      }
      CHECK(changed >= 2);
    }
  }
  SUBCASE("min_decoding_length delays EOS that the unconstrained decode emits early") {
    for (int beam : {1, 4}) {
      CAPTURE(beam);
      translation_options o = greedy12();
      o.beam_size = beam;
      const auto free = t.translate_tokens(srcs, o);
      o.min_decoding_length = 9;
      const auto held = t.translate_tokens(srcs, o);
      std::size_t early = 0;
      for (std::size_t i = 0; i < srcs.size(); ++i) {
        CAPTURE(i);
        if (free[i].hypotheses[0].tokens.size() < 9) ++early;  // ended (EOS) before 9 tokens
        CHECK(held[i].hypotheses[0].tokens.size() >= 9);
      }
      REQUIRE(early >= 2);  // without the option, EOS comes before 9 tokens on these inputs
    }
  }
  SUBCASE("target prefix is respected") {
    for (int beam : {1, 4}) {
      translation_options o = greedy12();
      o.beam_size = beam;
      o.target_prefix_tokens = {77, 78};
      for (const auto& r : t.translate_tokens(srcs, o)) {
        REQUIRE(r.hypotheses[0].tokens.size() >= 2);
        CHECK(r.hypotheses[0].tokens[0] == 77);
        CHECK(r.hypotheses[0].tokens[1] == 78);
      }
    }
  }
  SUBCASE("n-best lists come best first by normalized score, which can reorder raw scores") {
    // The engine's own order, as returned: normalized_score must be the documented
    // score / (tokens + EOS)^length_penalty, decreasing down the list, hypotheses distinct, and a
    // smaller n-best the head of a larger one. With length_penalty 2 at least one list ranks a
    // hypothesis with a lower raw score first: an order by raw score would fail here.
    bool reordered = false;
    for (float lp : {0.6f, 2.0f}) {
      CAPTURE(lp);
      translation_options o = greedy12();
      o.beam_size = 5;
      o.num_hypotheses = 5;
      o.length_penalty = lp;
      const auto full = t.translate_tokens(srcs, o);
      o.num_hypotheses = 2;
      const auto two = t.translate_tokens(srcs, o);
      for (std::size_t i = 0; i < srcs.size(); ++i) {
        const auto& hs = full[i].hypotheses;
        REQUIRE(hs.size() >= 2);
        std::set<std::vector<int>> distinct;
        for (std::size_t h = 0; h < hs.size(); ++h) {
          CAPTURE(h);
          distinct.insert(hs[h].tokens);
          const std::size_t len = hs[h].tokens.size() + (hs[h].tokens.size() < 12 ? 1 : 0);  // + EOS unless cut
          CHECK(hs[h].normalized_score == doctest::Approx(hs[h].score / std::pow(double(len), double(lp))).epsilon(1e-5));
          if (h > 0) {
            CHECK(hs[h - 1].normalized_score >= hs[h].normalized_score);
            reordered |= hs[h - 1].score < hs[h].score;
          }
        }
        CHECK(distinct.size() == hs.size());
        REQUIRE(two[i].hypotheses.size() == 2);
        for (std::size_t h = 0; h < 2; ++h) CHECK(two[i].hypotheses[h].tokens == hs[h].tokens);
      }
    }
    CHECK(reordered);
  }
  SUBCASE("max_length_ratio caps the output relative to the input") {
    translation_options o = greedy12();
    o.max_length_ratio = 0.5f;
    o.max_length_offset = 1;
    const auto r = t.translate_tokens(srcs, o);
    for (std::size_t i = 0; i < srcs.size(); ++i)
      CHECK(r[i].hypotheses[0].tokens.size() <= static_cast<std::size_t>(std::ceil(0.5 * (srcs[i].size() + 2)) + 1));
  }
}

TEST_CASE("bad input gets defined behaviour and clear errors") {
  const translator& t = fixture_translator();
  SUBCASE("empty and whitespace-only input give an empty translation") {
    for (const char* s : {"", "   ", "\t\n"}) {
      const auto r = t.translate(s);
      REQUIRE(r.hypotheses.size() == 1);
      CHECK(r.hypotheses[0].text.empty());
      CHECK(r.hypotheses[0].tokens.empty());
    }
    CHECK(t.translate_tokens({{}})[0].hypotheses[0].tokens.empty());
  }
  SUBCASE("invalid UTF-8 is rejected with its byte offset") {
    try {
      t.translate_batch({"fine", std::string("ab\xC3(", 4)});
      FAIL("no exception");
    } catch (const invalid_argument_error& e) {
      CHECK(std::string(e.what()).find("input 1: invalid UTF-8 at byte 2") != std::string::npos);
    }
  }
  SUBCASE("inputs longer than max_positions are truncated") {
    const std::vector<int> pieces(500, 7);
    const auto ids = t.source_ids(pieces);
    CHECK(static_cast<int>(ids.size()) == t.config().max_positions);
    CHECK(ids.front() == t.target_tag_id());
    CHECK(ids.back() == t.config().eos_id);
    translation_options o = greedy12();
    CHECK(t.translate_tokens({pieces}, o)[0].hypotheses.size() == 1);
  }
  SUBCASE("bad options throw invalid_argument_error") {
    translation_options o;
    o.beam_size = 0;
    CHECK_THROWS_AS(t.translate_tokens({{7}}, o), invalid_argument_error);
    o.beam_size = 2;
    o.num_hypotheses = 3;
    CHECK_THROWS_AS(t.translate_tokens({{7}}, o), invalid_argument_error);
    o.num_hypotheses = 1;
    o.sampling_topk = 5;
    CHECK_THROWS_AS(t.translate_tokens({{7}}, o), invalid_argument_error);
    CHECK_THROWS_AS(t.translate_tokens({{7, 100000}}), invalid_argument_error);
    translation_options p;
    p.target_prefix_tokens = {-1};
    CHECK_THROWS_AS(t.translate_tokens({{7}}, p), invalid_argument_error);
  }
  SUBCASE("a model for another task than requested is refused") {
    translator_options to;
    to.expected_task = "de-en";
    CHECK_THROWS_WITH_AS(translator::from_checkpoint(fixture_dir("task_target"), "en-de", to),
                         doctest::Contains("'de-en' was requested"), invalid_argument_error);
    taskmoe_test::temp_dir dir;
    const checkpoint ck(fixture_dir("task_target"));
    taskmoe_test::extract_task(ck, "en-fr", dir.file("en-fr.tmoe"));
    CHECK_THROWS_AS(translator(dir.file("en-fr.tmoe"), to), invalid_argument_error);
    to.expected_task = "en-fr";
    const translator ok(dir.file("en-fr.tmoe"), to);
    CHECK(ok.task().name == "en-fr");
    CHECK(ok.translate_tokens({{7, 89}}, greedy12())[0].hypotheses.size() == 1);
    CHECK_THROWS_AS(translator(dir.file("missing.tmoe")), error);
  }
}

TEST_CASE("a text longer than max_positions is truncated and still translated" *
          doctest::skip(!tokenizer::sentencepiece::available)) {
  const translator& t = fixture_translator();
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "Open file ";
  CHECK(static_cast<int>(t.source_ids(long_text).size()) == t.config().max_positions);  // it was cut
  CHECK(t.translate(long_text, greedy12()).hypotheses.size() == 1);
}

namespace {

// A decoding session whose every step gives the same logits: the sampler's distribution is then
// known exactly. Token 7 is EOS, made unlikely so sentences run to max_length.
struct fixed_logits_session {
  std::vector<float> row;
  int rows;
  int vocab() const { return static_cast<int>(row.size()); }
  void step(const std::vector<int>& tokens, std::vector<float>& logits) {
    REQUIRE(static_cast<int>(tokens.size()) == rows);
    logits.clear();
    for (int r = 0; r < rows; ++r) logits.insert(logits.end(), row.begin(), row.end());
  }
  void reorder(const std::vector<int>& keep) { rows = static_cast<int>(keep.size()); }
};

}  // namespace

TEST_CASE("sampling draws from the top-k / top-p distribution at the temperature, reproducibly") {
  const std::vector<float> logits = {0.0f, 2.0f, -1.0f, 1.5f, 0.5f, 1.0f, -3.0f, -20.0f};  // eos = 7
  const int eos = 7, len = 400;
  const auto run = [&](int topk, float topp, float temp, std::uint64_t seed) {
    fixed_logits_session sess{logits, 1};
    decoding::search_options o;
    o.sampling_topk = topk;
    o.sampling_topp = topp;
    o.sampling_temperature = temp;
    o.seed = seed;
    return decoding::search(sess, {{len, {}}}, o, 0, eos)[0][0].tokens;
  };
  // Expected probabilities, computed here: softmax(logit / T) over the kept set, renormalised.
  const auto expected = [&](const std::vector<int>& kept, float temp) {
    std::map<int, double> p;
    double sum = 0;
    for (int t : kept) sum += p[t] = std::exp(double(logits[t]) / temp);
    for (auto& kv : p) kv.second /= sum;
    return p;
  };
  struct setting {
    int topk;
    float topp;
    float temp;
    std::vector<int> kept;  // the tokens that may be drawn, by hand from the logits above
  };
  // top-3 = {1, 3, 5}. The top-p 0.9 nucleus at T = 0.5 is {1, 3, 5} (p = 0.635, 0.234, 0.086:
  // cumulative 0.869 < 0.9 <= 0.955), and the 0.75 nucleus at T = 1 too (0.419, 0.254, 0.154:
  // 0.672 < 0.75 <= 0.826).
  const std::vector<setting> settings = {{3, 1.0f, 1.0f, {1, 3, 5}},
                                         {3, 1.0f, 2.5f, {1, 3, 5}},
                                         {0, 0.9f, 0.5f, {1, 3, 5}},
                                         {0, 0.75f, 1.0f, {1, 3, 5}},
                                         {0, 1.0f, 1.0f, {0, 1, 2, 3, 4, 5, 6, 7}}};
  for (const auto& st : settings) {
    CAPTURE(st.topk); CAPTURE(st.topp); CAPTURE(st.temp);
    std::map<int, int> count;
    int draws = 0;
    std::set<std::vector<int>> distinct;
    for (std::uint64_t seed = 1; seed <= 25; ++seed) {
      const auto toks = run(st.topk, st.topp, st.temp, seed);
      CHECK(toks == run(st.topk, st.topp, st.temp, seed));  // same seed, same sample
      distinct.insert(toks);
      for (int tk : toks) {
        ++count[tk];
        ++draws;
      }
    }
    CHECK(distinct.size() == 25);  // every seed its own sample
    const auto p = expected(st.kept, st.temp);
    for (const auto& kv : count) {
      CAPTURE(kv.first);
      CHECK(p.count(kv.first) == 1);  // never a token outside the kept set
    }
    for (const auto& kv : p) {
      CAPTURE(kv.first);
      // Deterministic (fixed seeds), so no flakiness: 4.5 binomial standard deviations of slack
      // against a wrong temperature, a wrong cut or an off-by-one in the cumulative draw.
      const double f = double(count[kv.first]) / draws;
      const double sd = std::sqrt(kv.second * (1 - kv.second) / draws);
      CHECK(std::fabs(f - kv.second) <= 4.5 * sd + 1e-9);
    }
  }
}

namespace {

// A toy language model: each row's logits are a fixed pseudo-random function of its whole token
// history (so the search's result depends on every step); row_steps counts the rows it computed.
// Row b starts with a history of its own.
struct history_session {
  static constexpr int v = 12;
  std::vector<std::vector<int>> rows;
  long row_steps = 0;
  explicit history_session(int sentences) {
    for (int b = 0; b < sentences; ++b) rows.push_back({1000 + b});
  }
  int vocab() const { return v; }
  void step(const std::vector<int>& tokens, std::vector<float>& logits) {
    REQUIRE(tokens.size() == rows.size());
    logits.resize(rows.size() * v);
    for (std::size_t r = 0; r < rows.size(); ++r) {
      rows[r].push_back(tokens[r]);
      std::uint64_t h = 1469598103934665603ull;
      for (int t : rows[r]) h = (h ^ static_cast<std::uint64_t>(t + 1)) * 1099511628211ull;
      for (int t = 0; t < v; ++t) {
        std::uint64_t x = h ^ (static_cast<std::uint64_t>(t + 1) * 0x9E3779B97F4A7C15ull);
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 32;
        logits[r * v + t] = static_cast<float>(x % 1000) / 250.0f;  // coarse: ties happen
      }
      // One dominant token per step (continuing costs almost nothing, so a long hypothesis can
      // normalize above a short one), EOS dominant at one step in five.
      logits[r * v + 1 + static_cast<int>(h % (v - 1))] += 6.0f;
      logits[r * v] += h % 5 == 0 ? 7.0f : -1.0f;
    }
    row_steps += static_cast<long>(rows.size());
  }
  void reorder(const std::vector<int>& keep) {
    std::vector<std::vector<int>> next;
    for (int r : keep) next.push_back(rows[static_cast<std::size_t>(r)]);
    rows.swap(next);
  }
};

}  // namespace

TEST_CASE("beam search stops a sentence once its n-best is settled, with the full search's results") {
  // The early stop must return exactly what running every sentence to k finished hypotheses
  // returns, for any length penalty and n-best size, and with length_penalty 0 (where the best
  // beam finishing settles 1-best) it must save steps.
  const int eos = 0, bos = 1;
  std::vector<decoding::sentence_constraints> sentences;
  for (int b = 0; b < 12; ++b) {
    decoding::sentence_constraints c;
    c.max_length = 4 + 3 * b;
    sentences.push_back(c);
  }
  int compared = 0;
  for (int k : {2, 4, 6})
    for (float lp : {0.0f, 0.5f, 1.0f, 2.0f, -0.5f})
      for (int n : {1, 2, k}) {
        if (n > k) continue;
        CAPTURE(k);
        CAPTURE(lp);
        CAPTURE(n);
        decoding::search_options o;
        o.beam_size = k;
        o.num_hypotheses = n;
        o.length_penalty = lp;
        history_session early(12), full(12);
        const auto a = decoding::beam_search(early, sentences, o, bos, eos);
        const auto b = decoding::beam_search(full, sentences, o, bos, eos, false);
        REQUIRE(a.size() == b.size());
        for (std::size_t i = 0; i < a.size(); ++i) {
          REQUIRE(a[i].size() == b[i].size());
          for (std::size_t h = 0; h < a[i].size(); ++h) {
            CHECK(a[i][h].tokens == b[i][h].tokens);
            CHECK(a[i][h].score == b[i][h].score);
            CHECK(a[i][h].normalized == b[i][h].normalized);
            ++compared;
          }
        }
        CHECK(early.row_steps <= full.row_steps);
        if (lp == 0.0f && n == 1) CHECK(early.row_steps < full.row_steps);
        if (lp == 0.0f && n == 1 && k >= 4) CHECK(early.row_steps * 4 < full.row_steps * 3);  // 0.61x, 0.62x
      }
  CHECK(compared > 500);
}

TEST_CASE("a vocabulary map (shortlist) restricts the target vocabulary per batch") {
  const translator& full = fixture_translator();
  const std::vector<std::string> pieces = fixture_pieces();
  REQUIRE(static_cast<int>(pieces.size()) == full.config().vocab_size);
  taskmoe_test::temp_dir dir;
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir.file(name), std::ios::binary) << text;
    return dir.file(name);
  };
  const auto open = [&](const std::string& path) {
    translator_options to;
    to.vocabulary_map = path;
    return translator::from_checkpoint(fixture_dir("task_target"), "en-de", to);
  };
  const std::vector<std::vector<int>> srcs = {{7, 89, 19, 18, 178}, {40, 41}, {116, 7, 116}, {19, 18, 19, 18, 19}};

  SUBCASE("a map listing every piece translates exactly like the full vocabulary (greedy and beam)") {
    std::string all = "\t";
    for (std::size_t i = 0; i < pieces.size(); ++i) all += (i ? " " : "") + pieces[i];
    const translator t = open(write("all.txt", all + "\n"));
    for (int beam : {1, 4}) {
      CAPTURE(beam);
      translation_options o = greedy12();
      o.beam_size = beam;
      const auto want = t.translate_tokens(srcs, o);
      o.use_vocabulary_map = true;
      const auto got = t.translate_tokens(srcs, o);
      for (std::size_t i = 0; i < srcs.size(); ++i) {
        CHECK(got[i].hypotheses[0].tokens == want[i].hypotheses[0].tokens);
        CHECK(got[i].hypotheses[0].score == want[i].hypotheses[0].score);
      }
    }
  }
  SUBCASE("outputs use only the candidates: fixed pieces, specials, matched rules, the prefix") {
    // Always: pieces 10-29. Source piece 7 adds the pieces of the full greedy translation of
    // srcs[0] (which holds 7); the bigram (19, 18) adds 60-69; a rule with an unknown source piece
    // and an unknown target piece are dropped.
    const auto want = full.translate_tokens({srcs[0]}, greedy12())[0].hypotheses[0].tokens;
    REQUIRE(want.size() >= 2);
    std::set<int> by_7(want.begin(), want.end());
    std::string map = "\t";
    for (int i = 10; i < 30; ++i) map += (i > 10 ? " " : "") + pieces[i];
    map += "\r\n" + pieces[7] + "\t";
    for (int i : by_7) map += pieces[i] + " ";
    map.back() = '\n';
    map += pieces[19] + " " + pieces[18] + "\t";
    for (int i = 60; i < 70; ++i) map += (i > 60 ? " " : "") + pieces[i];
    map += " <no such piece>\n<no such piece>\t" + pieces[90] + "\n\n";
    const translator t = open(write("small.txt", map));
    translation_options o = greedy12();
    o.use_vocabulary_map = true;
    // Greedy's choice is the full argmax whenever that is a candidate: here at every step.
    CHECK(t.translate_tokens({srcs[0]}, o)[0].hypotheses[0].tokens == want);
    for (int beam : {1, 4}) {
      CAPTURE(beam);
      o.beam_size = beam;
      o.target_prefix_tokens = {95};
      const auto got = t.translate_tokens(srcs, o);
      for (std::size_t i = 0; i < srcs.size(); ++i) {
        const auto& toks = got[i].hypotheses[0].tokens;
        REQUIRE(!toks.empty());
        CHECK(toks[0] == 95);
        for (int tok : toks) {
          CAPTURE(tok);
          // One batch: the union of its sentences' rules (srcs[0] and srcs[2] hold piece 7,
          // srcs[3] the bigram).
          const bool ok = (tok >= 10 && tok < 30) || tok == 95 || tok == full.config().unk_id ||
                          by_7.count(tok) != 0 || (tok >= 60 && tok < 70);
          CHECK(ok);
        }
      }
    }
    decoding::vocabulary_map vm(decoding::vocabulary_map::read_file(dir.file("small.txt")),
                                [&](std::string_view p) {
                                  for (std::size_t i = 0; i < pieces.size(); ++i)
                                    if (pieces[i] == p) return static_cast<int>(i);
                                  return -1;
                                },
                                {3});
    CHECK(vm.rules() == 2);
    CHECK(vm.always().size() == 21);  // 10-29 and the special 3
    const auto c = vm.candidates({{19, 18}, {18, 19}}, {200});
    CHECK(c.size() == 21 + 10 + 1);
    CHECK(vm.candidates({{18, 19}}, {}).size() == 21);  // the bigram is ordered
    CHECK(std::is_sorted(c.begin(), c.end()));
  }
  SUBCASE("clear errors") {
    translation_options o = greedy12();
    o.use_vocabulary_map = true;
    CHECK_THROWS_AS(full.translate_tokens(srcs, o), invalid_argument_error);
    CHECK_THROWS_AS(open(dir.file("missing.txt")), io_error);
    CHECK_THROWS_WITH_AS(open(write("notab.txt", "\t" + pieces[10] + "\n" + pieces[7] + " " + pieces[8] + "\n")),
                         doctest::Contains("line 2: no tab"), format_error);
    CHECK_THROWS_WITH_AS(open(write("space.txt", pieces[7] + "\t" + pieces[10] + "  " + pieces[11] + "\n")),
                         doctest::Contains("empty piece"), format_error);
  }
}

TEST_CASE("a vocabulary map embedded by the converter: used like a map file, read on first use") {
  const translator& full = fixture_translator();
  const std::vector<std::string> pieces = fixture_pieces();
  taskmoe_test::temp_dir dir;
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir.file(name), std::ios::binary) << text;
    return dir.file(name);
  };
  // Always pieces 10-39; source piece 7 adds 60-69 (so the map changes outputs).
  std::string small = "\t";
  for (int i = 10; i < 40; ++i) small += (i > 10 ? " " : "") + pieces[i];
  small += "\n" + pieces[7] + "\t";
  for (int i = 60; i < 70; ++i) small += (i > 60 ? " " : "") + pieces[i];
  small += "\n";
  const std::string small_path = write("small.vmap.txt", small);
  std::string all = "\t";
  for (std::size_t i = 0; i < pieces.size(); ++i) all += (i ? " " : "") + pieces[i];
  const std::string all_path = write("all.vmap.txt", all + "\n");

  const checkpoint ck(fixture_dir("task_target"));
  convert_options co;
  co.quantization = quantization_scheme::float32;  // exact: the file decodes like the checkpoint
  co.created = "2024-01-01T00:00:00Z";
  co.vocabulary_map = small_path;
  const std::string with_map = dir.file("en-de.tmoe");
  const convert_result r = convert_task(ck, "en-de", co, with_map);
  CHECK(r.file_size == plan_task(ck, "en-de", co).file_size);
  CHECK(tmoe_file(with_map).vocabulary_map_text() == small);
  co.vocabulary_map.clear();
  const std::string plain = dir.file("plain.tmoe");
  convert_task(ck, "en-de", co, plain);
  CHECK(tmoe_file(plain).vocabulary_map_text().empty());

  const std::vector<std::vector<int>> srcs = {{7, 89, 19, 18, 178}, {40, 41}, {116, 7, 116}};
  translation_options o = greedy12();
  const auto same = [](const std::vector<translation_result>& a, const std::vector<translation_result>& b) {
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].hypotheses[0].tokens == b[i].hypotheses[0].tokens);
      CHECK(a[i].hypotheses[0].score == b[i].hypotheses[0].score);
    }
  };
  translator_options file_map;
  file_map.vocabulary_map = small_path;
  for (int beam : {1, 4}) {
    CAPTURE(beam);
    o.beam_size = beam;
    o.use_vocabulary_map = false;
    const translator embedded(with_map);
    CHECK(embedded.has_vocabulary_map());
    const auto unrestricted = full.translate_tokens(srcs, o);
    same(embedded.translate_tokens(srcs, o), unrestricted);  // not used unless asked
    o.use_vocabulary_map = true;
    const auto want = translator(plain, file_map).translate_tokens(srcs, o);
    // Several threads make the first call at once: the map is read once, every answer equal.
    std::vector<std::vector<translation_result>> got(4);
    std::vector<std::thread> threads;
    for (auto& g : got) threads.emplace_back([&] { g = embedded.translate_tokens(srcs, o); });
    for (auto& t : threads) t.join();
    for (const auto& g : got) same(g, want);
    bool differs = false;
    for (std::size_t i = 0; i < srcs.size(); ++i)
      differs = differs || want[i].hypotheses[0].tokens != unrestricted[i].hypotheses[0].tokens;
    CHECK(differs);  // the small map does restrict these outputs
    // translator_options::vocabulary_map takes the place of the embedded map.
    translator_options every;
    every.vocabulary_map = all_path;
    same(translator(with_map, every).translate_tokens(srcs, o), unrestricted);
  }
  SUBCASE("a file without a map refuses use_vocabulary_map") {
    const translator t(plain);
    CHECK_FALSE(t.has_vocabulary_map());
    CHECK_THROWS_WITH_AS(t.translate_tokens(srcs, o), doctest::Contains("no vocabulary map"), invalid_argument_error);
  }
  SUBCASE("an embedded map that does not parse is a format_error when first used, every time") {
    // Only a hand-made file can hold one (the converter checks maps): the plain file's tensors
    // and a map without a tab.
    const tmoe_file src(plain);
    const std::string bad = dir.file("bad-map.tmoe");
    {
      tmoe_writer w(bad);
      w.set_metadata(src.metadata());
      for (const auto& n : src.tensor_names()) w.add_tensor(n, src.require(n));
      w.add_vocabulary_map("no tab here\n");
      w.finish();
    }
    const translator t(bad);  // opening does not read the map
    CHECK(t.has_vocabulary_map());
    o.use_vocabulary_map = true;
    for (int i = 0; i < 2; ++i) {
      CHECK_THROWS_WITH_AS(t.translate_tokens(srcs, o), doctest::Contains("embedded vocabulary map: line 1: no tab"),
                           format_error);
      CHECK_THROWS_WITH_AS(t.vocabulary_map(), doctest::Contains("line 1: no tab"), format_error);
    }
    CHECK_THROWS_WITH_AS(translator(plain).vocabulary_map(), doctest::Contains("no vocabulary map"),
                         invalid_argument_error);
    CHECK(translator(with_map).vocabulary_map().rules() == 1);
  }
  SUBCASE("a bad map fails the conversion and writes nothing") {
    const auto check = [&](const std::string& map, const char* what) {
      CAPTURE(map);
      convert_options bad = co;
      bad.vocabulary_map = map;
      const std::string out = dir.file("bad.tmoe");
      CHECK_THROWS_WITH(convert_task(ck, "en-de", bad, out), doctest::Contains(what));
      std::size_t files = 0;
      for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.path().extension() != ".txt";
      CHECK(files == 2);  // en-de.tmoe and plain.tmoe only: no output, no temporary
    };
    check(write("notab.vmap.txt", "\t" + pieces[10] + "\n" + pieces[7] + " " + pieces[8] + "\n"), "line 2: no tab");
    check(write("foreign.vmap.txt", "\tzzz_unknown yyy_unknown\nxxx_unknown\tzzz_unknown\n"),
          "holds no piece of the checkpoint's vocabulary");
    check(write("empty.vmap.txt", ""), "holds no piece");
    check(dir.file("missing.vmap.txt"), "cannot open vocabulary map");
  }
}
