#include "test_model_support.hpp"

#include <algorithm>
#include <cmath>

using namespace taskmoe;
using namespace taskmoe_test;

TEST_CASE("checkpoints load for every routing setup, including hybrids and dense") {
  const std::pair<routing, routing> setups[] = {
      {routing::task_target, routing::task_target}, {routing::task_pair, routing::task_pair},
      {routing::token, routing::token},             {routing::dense, routing::dense},
      {routing::task_target, routing::token},       {routing::token, routing::task_pair},
      {routing::dense, routing::task_target}};
  for (const auto& s : setups) {
    CAPTURE(routing_name(s.first));
    CAPTURE(routing_name(s.second));
    temp_dir dir;
    model_config c = tiny_config(s.first, s.second);
    write_checkpoint(dir.path(), c, tiny_tasks());
    const checkpoint ck(dir.path());
    CHECK(ck.config().encoder_moe.route == s.first);
    CHECK(ck.tasks().size() == 3);
    CHECK(ck.task("de-en").target_tag == "<2en>");
    CHECK(ck.task_id("en-fr") == 2);
    CHECK(ck.sentencepiece_model() == "fake sentencepiece model bytes");
    CHECK(ck.extra_tensors().empty());
    CHECK(ck.content_hash_hex().size() == 16);
    CHECK(ck.has_tensor("decoder.layers.0.encoder_attn.q_proj.weight"));
    if (s.second != routing::dense)
      CHECK(ck.tensor("decoder.layers.1.moe.experts.fc1.weight").shape == tensor_shape{4, 12, 8});
    else
      CHECK(ck.tensor("decoder.layers.1.ffn.fc1.weight").shape == tensor_shape{16, 8});
  }
}

TEST_CASE("a dense model without a moe object, post-norm, learned, unshared") {
  temp_dir dir;
  model_config c = tiny_config();
  c.has_moe = false;
  c.encoder_moe = c.decoder_moe = {};
  c.norm = norm_placement::post;
  c.positions = positional_encoding::learned;
  c.shared_embeddings = false;
  write_checkpoint(dir.path(), c, tiny_tasks());
  const checkpoint ck(dir.path());
  CHECK(!ck.config().has_moe);
  CHECK(ck.has_tensor("decoder.output_projection.weight"));
  CHECK(!ck.has_tensor("encoder.layer_norm.weight"));
}

TEST_CASE("f16 and bf16 checkpoints load; the hash follows the content") {
  temp_dir a, b, c;
  checkpoint_edit e16;
  e16.type = dtype::f16;
  write_checkpoint(a.path(), tiny_config(), tiny_tasks(), e16);
  checkpoint_edit ebf;
  ebf.type = dtype::bf16;
  write_checkpoint(b.path(), tiny_config(), tiny_tasks(), ebf);
  write_checkpoint(c.path(), tiny_config(), tiny_tasks(), e16);
  const checkpoint ca(a.path()), cb(b.path()), cc(c.path());
  CHECK(ca.tensor("embed_tokens.weight").type == dtype::f16);
  CHECK(cb.tensor("embed_tokens.weight").type == dtype::bf16);
  CHECK(ca.content_hash() == cc.content_hash());
  CHECK(ca.content_hash() != cb.content_hash());
}

TEST_CASE("checkpoint validation: missing tensor, wrong shape, bad config, missing files") {
  temp_dir dir;
  checkpoint_edit drop;
  drop.keep = [](const std::string& n) { return n != "encoder.layers.1.moe.router.weight"; };
  write_checkpoint(dir.path(), tiny_config(), tiny_tasks(), drop);
  CHECK_THROWS_WITH_AS(checkpoint(dir.path()),
                       taskmoe_test::contains("missing required tensor 'encoder.layers.1.moe.router.weight'"),
                       format_error);

  checkpoint_edit reshape;
  reshape.reshape = [](const std::string& n, tensor_shape& s) {
    if (n == "decoder.task_embedding.weight") s = {3, 5};
  };
  write_checkpoint(dir.path(), tiny_config(), tiny_tasks(), reshape);
  CHECK_THROWS_WITH_AS(checkpoint(dir.path()),
                       taskmoe_test::contains("tensor 'decoder.task_embedding.weight' has shape [3, 5], "
                                         "expected [3, 4]"),
                       format_error);

  write_checkpoint(dir.path(), tiny_config(), tiny_tasks());
  auto j = checkpoint_json(tiny_config(), tiny_tasks());
  j["moe"]["top_k"] = 9;
  write_file(dir.file("config.json"), j.dump());
  CHECK_THROWS_WITH_AS(checkpoint(dir.path()),
                       taskmoe_test::contains(dir.file("config.json") + ": moe.top_k: must be <="),
                       format_error);
  j = checkpoint_json(tiny_config(), tiny_tasks());
  j["format_version"] = 2;
  write_file(dir.file("config.json"), j.dump());
  CHECK_THROWS_WITH_AS(checkpoint(dir.path()), taskmoe_test::contains("format_version: unsupported"),
                       format_error);
  write_file(dir.file("config.json"), "{");
  CHECK_THROWS_WITH_AS(checkpoint(dir.path()), taskmoe_test::contains("not valid JSON"), format_error);
  write_file(dir.file("config.json"), checkpoint_json(tiny_config(), tiny_tasks()).dump());
  std::remove(dir.file("sentencepiece.model").c_str());
  CHECK_THROWS_WITH_AS(checkpoint(dir.path()), taskmoe_test::contains("sentencepiece.model is missing"),
                       format_error);
  temp_dir empty;
  CHECK_THROWS_WITH_AS(checkpoint(empty.path()), taskmoe_test::contains("config.json is missing"),
                       format_error);
}

TEST_CASE("non-finite weights are rejected; extra tensors are reported") {
  temp_dir dir;
  write_checkpoint(dir.path(), tiny_config(), tiny_tasks());
  // Rewrite with one NaN and one extra tensor.
  safetensors_writer w;
  std::uint32_t seed = 1;
  for (const auto& r : required_checkpoint_tensors(tiny_config())) {
    auto v = random_floats(static_cast<std::size_t>(r.shape.numel()), seed++);
    if (r.name == "encoder.layer_norm.bias") v[3] = std::nanf("");
    w.add_f32(r.name, r.shape, v);
  }
  w.add_f32("training.step", {1}, {5.0f});
  w.write(dir.file("model.safetensors"));
  CHECK_THROWS_WITH_AS(checkpoint(dir.path()),
                       taskmoe_test::contains("tensor 'encoder.layer_norm.bias' has a non-finite value at "
                                         "element 3"),
                       format_error);
  checkpoint_options o;
  o.check_finite = false;
  const checkpoint ck(dir.path(), o);
  CHECK(ck.extra_tensors() == std::vector<std::string>{"training.step"});
}

TEST_CASE("compute_task_gate: softmax, top-2 with a tie broken by the lower index, renormalised") {
  // 4 experts, d_in 2, u = (1, 0): logits = first router column = (1, 3, 3, 2).
  const float router[8] = {1, 9, 3, 9, 3, 9, 2, 9};
  const float u[2] = {1, 0};
  const moe::task_gate g = moe::compute_task_gate(router, u, 4, 2, 2);
  REQUIRE(g.experts == std::vector<int>{1, 2});  // experts 1 and 2 tie; 1 comes first
  CHECK(g.weights[0] == doctest::Approx(0.5));
  CHECK(g.weights[1] == doctest::Approx(0.5));
  // logits (0, ln 3, ln 1, ln 2) -> p ∝ (1, 3, 1, 2); top-2 = {1: 3/5, 3: 2/5}
  const float r2[4] = {0.0f, std::log(3.0f), 0.0f, std::log(2.0f)};
  const float one = 1.0f;
  const moe::task_gate g2 = moe::compute_task_gate(r2, &one, 4, 1, 2);
  REQUIRE(g2.experts == std::vector<int>{1, 3});
  CHECK(g2.weights[0] == doctest::Approx(0.6));
  CHECK(g2.weights[1] == doctest::Approx(0.4));
  // top-3 includes the tie between experts 0 and 2 (both p = 1/7): 0 wins.
  CHECK(moe::compute_task_gate(r2, &one, 4, 1, 3).experts == std::vector<int>{1, 3, 0});
  CHECK_THROWS_AS(moe::compute_task_gate(r2, &one, 4, 1, 5), invalid_argument_error);
}

TEST_CASE("the gate from checkpoint::router_of uses the task's embedding row and the layer's router") {
  temp_dir dir;
  const model_config c = tiny_config(routing::task_target, routing::task_pair);
  write_checkpoint(dir.path(), c, tiny_tasks());
  const checkpoint ck(dir.path());
  const task_info& t = ck.task("de-en");
  const auto table = to_f32(ck.tensor("encoder.task_embedding.weight"));
  const auto router = to_f32(ck.tensor("encoder.layers.1.moe.router.weight"));
  // task:target, target "en" is row 1 of task_keys {de, en, fr}. The expected gate is computed
  // here, in double, from the raw tensors: router [experts, dim] times the task's row, softmax,
  // the top-2 (lower index first on ties), renormalised -- not by calling compute_task_gate again.
  const int experts = c.num_experts, dim = c.task_embedding_dim;
  const auto reference_gate = [&](const std::vector<float>& w, int row) {
    std::vector<double> logit(static_cast<std::size_t>(experts));
    for (int e = 0; e < experts; ++e)
      for (int i = 0; i < dim; ++i) logit[e] += double(w[e * dim + i]) * table[row * dim + i];
    std::vector<int> order(static_cast<std::size_t>(experts));
    for (int e = 0; e < experts; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logit[a] > logit[b]; });
    // softmax then renormalise over the top 2 == a two-way softmax of their logits
    const double p1 = 1.0 / (1.0 + std::exp(logit[order[1]] - logit[order[0]]));
    return std::make_pair(std::vector<int>{order[0], order[1]}, std::vector<double>{p1, 1.0 - p1});
  };
  const auto want = reference_gate(router, 1);
  const moe::task_gate g = moe::compute_task_gate(ck.router_of(t, stack::encoder, 1));
  CHECK(g.experts == want.first);
  REQUIRE(g.weights.size() == 2);
  CHECK(g.weights[0] == doctest::Approx(want.second[0]).epsilon(1e-6));
  CHECK(g.weights[1] == doctest::Approx(want.second[1]).epsilon(1e-6));
  // Another task's row gives its own gate (the row really is selected by the target language).
  const auto want_fr = reference_gate(router, 2);
  CHECK(moe::compute_task_gate(ck.router_of(ck.task("en-fr"), stack::encoder, 1)).experts == want_fr.first);
  CHECK_THROWS_WITH_AS(ck.router_of(t, stack::encoder, 0), taskmoe_test::contains("not an MoE layer"),
                       invalid_argument_error);
  CHECK_THROWS_AS(ck.task("xx-yy"), invalid_argument_error);
}

TEST_CASE("the gate from checkpoint::router_of equals the PyTorch reference's task routes on the golden fixtures") {
  // reference.json's task_routes come from tools/train/taskmoe_ref (model.task_route), an
  // implementation independent of compute_task_gate.
  for (const std::string setup : {"task_target", "task_pair", "token_task"}) {
    CAPTURE(setup);
    const checkpoint ck(fixture_dir(setup));
    const nlohmann::json ref = fixture_reference(setup);
    std::size_t checked = 0;
    for (const auto& c : ref["cases"]) {
      const task_info& t = ck.task(c["task"].get<std::string>());
      for (const auto& [name, route] : c["task_routes"].items()) {
        CAPTURE(name);
        const stack s = name.rfind("encoder", 0) == 0 ? stack::encoder : stack::decoder;
        const moe::task_gate g = moe::compute_task_gate(ck.router_of(t, s, std::stoi(name.substr(name.find('.') + 1))));
        CHECK(g.experts == route["experts"].get<std::vector<int>>());
        REQUIRE(g.weights.size() == route["gates"].size());
        for (std::size_t j = 0; j < g.weights.size(); ++j)
          CHECK(g.weights[j] == doctest::Approx(route["gates"][j].get<double>()).epsilon(1e-6));
        ++checked;
      }
    }
    CHECK(checked > 0);
  }
}

TEST_CASE("a config.json claiming 2^31 - 1 layers stops at the first missing tensor (fuzz_config)") {
  // tests/fuzz/regressions/config/huge-encoder-layers: the reader used to list every required
  // tensor first, billions of names, and ran out of memory.
  temp_dir dir;
  model_config c = tiny_config();
  write_checkpoint(dir.path(), c, tiny_tasks());
  c.encoder_layers = 2147483647;
  write_file(dir.file("config.json"), checkpoint_json(c, tiny_tasks()).dump());
  expect_format_error([&] { const checkpoint ck(dir.path()); }, dir.path(),
                      "missing required tensor 'encoder.layers.2.");
}
