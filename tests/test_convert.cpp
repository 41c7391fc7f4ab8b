// taskmoe::plan_task / convert_task (include/taskmoe/convert/convert.hpp): extraction on every
// golden fixture, each quantization, f16/bf16 input, atomicity and error reporting.
#include "test_model_support.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <cstring>
#include <limits>
#include <filesystem>
#include <map>

using namespace taskmoe;
using namespace taskmoe_test;

namespace {

// reference.json's task_routes, per task: "encoder.1" -> (experts, gates).
std::map<std::string, nlohmann::json> reference_routes(const std::string& setup) {
  const nlohmann::json ref = nlohmann::json::parse(read_file(fixture_dir(setup) + "/reference.json"));
  std::map<std::string, nlohmann::json> r;
  for (const auto& c : ref.at("cases"))
    r[c.at("task").get<std::string>()] = c.value("task_routes", nlohmann::json::object());
  return r;
}

convert_options options(quantization_scheme q) {
  convert_options o;
  o.quantization = q;
  o.created = "2025-01-31T12:00:00Z";
  return o;
}

std::size_t files_in(const std::string& dir) {
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++n;
  }
  return n;
}

// The checkpoint rows that output row r of `name` comes from (experts sliced on axis 0).
std::vector<float> expected_f32(const checkpoint& ck, const tmoe_file& f, const std::string& name) {
  const tensor_view& src = ck.tensor(name);
  const std::vector<float> all = to_f32(src);
  const auto dot = name.find(".layers.");
  const bool sliced = name.find(".moe.experts.") != std::string::npos &&
                      f.require(name).shape[0] != src.shape[0];
  if (!sliced) return all;
  const stack s = name.rfind("encoder", 0) == 0 ? stack::encoder : stack::decoder;
  const int layer = std::stoi(name.substr(dot + 8));
  std::vector<int> experts;
  for (const auto& l : f.metadata().moe_layers(s))
    if (l.layer == layer) experts = l.experts;
  const std::size_t per = static_cast<std::size_t>(src.numel() / src.shape[0]);
  std::vector<float> out;
  for (int e : experts)
    out.insert(out.end(), all.begin() + static_cast<std::ptrdiff_t>(e * per),
               all.begin() + static_cast<std::ptrdiff_t>((e + 1) * per));
  return out;
}

}  // namespace

TEST_CASE("float32 extraction on every fixture: gates equal the reference, weights bit-exact") {
  for (const std::string& setup : fixture_setups()) {
    CAPTURE(setup);
    const checkpoint ck(fixture_dir(setup));
    const auto routes = reference_routes(setup);
    const model_config& c = ck.config();
    temp_dir out;
    for (const auto& task : ck.tasks()) {
      CAPTURE(task.name);
      const conversion_plan plan = plan_task(ck, task.name, options(quantization_scheme::float32));
      const std::string path = out.file(task.name + ".tmoe");
      const convert_result r = convert_task(ck, task.name, options(quantization_scheme::float32), path);
      CHECK(r.file_size == plan.file_size);
      CHECK(std::filesystem::file_size(path) == plan.file_size);
      const tmoe_file f(path);
      const tmoe_metadata& m = f.metadata();
      CHECK(m.task.name == task.name);
      CHECK(m.task.target_tag == task.target_tag);
      CHECK(m.task_id == ck.task_id(task.name));
      CHECK(m.source_hash == ck.content_hash_hex());
      CHECK(m.source_name == setup);
      CHECK(m.created == "2025-01-31T12:00:00Z");
      CHECK(m.quantization.scheme == quantization_scheme::float32);
      CHECK(m.quantization.tensors.empty());
      CHECK(f.require(tmoe_tokenizer_tensor).byte_size == ck.sentencepiece_model().size());

      // Kept experts and gates: the PyTorch reference's task routes.
      for (stack s : {stack::encoder, stack::decoder}) {
        const std::string sn(stack_name(s));
        const auto& layers = m.moe_layers(s);
        REQUIRE(layers.size() == (c.has_moe ? c.moe(s).layers.size() : 0u));
        for (const auto& l : layers) {
          const std::string key = sn + "." + std::to_string(l.layer);
          CAPTURE(key);
          if (is_task_routed(l.route)) {
            REQUIRE(routes.count(task.name));
            const auto& ref = routes.at(task.name).at(key);
            CHECK(l.experts == ref.at("experts").get<std::vector<int>>());
            const auto g = ref.at("gates").get<std::vector<float>>();
            REQUIRE(l.gates.size() == g.size());
            for (std::size_t j = 0; j < g.size(); ++j) CHECK(l.gates[j] == doctest::Approx(g[j]).epsilon(1e-5));
            CHECK_FALSE(f.contains(sn + ".layers." + std::to_string(l.layer) + ".moe.router.weight"));
          } else {
            CHECK(l.experts.size() == static_cast<std::size_t>(c.num_experts));
            CHECK(l.gates.empty());
            CHECK(f.contains(sn + ".layers." + std::to_string(l.layer) + ".moe.router.weight"));
          }
        }
        CHECK_FALSE(f.contains(sn + ".task_embedding.weight"));
      }

      // Every tensor: shape and bytes equal the checkpoint (slice) exactly.
      std::size_t compared = 0;
      for (const auto& name : f.tensor_names()) {
        if (name == tmoe_tokenizer_tensor) continue;
        CAPTURE(name);
        const tensor_view& v = f.require(name);
        REQUIRE(v.type == dtype::f32);
        const std::vector<float> want = expected_f32(ck, f, name);
        REQUIRE(v.numel() == want.size());
        CHECK(std::memcmp(v.data, want.data(), want.size() * 4) == 0);
        const tensor_shape& src = ck.tensor(name).shape;
        for (std::size_t d = 1; d < src.ndim(); ++d) CHECK(v.shape[d] == src[d]);
        ++compared;
      }
      CHECK(compared + 1 == plan.tensors.size());
    }
    CHECK(files_in(out.path()) == ck.tasks().size());  // no temporary files left
  }
}

TEST_CASE("float16 and bfloat16: matrices converted within half-precision rounding, the rest f32") {
  const checkpoint ck(fixture_dir("task_pair"));  // unshared embeddings, learned positions
  for (quantization_scheme q : {quantization_scheme::float16, quantization_scheme::bfloat16}) {
    CAPTURE(quantization_name(q));
    temp_dir out;
    const std::string path = out.file("x.tmoe");
    const conversion_plan plan = plan_task(ck, "de-en", options(q));
    convert_task(ck, "de-en", options(q), path);
    const tmoe_file f(path);
    CHECK(std::filesystem::file_size(path) == plan.file_size);
    CHECK(f.metadata().quantization.scheme == q);
    const dtype half = q == quantization_scheme::float16 ? dtype::f16 : dtype::bf16;
    const float rel = q == quantization_scheme::float16 ? 1.0f / 2048 : 1.0f / 256;  // half an ulp
    CHECK(f.require("decoder.output_projection.weight").type == half);
    CHECK(f.require("encoder.layers.0.self_attn.q_proj.weight").type == half);
    CHECK(f.require("encoder.layers.1.moe.experts.fc1.weight").type == half);
    CHECK(f.require("encoder.layers.0.ffn.fc2.weight").type == half);
    CHECK(f.require("encoder.layers.0.ffn.fc2.bias").type == dtype::f32);
    CHECK(f.require("encoder.embed_positions.weight").type == dtype::f32);
    CHECK(f.require("decoder.layers.0.final_layer_norm.weight").type == dtype::f32);
    for (const auto& name : f.tensor_names()) {
      if (name == tmoe_tokenizer_tensor) continue;
      CAPTURE(name);
      const std::vector<float> want = expected_f32(ck, f, name);
      const std::vector<float> got = to_f32(f.require(name));
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < got.size(); ++i)
        // Relative bound for normal numbers; f16 subnormals round to a multiple of 2^-24.
        CHECK(std::fabs(got[i] - want[i]) <= std::fabs(want[i]) * rel + 3e-8f);
    }
  }
}

TEST_CASE("int8: FFN, expert, attention and output-projection matrices per-row quantized, error <= scale / 2; embeddings float16") {
  for (const char* setup : {"task_target", "token_token"}) {
    CAPTURE(setup);
    const checkpoint ck(fixture_dir(setup));
    temp_dir out;
    const std::string path = out.file("x.tmoe");
    const conversion_plan plan = plan_task(ck, "en-de", options(quantization_scheme::int8));
    convert_task(ck, "en-de", options(quantization_scheme::int8), path);
    const tmoe_file f(path);
    CHECK(std::filesystem::file_size(path) == plan.file_size);
    const auto& q = f.metadata().quantization;
    CHECK(q.scheme == quantization_scheme::int8);
    std::size_t i8_count = 0;
    for (const auto& name : f.tensor_names()) {
      if (name == tmoe_tokenizer_tensor) continue;
      CAPTURE(name);
      const tensor_view& v = f.require(name);
      const bool listed = std::find(q.tensors.begin(), q.tensors.end(), name) != q.tensors.end();
      const bool matrix = name.find("_proj.weight") != std::string::npos ||
                          name.find(".fc1.weight") != std::string::npos ||
                          name.find(".fc2.weight") != std::string::npos ||
                          name.find("output_projection.weight") != std::string::npos;
      const bool table = name.find("embed_tokens.weight") != std::string::npos;
      CHECK(listed == matrix);
      CHECK((v.type == dtype::i8) == matrix);
      CHECK((v.type == dtype::f16) == table);
      const std::vector<float> want = expected_f32(ck, f, name);
      if (table) {  // rounded to nearest float16
        const auto* h = v.data_as<std::uint16_t>();
        std::size_t wrong = 0;
        for (std::size_t i = 0; i < want.size(); ++i) wrong += h[i] != taskmoe::detail::f32_to_f16(want[i]);
        CHECK(wrong == 0);
        continue;
      }
      if (v.type != dtype::i8) {
        CHECK(std::memcmp(v.data, want.data(), want.size() * 4) == 0);  // stays exact
        continue;
      }
      ++i8_count;
      const std::uint64_t row = v.row_length();
      REQUIRE(v.scale_count * row == want.size());
      const std::vector<float> got = to_f32(v);
      for (std::size_t i = 0; i < got.size(); ++i) {
        const float scale = v.scales[i / row];
        CHECK(std::fabs(got[i] - want[i]) <= scale * 0.5f * (1 + 1e-5f) + 1e-12f);
      }
      // The largest |w| of each row maps to +-127.
      for (std::uint64_t r = 0; r < v.scale_count; ++r) {
        int amax = 0;
        for (std::uint64_t i = 0; i < row; ++i)
          amax = std::max(amax, std::abs(static_cast<int>(static_cast<signed char>(v.data[r * row + i]))));
        CHECK(amax == 127);
      }
    }
    CHECK(i8_count == q.tensors.size());
    CHECK(f.require("embed_tokens.weight").type == dtype::f16);
  }
  // Options: no attention; float32 embeddings (taskmoe-convert --embeddings float32) keep the
  // output projection float32 too, int8 ones quantize the tables as well.
  const checkpoint ck(fixture_dir("dense"));
  for (embedding_precision e : {embedding_precision::float32, embedding_precision::int8}) {
    CAPTURE(embedding_precision_names[static_cast<int>(e)]);
    convert_options o = options(quantization_scheme::int8);
    o.int8_attention = false;
    o.embeddings = e;
    temp_dir out;
    convert_task(ck, "en-de", o, out.file("x.tmoe"));
    const tmoe_file f(out.file("x.tmoe"));
    const dtype want = e == embedding_precision::int8 ? dtype::i8 : dtype::f32;
    CHECK(f.require("decoder.layers.0.self_attn.q_proj.weight").type == dtype::f32);
    CHECK(f.require("decoder.output_projection.weight").type == want);
    CHECK(f.require("encoder.embed_tokens.weight").type == want);
    CHECK(f.require("decoder.embed_tokens.weight").type == want);
    CHECK(f.require("decoder.layers.0.ffn.fc1.weight").type == dtype::i8);
  }
  CHECK(parse_embedding_precision("f16") == embedding_precision::float16);
  CHECK(parse_embedding_precision("int8") == embedding_precision::int8);
  CHECK(parse_embedding_precision("float32") == embedding_precision::float32);
  CHECK_THROWS_WITH_AS(parse_embedding_precision("int4"), doctest::Contains("expected float16, int8 or float32"),
                       invalid_argument_error);
}

TEST_CASE("f16 and bf16 checkpoints: float32 output is their exact widening") {
  for (dtype t : {dtype::f16, dtype::bf16}) {
    CAPTURE(dtype_name(t));
    temp_dir dir;
    checkpoint_edit e;
    e.type = t;
    write_checkpoint(dir.path(), tiny_config(routing::task_target, routing::token), tiny_tasks(), e);
    const checkpoint ck(dir.path());
    temp_dir out;
    convert_task(ck, "en-fr", options(quantization_scheme::float32), out.file("a.tmoe"));
    const tmoe_file f(out.file("a.tmoe"));
    for (const auto& name : f.tensor_names()) {
      if (name == tmoe_tokenizer_tensor) continue;
      CAPTURE(name);
      const std::vector<float> want = expected_f32(ck, f, name);
      CHECK(std::memcmp(f.require(name).data, want.data(), want.size() * 4) == 0);
    }
    CHECK(f.require("encoder.layers.1.moe.experts.fc1.weight").shape == tensor_shape{2, 12, 8});
    CHECK(f.require("decoder.layers.1.moe.experts.fc1.weight").shape == tensor_shape{4, 12, 8});
    // The same input to float16 is a no-op round trip for f16 data.
    if (t == dtype::f16) {
      convert_task(ck, "en-fr", options(quantization_scheme::float16), out.file("h.tmoe"));
      const tmoe_file h(out.file("h.tmoe"));
      const tensor_view& a = h.require("decoder.layers.0.ffn.fc1.weight");
      const tensor_view& b = ck.tensor("decoder.layers.0.ffn.fc1.weight");
      CHECK(std::memcmp(a.data, b.data, b.byte_size) == 0);
    }
  }
}

TEST_CASE("atomicity: a conversion failing midway leaves neither the file nor a temporary") {
  temp_dir dir;
  const model_config c = tiny_config();
  write_checkpoint(dir.path(), c, tiny_tasks());
  // Poison the last layer's feed-forward (written late in the file) with a NaN.
  {
    std::string bytes = read_file(dir.file("model.safetensors"));
    // Locate the tensor by offset relative to the data section start.
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const nlohmann::json h = nlohmann::json::parse(bytes.substr(8, static_cast<std::size_t>(n)));
    const std::size_t begin = 8 + static_cast<std::size_t>(n) +
                              h.at("decoder.layers.0.ffn.fc2.weight").at("data_offsets")[0].get<std::size_t>();
    poke(bytes, begin + 4 * 7, std::nanf(""));
    write_file(dir.file("model.safetensors"), bytes);
  }
  checkpoint_options co;
  co.check_finite = false;  // let the converter find it, after it has written other tensors
  const checkpoint ck(dir.path(), co);
  temp_dir out;
  const std::string path = out.file("en-de.tmoe");
  expect_format_error([&] { convert_task(ck, "en-de", options(quantization_scheme::float32), path); },
                      dir.path(), "tensor 'decoder.layers.0.ffn.fc2.weight' has a non-finite value at element 7");
  CHECK(files_in(out.path()) == 0);
  for (quantization_scheme q : {quantization_scheme::int8, quantization_scheme::float16}) {
    CHECK_THROWS_AS(convert_task(ck, "en-de", options(q), path), format_error);
    CHECK(files_in(out.path()) == 0);
  }

  // A progress callback that throws (an interrupted conversion): nothing left either.
  const checkpoint good(fixture_dir("task_target"));
  convert_options o = options(quantization_scheme::int8);
  std::size_t calls = 0;
  o.progress = [&calls](const convert_progress& p) {
    CHECK(p.tensor_index == calls + 1);
    CHECK(p.bytes_done <= p.bytes_total);
    if (++calls == 10) throw std::runtime_error("interrupted");
  };
  CHECK_THROWS_WITH(convert_task(good, "de-en", o, path), "interrupted");
  CHECK(calls == 10);
  CHECK(files_in(out.path()) == 0);

  // An existing file is kept unless overwrite is set; then it is replaced.
  write_file(path, "precious");
  CHECK_THROWS_AS(convert_task(good, "de-en", options(quantization_scheme::int8), path), io_error);
  CHECK(read_file(path) == "precious");
  convert_options force = options(quantization_scheme::int8);
  force.overwrite = true;
  convert_task(good, "de-en", force, path);
  CHECK(tmoe_file(path).metadata().task.name == "de-en");
  CHECK(files_in(out.path()) == 1);
}

TEST_CASE("errors: unknown task lists the valid ones, missing folder, non-finite router, f16 overflow") {
  const checkpoint ck(fixture_dir("task_target"));
  temp_dir out;
  CHECK_THROWS_WITH_AS(plan_task(ck, "xx-yy"),
                       "unknown task 'xx-yy' (checkpoint has: en-de, de-en, en-fr, fr-en)",
                       invalid_argument_error);
  CHECK_THROWS_WITH_AS(convert_task(ck, "de-en", {}, out.file("nope/x.tmoe")),
                       (out.file("nope/x.tmoe") + ": output folder '" + out.file("nope") + "' does not exist").c_str(),
                       io_error);
  CHECK(parse_quantization("bf16") == quantization_scheme::bfloat16);
  CHECK_THROWS_AS(parse_quantization("int4"), invalid_argument_error);

  // NaN in the router of a task-routed layer: the gate cannot be computed; named error.
  {
    temp_dir dir;
    checkpoint_edit e;
    write_checkpoint(dir.path(), tiny_config(), tiny_tasks(), e);
    std::string bytes = read_file(dir.file("model.safetensors"));
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const nlohmann::json h = nlohmann::json::parse(bytes.substr(8, static_cast<std::size_t>(n)));
    const std::size_t begin = 8 + static_cast<std::size_t>(n) +
                              h.at("encoder.layers.1.moe.router.weight").at("data_offsets")[0].get<std::size_t>();
    poke(bytes, begin, std::numeric_limits<float>::infinity());
    write_file(dir.file("model.safetensors"), bytes);
    checkpoint_options co;
    co.check_finite = false;
    const checkpoint bad(dir.path(), co);
    expect_format_error([&] { plan_task(bad, "de-en"); }, dir.path(),
                        "tensor 'encoder.layers.1.moe.router.weight' has a non-finite value at element 0");
  }
  // A weight too large for float16.
  {
    temp_dir dir;
    write_checkpoint(dir.path(), tiny_config(), tiny_tasks());
    std::string bytes = read_file(dir.file("model.safetensors"));
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const nlohmann::json h = nlohmann::json::parse(bytes.substr(8, static_cast<std::size_t>(n)));
    const std::size_t begin = 8 + static_cast<std::size_t>(n) +
                              h.at("decoder.layers.0.ffn.fc1.weight").at("data_offsets")[0].get<std::size_t>();
    poke(bytes, begin + 4, 1e6f);
    write_file(dir.file("model.safetensors"), bytes);
    const checkpoint big(dir.path());
    temp_dir o2;
    CHECK_THROWS_WITH_AS(convert_task(big, "de-en", options(quantization_scheme::float16), o2.file("x.tmoe")),
                         doctest::Contains("overflows f16 (use bfloat16 or float32)"), format_error);
    CHECK(files_in(o2.path()) == 0);
    convert_task(big, "de-en", options(quantization_scheme::bfloat16), o2.file("x.tmoe"));  // fine
  }
}

TEST_CASE("int8 files decode through the packed kernels: logits track float32 on every ISA and routing") {
  // The runtime packs every int8 matrix at load, fuses a task's kept experts into one FFN and
  // quantizes the float output projection: a wrong layout, gate or epilogue shows up here as
  // logits far from the float32 file's, or as ISA paths that disagree. With the weights full and
  // narrow (kernels::int8_weights; automatic would pick per ISA): each alike on every ISA.
  for (const char* setup : {"dense", "task_target", "task_pair", "token_task"})
  for (const kernels::int8_weights weights : {kernels::int8_weights::full, kernels::int8_weights::narrow}) {
    CAPTURE(setup);
    CAPTURE(std::string(kernels::to_string(weights)));
    const checkpoint ck(fixture_dir(setup));
    temp_dir out;
    const std::string p8 = out.file("i8.tmoe"), p8i = out.file("i8-int8-embeddings.tmoe"),
                      p8f = out.file("i8-f32-embeddings.tmoe"), p32 = out.file("f32.tmoe");
    convert_task(ck, "en-de", options(quantization_scheme::int8), p8);  // float16 embeddings
    convert_options e8 = options(quantization_scheme::int8), e32 = e8;
    e8.embeddings = embedding_precision::int8;
    e32.embeddings = embedding_precision::float32;  // the output projection float32 in the file
    convert_task(ck, "en-de", e8, p8i);
    convert_task(ck, "en-de", e32, p8f);
    convert_task(ck, "en-de", options(quantization_scheme::float32), p32);
    const int vocab = ck.config().vocab_size, eos = ck.config().eos_id;
    // path empty: the checkpoint itself, quantized at load (model_options::quantize_int8).
    const auto logits = [&](const std::string& path, bool int8_output) {
      model::model_options mo;
      mo.int8_output_projection = int8_output;
      mo.int8_weights = weights;
      mo.quantize_int8 = path.empty();
      const model::transformer m(
          path.empty() ? model::weight_source::from_checkpoint(std::make_shared<const checkpoint>(fixture_dir(setup)), "en-de")
                       : model::weight_source::from_tmoe(std::make_shared<const tmoe_file>(path)), mo);
      model::workspace ws;
      const std::vector<std::vector<int>> src{{5, 6, 7, 8, 9, 10, 11, eos}, {12, 13, eos}};
      const model::encoder_output enc = m.encode(src, ws);
      model::decoder_state st = m.start_decoding(enc, {0, 1});
      std::vector<float> all;
      std::vector<float> step(2 * static_cast<std::size_t>(vocab));
      int tokens[2] = {ck.config().bos_id, ck.config().bos_id};
      for (int s = 0; s < 4; ++s) {
        m.step(st, tokens, step.data());
        all.insert(all.end(), step.begin(), step.end());
        tokens[0] = 14 + s;
        tokens[1] = 20 + s;
      }
      return all;
    };
    const auto max_abs = [](const std::vector<float>& v) {
      float m = 0;
      for (float x : v) m = std::max(m, std::fabs(x));
      return m;
    };
    const auto max_diff = [](const std::vector<float>& a, const std::vector<float>& b) {
      REQUIRE(a.size() == b.size());
      float m = 0;
      for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
      return m;
    };
    const std::vector<float> ref = logits(p32, true);  // float32 file: the option changes nothing
    std::vector<float> first;
    for (kernels::isa isa : {kernels::isa::generic, kernels::isa::avx2, kernels::isa::avx512}) {
      if (!kernels::cpu_supports(isa)) continue;
      CAPTURE(std::string(kernels::to_string(isa)));
      kernels::scoped_isa_override force(isa);
      const std::vector<float> q = logits(p8, true), qi = logits(p8i, true), qf = logits(p8f, true),
                               qf_f32_out = logits(p8f, false);
      const float scale = max_abs(ref), d = max_diff(q, ref), di = max_diff(qi, ref), df = max_diff(qf, ref),
                  df_f32_out = max_diff(qf_f32_out, ref);
      MESSAGE(std::string(setup) << " [" << std::string(kernels::to_string(isa)) << ", " << kernels::to_string(weights)
                    << " weights] int8 vs float32 logits: max abs diff " << d << " (int8 embeddings: " << di
                    << ", float32 embeddings: " << df << ", and float output projection: " << df_f32_out << "), max |logit| " << scale);
      CHECK(d <= 0.05f * scale);
      CHECK(di <= 0.05f * scale);
      CHECK(df <= 0.05f * scale);
      CHECK(df_f32_out <= 0.05f * scale);
      CHECK(max_diff(q, qi) > 0.0f);           // the float16 tables are really looked up
      CHECK(max_diff(qf, qf_f32_out) > 0.0f);  // a float output projection really ran int8 when asked
      CHECK(max_diff(qi, logits(p8i, false)) == 0.0f);  // an int8 one in the file runs int8 regardless
      CHECK(max_diff(q, logits("", true)) == 0.0f);     // the checkpoint quantized at load: the same model
      if (first.empty()) {
        first = q;
      } else {
        // The packed GEMMs are bit-identical across ISAs; attention and norms round differently.
        CHECK(max_diff(q, first) <= 1e-4f * scale);
      }
    }
  }
}

TEST_CASE("int8 weights: narrow requantizes the file's rows, automatic follows the CPU's kernel") {
  CHECK(kernels::int8_weights_from_string("auto") == kernels::int8_weights::automatic);
  CHECK(kernels::int8_weights_from_string("full") == kernels::int8_weights::full);
  CHECK(kernels::int8_weights_from_string("narrow") == kernels::int8_weights::narrow);
  CHECK_THROWS_AS(kernels::int8_weights_from_string("7bit"), invalid_argument_error);
  for (kernels::int8_weights w : {kernels::int8_weights::full, kernels::int8_weights::narrow})
    CHECK(kernels::resolve_int8_weights(w) == w);
  const checkpoint ck(fixture_dir("dense"));
  temp_dir out;
  const std::string p8 = out.file("i8.tmoe");
  convert_task(ck, "en-de", options(quantization_scheme::int8), p8);
  const auto logits = [&](kernels::int8_weights w) {
    model::model_options mo;
    mo.int8_weights = w;
    const model::transformer m(model::weight_source::from_tmoe(std::make_shared<const tmoe_file>(p8)), mo);
    model::workspace ws;
    const model::encoder_output enc = m.encode({{5, 6, 7, 8, ck.config().eos_id}}, ws);
    model::decoder_state st = m.start_decoding(enc, {0});
    std::vector<float> step(static_cast<std::size_t>(ck.config().vocab_size));
    int token = ck.config().bos_id;
    m.step(st, &token, step.data());
    return step;
  };
  // The fixture's quantized rows reach |w| = 127: narrowing changes them, so the logits move.
  const std::vector<float> full = logits(kernels::int8_weights::full), narrow = logits(kernels::int8_weights::narrow);
  CHECK(full != narrow);
  for (kernels::isa isa : {kernels::isa::generic, kernels::isa::avx2, kernels::isa::avx512}) {
    if (!kernels::cpu_supports(isa)) continue;
    CAPTURE(std::string(kernels::to_string(isa)));
    kernels::scoped_isa_override force(isa);
    for (const bool avxvnni : {true, false}) {
      CAPTURE(avxvnni);
      kernels::scoped_int8_avxvnni_override vnni(avxvnni);
      const kernels::cpu_features& f = kernels::detect_cpu_features();
      // Narrow exactly where the AVX2 kernel without VNNI runs, on CPUs with two multiply pipes.
      const bool narrow_kernel = isa == kernels::isa::avx2 && !(avxvnni && f.avxvnni) && !f.one_multiply_pipe;
      const kernels::int8_weights want = narrow_kernel ? kernels::int8_weights::narrow : kernels::int8_weights::full;
      CHECK(kernels::resolve_int8_weights(kernels::int8_weights::automatic) == want);
      // The model resolves automatic once, at load, and its logits are that setting's.
      CHECK(logits(kernels::int8_weights::automatic) == logits(want));
    }
  }
}

TEST_CASE("int8 golden: converted files match the PyTorch int8 simulation on every fixture and ISA") {
  // reference_int8.json (tools/train/make_fixtures.py, int8_reference) is the PyTorch reference
  // with every Linear replaced by what an int8 file computes: weights quantized per row as the
  // converter does (scale = max|w| / 127, round half to even), each input row quantized the same
  // way at run time, exact integer sums times the two scales, plus the bias; token embeddings
  // read as their float16 values (the converter stores them float16; a shared table's output
  // projection is quantized from them); routers, norms and attention stay float32. The test above only bounds int8 against float32 (5% of
  // the largest logit, about 0.3 here); this one pins the int8 numbers themselves.
  //
  // Tolerance. The simulation and the runtime quantize the same activations, which differ only
  // by float32 rounding (attention, norms, summation order: ~1e-6 relative, i.e. ~1e-5 on logits
  // up to ~10; measured: the largest difference on every fixture, case and ISA is reported below,
  // 3e-6 when this was written). The one way they can part further is an activation whose
  // x * 127 / max|x| lands within that rounding of a .5 boundary and rounds the other way: the
  // integer sum then moves by one weight, max|x| / 127 * |q_w| * s_w for that output, which later
  // layers mix and damp. 1e-3 leaves room for such a stray flip yet is 50x below what int8 itself
  // moves the logits against float32 (0.05 - 0.16 here; it changes two greedy outputs), so it
  // tells the int8 numbers from the float32 ones and from a wrong scale, gate or rounding.
  // Embeddings read as float16 put the first layer's inputs on a grid (post-norm stacks), and in
  // a model this small one flipped step moves the logits by up to ~0.06: the simulation records
  // each case's closest approach to a rounding boundary (min_tie, in quantization steps), and
  // cases closer than float32 can resolve (1e-5 of a step on values up to 127) are held to
  // tol_tie instead (4 of the 15 when written, 2 of them exact ties; 2 with int8 tables).
  const double tol = 1e-3, tie = 1e-5, tol_tie = 0.1;
  std::size_t tied = 0;
  double worst = 0, worst_tie = 0, closest_f32 = 1e9;
  std::size_t exact_greedy = 0, greedy_unlike_f32 = 0;
  for (const std::string& setup : fixture_setups()) {
    CAPTURE(setup);
    const checkpoint ck(fixture_dir(setup));
    const nlohmann::json ref8 = nlohmann::json::parse(read_file(fixture_dir(setup) + "/reference_int8.json"));
    const nlohmann::json ref32 = nlohmann::json::parse(read_file(fixture_dir(setup) + "/reference.json"));
    REQUIRE(ref8.at("quantization") == "int8");
    temp_dir out;
    std::map<std::string, std::shared_ptr<const model::transformer>> models;
    for (const auto& c : ref8.at("cases")) {
      const std::string task = c.at("task").get<std::string>();
      if (models.count(task)) continue;
      const std::string path = out.file(task + ".tmoe");
      convert_task(ck, task, options(quantization_scheme::int8), path);
      // float32 attention caches, as the simulation has (the default for int8 files is float16,
      // which moves these logits by up to about 0.16: BENCHMARKS.md section 4 has its BLEU)
      model::model_options mo;
      mo.kv_cache = model::model_options::cache_precision::float32;
      mo.int8_weights = kernels::int8_weights::full;  // the simulation's: the file's values
      models[task] = std::make_shared<const model::transformer>(
          model::weight_source::from_tmoe(std::make_shared<const tmoe_file>(path)), mo);
    }
    for (kernels::isa isa : {kernels::isa::generic, kernels::isa::avx2, kernels::isa::avx512}) {
      if (!kernels::cpu_supports(isa)) continue;
      CAPTURE(std::string(kernels::to_string(isa)));
      kernels::scoped_isa_override force(isa);
      for (const auto& c : ref8.at("cases")) {
        CAPTURE(c.at("text").get<std::string>());
        const bool near_tie = c.at("min_tie").get<double>() < tie;
        tied += near_tie;
        const model::transformer& m = *models.at(c.at("task").get<std::string>());
        model::workspace ws;
        const auto enc = m.encode({c.at("source_ids").get<std::vector<int>>()}, ws);
        decoding::model_session session(m, enc);
        std::vector<float> logits, all;
        for (int t : c.at("decoder_input").get<std::vector<int>>()) {
          session.step({t}, logits);
          all.insert(all.end(), logits.begin(), logits.end());
        }
        const auto want = c.at("logits").at("data").get<std::vector<double>>();
        REQUIRE(all.size() == want.size());
        // the float32 reference's logits for the same case and prefix
        std::vector<double> f32;
        for (const auto& r : ref32.at("cases"))
          if (r.at("text") == c.at("text") && r.at("decoder_input") == c.at("decoder_input")) {
            f32 = r.at("logits").at("data").get<std::vector<double>>();
            if (r.at("greedy").at("tokens") != c.at("greedy").at("tokens")) ++greedy_unlike_f32;
          }
        REQUIRE(f32.size() == want.size());
        double d = 0, d32 = 0;
        for (std::size_t i = 0; i < want.size(); ++i) {
          d = std::max(d, std::fabs(all[i] - want[i]));
          d32 = std::max(d32, std::fabs(all[i] - f32[i]));
        }
        CHECK(d <= (near_tie ? tol_tie : tol));
        if (near_tie) {
          worst_tie = std::max(worst_tie, d);
          continue;
        }
        CHECK(d32 > 2 * tol);  // the golden values are int8's, not float32's
        worst = std::max(worst, d);
        closest_f32 = std::min(closest_f32, d32);
        // Greedy: exact tokens where the simulation's smallest top-1 / top-2 gap along the path
        // leaves room for twice the logit tolerance; the others only have to stay close in score.
        decoding::model_session g(m, enc);
        const int max_len = ref8.at("max_len").get<int>();
        const auto got = decoding::search(g, {{max_len, {}}}, decoding::search_options{}, m.config().bos_id,
                                          m.config().eos_id)[0][0];
        const auto& gw = c.at("greedy");
        if (gw.at("min_margin").get<double>() > 2 * tol) {
          CHECK(got.tokens == gw.at("tokens").get<std::vector<int>>());
          CHECK(got.score == doctest::Approx(gw.at("score").get<double>()).epsilon(1e-3));
          ++exact_greedy;
        }
      }
    }
  }
  MESSAGE("int8 golden: largest |logit - PyTorch int8 simulation| " << worst << " (tolerance " << tol
          << "); smallest int8 vs float32 difference " << closest_f32 << "; exact greedy checks " << exact_greedy
          << "; case runs near a rounding tie " << tied << " (largest difference " << worst_tie << ")");
  CHECK(tied <= 4 * 3);       // at most 4 cases, on each of up to 3 ISAs
  CHECK(exact_greedy >= 24);  // 13 cases on 2 ISAs, less those whose greedy margin is too thin
  CHECK(greedy_unlike_f32 > 0);  // some int8 greedy outputs differ from float32's: int8 is what is pinned
}
