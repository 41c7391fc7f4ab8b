// The runtime model against the PyTorch reference's golden fixtures (tests/data/README.md), on
// every ISA path the CPU runs, and the extracted (.tmoe) path against the checkpoint-direct path.

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>

#include "test_model_support.hpp"

using namespace taskmoe;
using taskmoe_test::fixture_dir;
using taskmoe_test::fixture_reference;
using taskmoe_test::ints;
using taskmoe_test::fixture_setups;

namespace {

std::vector<kernels::isa> isa_paths() {
  std::vector<kernels::isa> v;
  for (auto i : {kernels::isa::generic, kernels::isa::avx2, kernels::isa::avx512})
    if (kernels::cpu_supports(i)) v.push_back(i);
  return v;
}

struct error_stats {
  double max_abs = 0, max_rel = 0;
  // |got - want| <= 1e-4 * max(|want|_inf, 1e-3)
  void compare(const std::vector<float>& got, const nlohmann::json& want, const char* what) {
    const auto& data = want["data"];
    REQUIRE(got.size() == data.size());
    double scale = 0;
    for (const auto& x : data) scale = std::max(scale, std::abs(x.get<double>()));
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const double w = data[i].get<double>(), e = std::abs(got[i] - w);
      worst = std::max(worst, e);
      max_rel = std::max(max_rel, e / std::max(std::abs(w), 1e-3 * scale + 1e-12));
    }
    max_abs = std::max(max_abs, worst);
    CHECK_MESSAGE(worst <= 1e-4 * std::max(scale, 1e-3), std::string(what) << ": max abs error " << worst
                                                              << " vs max |ref| " << scale);
  }
};

struct fixture_models {
  std::shared_ptr<const checkpoint> ck;
  std::map<std::string, std::unique_ptr<model::transformer>> by_task;
  model::model_options options{};
  const model::transformer& get(const std::string& task) {
    auto& m = by_task[task];
    if (!m) m = std::make_unique<model::transformer>(model::weight_source::from_checkpoint(ck, task), options);
    return *m;
  }
};

// The logits of every step of `inputs` (teacher forcing), concatenated.
std::vector<float> step_logits(const model::transformer& m, const model::encoder_output& enc,
                               const std::vector<int>& inputs) {
  decoding::model_session session(m, enc);
  std::vector<float> logits, all;
  for (int t : inputs) {
    session.step({t}, logits);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

decoding::search_options beam_options(const nlohmann::json& ref) {
  decoding::search_options o;
  o.beam_size = ref["beam_size"].get<int>();
  o.num_hypotheses = ref["num_hypotheses"].get<int>();
  o.length_penalty = ref["length_penalty"].get<float>();
  return o;
}

void check_hypotheses(const std::vector<decoding::hypothesis>& got, const nlohmann::json& want,
                      error_stats& err) {
  REQUIRE(got.size() == want.size());
  for (std::size_t h = 0; h < got.size(); ++h) {
    CHECK(got[h].tokens == ints(want[h]["tokens"]));
    const double s = want[h]["score"].get<double>();
    err.max_abs = std::max(err.max_abs, std::abs(got[h].score - s));
    CHECK(got[h].score == doctest::Approx(s).epsilon(1e-4));
    CHECK(got[h].normalized == doctest::Approx(want[h]["normalized"].get<double>()).epsilon(1e-4));
  }
}

}  // namespace

TEST_CASE("the model matches the PyTorch reference on every fixture and ISA path") {
  for (const auto& setup : fixture_setups()) {
    CAPTURE(setup);
    const nlohmann::json ref = fixture_reference(setup);
    fixture_models models{std::make_shared<const checkpoint>(fixture_dir(setup)), {}};
    const int max_len = std::min(ref["max_len"].get<int>(), models.ck->config().max_positions);
    for (kernels::isa path : isa_paths()) {
      const std::string isa_name = kernels::to_string(path);
      CAPTURE(isa_name);
      kernels::scoped_isa_override isa(path);
      error_stats enc_err, logit_err, score_err;
      for (const auto& c : ref["cases"]) {
        const std::string task = c["task"].get<std::string>();
        CAPTURE(c["text"].get<std::string>());
        const model::transformer& m = models.get(task);
        // task routes computed at load equal the reference's
        for (const auto& [name, route] : c["task_routes"].items()) {
          const stack s = name.rfind("encoder", 0) == 0 ? stack::encoder : stack::decoder;
          const auto spec = m.source().moe_layer(s, std::stoi(name.substr(name.find('.') + 1)));
          CHECK(spec.expert_ids == ints(route["experts"]));
          for (std::size_t j = 0; j < spec.gates.size(); ++j)
            CHECK(spec.gates[j] == doctest::Approx(route["gates"][j].get<double>()).epsilon(1e-6));
        }
        model::workspace ws;
        const auto enc = m.encode({ints(c["source_ids"])}, ws);
        enc_err.compare(enc.memory, c["encoder_output"], "encoder output");
        logit_err.compare(step_logits(m, enc, ints(c["decoder_input"])), c["logits"], "decoder logits");

        decoding::model_session g(m, enc);
        decoding::search_options go;
        const auto greedy = decoding::search(g, {{max_len, {}}}, go, m.config().bos_id, m.config().eos_id);
        CHECK(greedy[0][0].tokens == ints(c["greedy"]["tokens"]));
        CHECK(greedy[0][0].score == doctest::Approx(c["greedy"]["score"].get<double>()).epsilon(1e-4));
        score_err.max_abs = std::max(score_err.max_abs, std::abs(greedy[0][0].score - c["greedy"]["score"].get<double>()));

        decoding::model_session b(m, enc);
        const auto beams = decoding::search(b, {{max_len, {}}}, beam_options(ref), m.config().bos_id, m.config().eos_id);
        check_hypotheses(beams[0], c["beam4"], score_err);
      }
      MESSAGE(setup << " [" << isa_name << "] encoder max abs " << enc_err.max_abs
                    << " rel " << enc_err.max_rel << "; logits max abs " << logit_err.max_abs << " rel "
                    << logit_err.max_rel << "; score max abs " << score_err.max_abs);
    }
  }
}

TEST_CASE("batched decoding equals one sentence at a time, and finished rows leave the batch") {
  for (const auto& setup : fixture_setups()) {
    CAPTURE(setup);
    const nlohmann::json ref = fixture_reference(setup);
    fixture_models models{std::make_shared<const checkpoint>(fixture_dir(setup)), {}};
    const int max_len = std::min(ref["max_len"].get<int>(), models.ck->config().max_positions);
    std::map<std::string, std::vector<const nlohmann::json*>> by_task;
    for (const auto& c : ref["cases"]) by_task[c["task"].get<std::string>()].push_back(&c);
    for (const auto& [task, cases] : by_task) {
      const model::transformer& m = models.get(task);
      std::vector<std::vector<int>> srcs;
      for (const auto* c : cases) srcs.push_back(ints((*c)["source_ids"]));
      model::workspace ws;
      const auto enc = m.encode(srcs, ws);
      std::vector<decoding::sentence_constraints> cons(srcs.size(), {max_len, {}});
      decoding::model_session g(m, enc);
      const auto greedy = decoding::search(g, cons, decoding::search_options{}, m.config().bos_id, m.config().eos_id);
      decoding::model_session b(m, enc);
      const auto beams = decoding::search(b, cons, beam_options(ref), m.config().bos_id, m.config().eos_id);
      error_stats err;
      for (std::size_t i = 0; i < cases.size(); ++i) {
        CHECK(greedy[i][0].tokens == ints((*cases[i])["greedy"]["tokens"]));
        check_hypotheses(beams[i], (*cases[i])["beam4"], err);
      }
    }
  }
}

TEST_CASE("reorder permutes, repeats and drops rows: each row then decodes as its own history alone") {
  // The cache keeps every K/V slot where it was written and moves only the rows' slot lists; a
  // row's logits after any reorder sequence must equal a one-row state fed that row's history.
  // Both cache precisions: float16 rounds the same values the same way in either state.
  using precision = model::model_options::cache_precision;
  for (precision cache : {precision::float32, precision::float16})
  for (const auto& setup : fixture_setups()) {
    CAPTURE(setup);
    CAPTURE(cache == precision::float16);
    fixture_models models{std::make_shared<const checkpoint>(fixture_dir(setup)), {}, {}};
    models.options.kv_cache = cache;
    const nlohmann::json ref = fixture_reference(setup);
    const model::transformer& m = models.get(ref["cases"][0]["task"].get<std::string>());
    const int vocab = m.config().vocab_size, bos = m.config().bos_id;
    const int steps = std::min(20, m.config().max_positions);  // past the first 16-position slot list
    model::workspace ws;
    const std::vector<std::vector<int>> srcs{{5, 6, 7, 8}, {9, 10, 11}, {12, 13, 14, 15, 16, 17}};
    const auto enc = m.encode(srcs, ws);
    // rows: (sentence, token history); the reorders mimic beam search and dropping finished rows
    std::vector<int> sentence{0, 1, 2};
    std::vector<std::vector<int>> history(3, std::vector<int>{bos});
    model::decoder_state st = m.start_decoding(enc, sentence);
    std::vector<float> logits;
    std::mt19937 rng(7);
    for (int t = 0; t < steps; ++t) {
      const int rows = st.rows;
      std::vector<int> tokens;
      for (const auto& h : history) tokens.push_back(h.back());
      logits.resize(static_cast<std::size_t>(rows) * vocab);
      m.step(st, tokens.data(), logits.data());
      for (int r = 0; r < rows; ++r) {  // row r alone, from scratch
        model::decoder_state one = m.start_decoding(enc, {sentence[static_cast<std::size_t>(r)]});
        std::vector<float> want(static_cast<std::size_t>(vocab));
        for (int tok : history[static_cast<std::size_t>(r)]) m.step(one, &tok, want.data());
        for (int v = 0; v < vocab; ++v)
          REQUIRE(logits[static_cast<std::size_t>(r) * vocab + v] == doctest::Approx(want[static_cast<std::size_t>(v)]).epsilon(1e-5).scale(1.0));
      }
      // next rows: out of order with repeats (at most 5 rows), then a step that drops one row
      std::vector<int> next;
      if (t % 4 == 3 && rows > 1) {  // a finished row leaves: strictly increasing
        for (int i = 0; i < rows; ++i)
          if (i != t % rows) next.push_back(i);
      } else {
        for (int i = 0; i < std::min(5, rows + 1); ++i) next.push_back(static_cast<int>(rng() % static_cast<unsigned>(rows)));
      }
      m.reorder(st, next);
      std::vector<int> s2;
      std::vector<std::vector<int>> h2;
      for (int r : next) {
        s2.push_back(sentence[static_cast<std::size_t>(r)]);
        h2.push_back(history[static_cast<std::size_t>(r)]);
        h2.back().push_back(4 + static_cast<int>(rng() % static_cast<unsigned>(vocab - 4)));
      }
      sentence.swap(s2);
      history.swap(h2);
    }
  }
}

TEST_CASE("a float16 K/V cache stays within float16 rounding of the float32 one, and automatic picks it for int8 models only") {
  using precision = model::model_options::cache_precision;
  for (const auto& setup : fixture_setups()) {
    CAPTURE(setup);
    const nlohmann::json ref = fixture_reference(setup);
    auto ck = std::make_shared<const checkpoint>(fixture_dir(setup));
    fixture_models f32{ck, {}, {}}, f16{ck, {}, {}}, automatic{ck, {}, {}};
    f32.options.kv_cache = precision::float32;
    f16.options.kv_cache = precision::float16;
    for (const auto& c : ref["cases"]) {
      const std::string task = c["task"].get<std::string>();
      model::workspace ws;
      const auto enc = f32.get(task).encode({ints(c["source_ids"])}, ws);
      const std::vector<int> inputs = ints(c["decoder_input"]);
      const auto l32 = step_logits(f32.get(task), enc, inputs), l16 = step_logits(f16.get(task), enc, inputs),
                 lauto = step_logits(automatic.get(task), enc, inputs);
      CHECK(lauto == l32);  // a float32 checkpoint: automatic is float32, bit for bit
      double worst = 0, scale = 0;
      bool differs = false;
      for (std::size_t i = 0; i < l32.size(); ++i) {
        worst = std::max(worst, std::abs(double(l16[i]) - l32[i]));
        scale = std::max(scale, std::abs(double(l32[i])));
        differs = differs || l16[i] != l32[i];
      }
      CAPTURE(worst);
      CHECK(differs);                  // the float16 cache is really in use
      CHECK(worst <= 5e-3 * scale + 1e-3);  // keys/values within 2^-11: logits move far less than 1 %
    }
  }
  // An int8 model (quantized at load) gets float16 under automatic: its logits equal the explicit
  // float16 ones and differ from float32's.
  const auto setup = fixture_setups().front();
  const nlohmann::json ref = fixture_reference(setup);
  auto ck = std::make_shared<const checkpoint>(fixture_dir(setup));
  const auto& c = ref["cases"][0];
  const std::string task = c["task"].get<std::string>();
  std::vector<std::vector<float>> out;
  for (precision cache : {precision::automatic, precision::float16, precision::float32}) {
    model::model_options o;
    o.quantize_int8 = true;
    o.kv_cache = cache;
    const model::transformer m(model::weight_source::from_checkpoint(ck, task), o);
    model::workspace ws;
    const auto enc = m.encode({ints(c["source_ids"])}, ws);
    out.push_back(step_logits(m, enc, ints(c["decoder_input"])));
  }
  CHECK(out[0] == out[1]);
  CHECK(out[0] != out[2]);
}

TEST_CASE("an extracted .tmoe task runs exactly like the checkpoint it came from") {
  taskmoe_test::temp_dir dir;
  for (const auto& setup : fixture_setups()) {
    CAPTURE(setup);
    auto ck = std::make_shared<const checkpoint>(fixture_dir(setup));
    const nlohmann::json ref = fixture_reference(setup);
    for (const auto& t : ck->tasks()) {
      CAPTURE(t.name);
      const std::string path = dir.file(setup + "-" + t.name + ".tmoe");
      taskmoe_test::extract_task(*ck, t.name, path);
      model::transformer direct(model::weight_source::from_checkpoint(ck, t.name));
      model::transformer extracted(model::weight_source::from_tmoe(std::make_shared<const tmoe_file>(path)));
      for (bool fuse : {true, false}) {
        model::model_options mo;
        mo.fuse_qkv = fuse;
        model::transformer ex2(model::weight_source::from_tmoe(std::make_shared<const tmoe_file>(path)), mo);
        for (const auto& c : ref["cases"]) {
          const std::vector<int> src = ints(c["source_ids"]);
          model::workspace w1, w2, w3;
          const auto e1 = direct.encode({src}, w1), e2 = extracted.encode({src}, w2), e3 = ex2.encode({src}, w3);
          REQUIRE(e1.memory.size() == e2.memory.size());
          double worst = 0;
          for (std::size_t i = 0; i < e1.memory.size(); ++i)
            worst = std::max({worst, static_cast<double>(std::abs(e1.memory[i] - e2.memory[i])),
                              static_cast<double>(std::abs(e1.memory[i] - e3.memory[i]))});
          CHECK(worst <= 1e-5);
          decoding::model_session s1(direct, e1), s2(extracted, e2);
          const auto o = beam_options(ref);
          const auto h1 = decoding::search(s1, {{12, {}}}, o, 2, 3);
          const auto h2 = decoding::search(s2, {{12, {}}}, o, 2, 3);
          REQUIRE(h1[0].size() == h2[0].size());
          for (std::size_t h = 0; h < h1[0].size(); ++h) {
            CHECK(h1[0][h].tokens == h2[0][h].tokens);
            CHECK(h1[0][h].score == doctest::Approx(h2[0][h].score).epsilon(1e-5));
          }
        }
      }
    }
  }
}

TEST_CASE("the model rejects token ids outside the vocabulary and over-long sources") {
  auto ck = std::make_shared<const checkpoint>(fixture_dir("dense"));
  model::transformer m(model::weight_source::from_checkpoint(ck, ck->tasks()[0].name));
  model::workspace ws;
  CHECK_THROWS_AS(m.encode({{4, 9999, 3}}, ws), invalid_argument_error);
  CHECK_THROWS_AS(m.encode({{}}, ws), invalid_argument_error);
  CHECK_THROWS_AS(m.encode({std::vector<int>(static_cast<std::size_t>(m.config().max_positions) + 1, 5)}, ws),
                  invalid_argument_error);
  CHECK_THROWS_AS(model::transformer(model::weight_source::from_checkpoint(ck, "xx-yy")), invalid_argument_error);
}

namespace {

// Plain per-head attention (the runtime's original loops) as the reference.
void reference_attention(const float* q, int ldq, int lq, const float* k, int ldk, const float* v, int ldv,
                         int lk, int heads, int dh, int causal_offset, float* out, int ldo) {
  std::vector<double> s(static_cast<std::size_t>(lk) + 1);
  for (int i = 0; i < lq; ++i) {
    const int n = causal_offset < 0 ? lk : std::min(lk, i + 1 + causal_offset);
    for (int h = 0; h < heads; ++h) {
      double mx = -1e300, sum = 0;
      for (int j = 0; j < n; ++j) {
        double acc = 0;
        for (int c = 0; c < dh; ++c)
          acc += static_cast<double>(q[i * ldq + h * dh + c]) * k[j * ldk + h * dh + c];
        s[static_cast<std::size_t>(j)] = acc / std::sqrt(static_cast<double>(dh));
        mx = std::max(mx, s[static_cast<std::size_t>(j)]);
      }
      for (int j = 0; j < n; ++j) sum += s[static_cast<std::size_t>(j)] = std::exp(s[static_cast<std::size_t>(j)] - mx);
      for (int c = 0; c < dh; ++c) {
        double acc = 0;
        for (int j = 0; j < n; ++j) acc += s[static_cast<std::size_t>(j)] / sum * v[j * ldv + h * dh + c];
        out[i * ldo + h * dh + c] = n > 0 ? static_cast<float>(acc) : 0.0f;
      }
    }
  }
}

}  // namespace

TEST_CASE("multi-head attention matches a plain reference on awkward sizes and every ISA path") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (auto path : isa_paths()) {
    kernels::scoped_isa_override o(path);
    for (int heads : {1, 3, 8})
      for (int dh : {1, 7, 8, 33, 64})
        for (int lk : {0, 1, 7, 65}) {
          const int lq = 5, d = heads * dh, ld = d + 3;
          std::vector<float> q(static_cast<std::size_t>(lq) * ld), k(static_cast<std::size_t>(lk + 1) * ld),
              v(k.size()), got(static_cast<std::size_t>(lq) * ld, 42.0f), want(got);
          for (auto* x : {&q, &k, &v})
            for (auto& e : *x) e = dist(rng);
          std::vector<float> scratch;
          for (int causal : {-1, 2}) {
            layers::multi_head_attention(q.data(), ld, lq, k.data(), ld, v.data(), ld, lk, heads, dh, causal,
                                         got.data(), ld, scratch);
            reference_attention(q.data(), ld, lq, k.data(), ld, v.data(), ld, lk, heads, dh, causal,
                                want.data(), ld);
            for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(std::fabs(got[i] - want[i]) <= 1e-5f);
          }
        }
  }
}

TEST_CASE("activation quantization is bit-identical on every ISA path") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  for (int cols : {1, 7, 31, 32, 33, 63, 65, 512, 1000}) {
    std::vector<float> x(static_cast<std::size_t>(3) * cols);
    for (auto& e : x) e = dist(rng);
    x[0] = 0.5f;  // exact .5 ties after scaling in some rows
    for (int c = 0; c < cols; ++c) x[static_cast<std::size_t>(2) * cols + c] = 0.0f;  // all-zero row
    std::vector<std::int8_t> want(x.size());
    std::vector<float> want_s(3);
    {
      kernels::scoped_isa_override o(kernels::isa::generic);
      kernels::quantize_rows_int8(x.data(), 3, cols, want.data(), want_s.data());
    }
    for (auto path : isa_paths()) {
      kernels::scoped_isa_override o(path);
      std::vector<std::int8_t> got(x.size());
      std::vector<float> got_s(3);
      kernels::quantize_rows_int8(x.data(), 3, cols, got.data(), got_s.data());
      REQUIRE(got == want);
      REQUIRE(got_s == want_s);
      std::vector<float> bad = x;
      bad[static_cast<std::size_t>(cols) - 1] = std::nanf("");
      REQUIRE_THROWS_AS(kernels::quantize_rows_int8(bad.data(), 3, cols, got.data(), got_s.data()),
                        invalid_argument_error);
    }
  }
}

TEST_CASE("max_positions 2^31 - 1 with sinusoidal positions loads; rows past the table are the formula (fuzz_config)") {
  // tests/fuzz/regressions/config/huge-max-positions-sinusoidal: the model used to precompute
  // max_positions rows (64 GB here) at load.
  taskmoe_test::temp_dir dir;
  model_config c = taskmoe_test::tiny_config();
  c.max_positions = 2147483647;
  REQUIRE(c.positions == positional_encoding::sinusoidal);
  taskmoe_test::write_checkpoint(dir.path(), c, taskmoe_test::tiny_tasks());
  const auto ck = std::make_shared<const checkpoint>(dir.path());
  const model::transformer m(model::weight_source::from_checkpoint(ck, "en-de"));
  const int n = model::sinusoidal_table_rows + 100;  // crosses the precomputed rows
  model::workspace ws;
  const model::encoder_output enc = m.encode({std::vector<int>(static_cast<std::size_t>(n), 5)}, ws);
  REQUIRE(enc.memory.size() == static_cast<std::size_t>(n) * c.d_model);
  for (float x : enc.memory) REQUIRE(std::isfinite(x));
  const std::vector<float> table = model::sinusoidal_positions(n, c.d_model);
  std::vector<float> row(static_cast<std::size_t>(c.d_model));
  model::sinusoidal_position(n - 1, c.d_model, row.data());
  for (int i = 0; i < c.d_model; ++i) CHECK(row[i] == table[static_cast<std::size_t>(n - 1) * c.d_model + i]);
}

TEST_CASE("a restricted output projection (shortlist) gives the full logits' columns bit for bit") {
  // Layer level, each way a layer can hold its weights: int8 rows, f32 rows run as an int8 copy
  // quantized at load, f32 packed. Awkward sizes: 37 rows of 61 inputs, subsets across panels.
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int out = 37, in = 61, m = 5;
  std::vector<float> w(static_cast<std::size_t>(out) * in), bias(out), x(static_cast<std::size_t>(m) * in);
  for (auto& v : w) v = u(rng);
  for (auto& v : bias) v = u(rng);
  for (auto& v : x) v = u(rng);
  std::vector<std::int8_t> q(w.size());
  std::vector<float> scales(out);
  kernels::quantize_rows_int8(w.data(), out, in, in, q.data(), in, scales.data());
  layers::linear i8, f32_as_int8, f32;
  i8.weight = weight_matrix{out, in, nullptr, q.data(), scales.data()};
  f32_as_int8.weight = f32.weight = weight_matrix{out, in, w.data(), nullptr, nullptr};
  i8.bias = f32_as_int8.bias = f32.bias = bias.data();
  i8.pack();
  f32.pack();
  f32_as_int8.packed = std::make_shared<const kernels::packed_int8>(kernels::quantize_pack(w.data(), out, in, in, bias.data()));
  const std::vector<std::vector<int>> subsets = {{0}, {36}, {3, 17, 18, 35}, {20, 1, 16}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}};
  for (const layers::linear* l : {&i8, &f32_as_int8, &f32}) {
    std::vector<float> full(static_cast<std::size_t>(m) * out);
    l->forward(x.data(), m, in, full.data(), out);
    for (const auto& ids : subsets) {
      CAPTURE(ids.size());
      const layers::linear s = l->select_rows(ids);
      REQUIRE(s.out_features() == static_cast<int>(ids.size()));
      const int n = static_cast<int>(ids.size());
      std::vector<float> part(static_cast<std::size_t>(m) * n);
      s.forward(x.data(), m, in, part.data(), n);
      for (int r = 0; r < m; ++r)
        for (int j = 0; j < n; ++j) CHECK(part[r * n + j] == full[r * out + ids[j]]);
    }
    CHECK_THROWS_AS(l->select_rows({out}), invalid_argument_error);
    CHECK_THROWS_AS(l->select_rows({-1}), invalid_argument_error);
  }
  // Model level, float32 and int8: a session restricted to some ids steps exactly like the full
  // one on those columns, and maps its tokens to the model's ids.
  const auto setup = fixture_setups().front();
  const nlohmann::json ref = fixture_reference(setup);
  auto ck = std::make_shared<const checkpoint>(fixture_dir(setup));
  const auto& c = ref["cases"][0];
  for (bool int8 : {false, true}) {
    CAPTURE(int8);
    model::model_options o;
    o.quantize_int8 = int8;
    const model::transformer mdl(model::weight_source::from_checkpoint(ck, c["task"].get<std::string>()), o);
    model::workspace ws;
    const auto enc = mdl.encode({ints(c["source_ids"])}, ws);
    const int v = mdl.config().vocab_size;
    std::vector<int> ids;
    for (int t = 0; t < v; t += 7) ids.push_back(t);
    ids.push_back(v - 1);
    decoding::model_session full(mdl, enc), part(mdl, enc, ids);
    REQUIRE(part.vocab() == static_cast<int>(ids.size()));
    CHECK(part.to_id(1) == 7);
    std::vector<float> lf, lp;
    for (int step = 0; step < 3; ++step) {
      full.step({ids[static_cast<std::size_t>(step)]}, lf);
      part.step({step}, lp);  // the same model token: ids[step]
      for (std::size_t j = 0; j < ids.size(); ++j) CHECK(lp[j] == lf[static_cast<std::size_t>(ids[j])]);
    }
  }
}
