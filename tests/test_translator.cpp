// The public facade: text and token APIs against the fixtures, decoding options, batching,
// threads, and defined behaviour on bad input.

#include <algorithm>
#include <set>
#include <thread>

#include "test_model_support.hpp"

using namespace taskmoe;
using taskmoe_test::fixture_dir;
using taskmoe_test::fixture_reference;

namespace {

std::vector<int> ints(const nlohmann::json& j) { return j.get<std::vector<int>>(); }

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

}  // namespace

TEST_CASE("translate follows the reference for text input (greedy and beam)") {
  const translator& t = fixture_translator();
  const nlohmann::json ref = fixture_reference("task_target");
  for (const auto& c : ref["cases"]) {
    if (c["task"] != "en-de") continue;
    const std::string text = c["text"].get<std::string>();
    CAPTURE(text);
    if (tokenizer::sentencepiece::available) {
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

  SUBCASE("sampling with a seed is reproducible, and top-k 1 / tiny top-p equal greedy") {
    translation_options s = greedy12();
    s.sampling_topk = 0;
    s.sampling_temperature = 1.5f;
    s.seed = 1234;
    const auto a = t.translate_tokens(srcs, s), b = t.translate_tokens(srcs, s);
    for (std::size_t i = 0; i < srcs.size(); ++i) CHECK(a[i].hypotheses[0].tokens == b[i].hypotheses[0].tokens);
    s.sampling_topp = 1e-6f;
    const auto nucleus = t.translate_tokens(srcs, s);
    s.sampling_topp = 1.0f;
    s.sampling_topk = 1;
    const auto k1 = t.translate_tokens(srcs, s);
    for (std::size_t i = 0; i < srcs.size(); ++i) {
      CHECK(nucleus[i].hypotheses[0].tokens == greedy[i].hypotheses[0].tokens);
      CHECK(k1[i].hypotheses[0].tokens == greedy[i].hypotheses[0].tokens);
    }
    bool differs = false;  // different seeds give different samples somewhere
    for (std::uint64_t seed = 1; seed < 6 && !differs; ++seed) {
      s.sampling_topk = 0;
      s.seed = seed;
      const auto c = t.translate_tokens(srcs, s);
      for (std::size_t i = 0; i < srcs.size(); ++i) differs |= c[i].hypotheses[0].tokens != a[i].hypotheses[0].tokens;
    }
    CHECK(differs);
  }
  SUBCASE("no_repeat_ngram_size forbids repeated n-grams") {
    for (int n : {1, 2, 3}) {
      for (int beam : {1, 4}) {
        translation_options o = greedy12();
        o.beam_size = beam;
        o.no_repeat_ngram_size = n;
        for (const auto& r : t.translate_tokens(srcs, o)) {
          const auto& tok = r.hypotheses[0].tokens;
          std::set<std::vector<int>> seen;
          for (std::size_t i = 0; i + n <= tok.size(); ++i)
            CHECK(seen.insert(std::vector<int>(tok.begin() + static_cast<long>(i), tok.begin() + static_cast<long>(i) + n)).second);
        }
      }
    }
  }
  SUBCASE("min_decoding_length delays EOS") {
    for (int beam : {1, 4}) {
      translation_options o = greedy12();
      o.beam_size = beam;
      o.min_decoding_length = 9;
      for (const auto& r : t.translate_tokens(srcs, o)) CHECK(r.hypotheses[0].tokens.size() >= 9);
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
  SUBCASE("n-best lists are sorted by normalized score") {
    translation_options o = greedy12();
    o.beam_size = 5;
    o.num_hypotheses = 5;
    o.length_penalty = 0.6f;
    for (const auto& r : t.translate_tokens(srcs, o)) {
      REQUIRE(!r.hypotheses.empty());
      for (std::size_t h = 1; h < r.hypotheses.size(); ++h)
        CHECK(r.hypotheses[h - 1].normalized_score >= r.hypotheses[h].normalized_score);
    }
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
    if (tokenizer::sentencepiece::available) {
      std::string long_text;
      for (int i = 0; i < 200; ++i) long_text += "Open file ";
      CHECK(t.translate(long_text, o).hypotheses.size() == 1);
    }
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
