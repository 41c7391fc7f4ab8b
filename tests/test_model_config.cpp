#include "test_helpers.hpp"

using namespace taskmoe;
using taskmoe_test::tiny_config;

TEST_CASE("model_config round-trips through JSON for every routing") {
  for (routing enc : {routing::dense, routing::token, routing::task_target, routing::task_pair}) {
    for (routing dec : {routing::token, routing::task_target, routing::task_pair}) {
      model_config c = tiny_config(enc, dec);
      c.norm = norm_placement::post;
      c.act = activation::gelu;
      c.positions = positional_encoding::learned;
      c.shared_embeddings = false;
      const nlohmann::json j = c;
      const auto back = j.get<model_config>();
      CHECK(nlohmann::json(back) == j);
      CHECK(back.encoder_moe.route == enc);
      CHECK(back.decoder_moe.route == dec);
      CHECK(back.decoder_moe.layers == std::vector<int>{1});
      CHECK(back.act == activation::gelu);
    }
  }
}

TEST_CASE("the documented example config parses, with id defaults and no moe for dense") {
  auto j = nlohmann::json::parse(R"({"model": {"d_model": 256, "n_heads": 4, "d_ff": 1024,
    "encoder_layers": 4, "decoder_layers": 4, "vocab_size": 8000, "max_positions": 256,
    "norm": "pre", "activation": "relu", "positional_encoding": "sinusoidal",
    "shared_embeddings": true, "scale_embeddings": true, "layer_norm_eps": 1e-5},
    "moe": {"num_experts": 8, "top_k": 2, "d_ff_expert": 1024, "task_embedding_dim": 64,
    "encoder": {"routing": "task:target", "layers": [1, 3], "task_keys": ["de", "en"]},
    "decoder": {"routing": "token", "layers": [1, 3]}}})");
  const auto c = j.get<model_config>();
  CHECK(c.eos_id == 3);
  CHECK(c.encoder_moe.route == routing::task_target);
  CHECK(c.is_moe_layer(stack::encoder, 3));
  CHECK(!c.is_moe_layer(stack::encoder, 2));
  j.erase("moe");
  CHECK(!j.get<model_config>().has_moe);
}

static void expect_config_error(nlohmann::json j, const std::string& message) {
  CHECK_THROWS_WITH_AS(j.get<model_config>(), taskmoe_test::contains(message), config_error);
}

TEST_CASE("config validation names the offending field") {
  const nlohmann::json good = tiny_config();
  auto j = good;
  j["model"].erase("d_model");
  expect_config_error(j, "model.d_model: required key is missing");
  j = good;
  j["model"]["n_heads"] = "2";
  expect_config_error(j, "model.n_heads: must be an integer");
  j = good;
  j["model"]["n_heads"] = 3;
  expect_config_error(j, "model.n_heads: must divide model.d_model");
  j = good;
  j["model"]["norm"] = "sandwich";
  expect_config_error(j, "model.norm: 'sandwich' is not one of pre, post");
  j = good;
  j["model"]["d_ff"] = 0;
  expect_config_error(j, "model.d_ff: must be > 0");
  j = good;
  j["moe"]["top_k"] = 5;
  expect_config_error(j, "moe.top_k: must be <= moe.num_experts");
  j = good;
  j["moe"]["encoder"]["layers"] = {1, 0};
  expect_config_error(j, "moe.encoder.layers: must be sorted and unique");
  j = good;
  j["moe"]["decoder"]["layers"] = {2};
  expect_config_error(j, "moe.decoder.layers: layer 2 is not < decoder_layers");
  j = good;
  j["moe"]["encoder"]["routing"] = "dense";
  expect_config_error(j, "moe.encoder.layers: must be empty for dense routing");
  j = good;
  j["moe"]["encoder"].erase("task_keys");
  expect_config_error(j, "moe.encoder.task_keys: required for task routing");
  j = good;
  j["moe"].erase("task_embedding_dim");
  expect_config_error(j, "moe.task_embedding_dim: must be > 0");
  j = good;
  j["moe"]["encoder"]["routing"] = "expert-choice";
  expect_config_error(j, "moe.encoder.routing: 'expert-choice' is not one of");
}

TEST_CASE("validate_tasks requires task keys and tags for every task") {
  auto c = tiny_config();
  auto tasks = taskmoe_test::tiny_tasks();
  CHECK_NOTHROW(validate_tasks(c, tasks));
  tasks.push_back({"en-ru", "en", "ru", "<2ru>"});
  CHECK_THROWS_WITH_AS(validate_tasks(c, tasks),
                       taskmoe_test::contains("moe.encoder.task_keys: missing key 'ru' for task 'en-ru'"),
                       config_error);
  tasks = taskmoe_test::tiny_tasks();
  tasks.push_back(tasks[0]);
  CHECK_THROWS_WITH_AS(validate_tasks(c, tasks), taskmoe_test::contains("duplicate task 'en-de'"),
                       config_error);
  tasks = taskmoe_test::tiny_tasks();
  tasks[1].target_tag.clear();
  CHECK_THROWS_WITH_AS(validate_tasks(c, tasks),
                       taskmoe_test::contains("target_tags: no tag for target language 'en'"), config_error);
  c = tiny_config(routing::task_pair, routing::token);
  tasks = taskmoe_test::tiny_tasks();
  CHECK_NOTHROW(validate_tasks(c, tasks));
  CHECK(task_key_index(c, stack::encoder, tasks[2]) == 2);
  CHECK(task_key_index(c, stack::decoder, tasks[2]) == -1);  // token-routed: no key
}

TEST_CASE("task_keys on a token-routed stack are accepted and kept (required only for task routing)") {
  nlohmann::json j = tiny_config(routing::token, routing::task_target);
  j["moe"]["encoder"]["task_keys"] = {"de", "en"};
  const auto c = j.get<model_config>();
  CHECK(c.encoder_moe.task_keys.size() == 2);
  CHECK(nlohmann::json(c) == j);
}
