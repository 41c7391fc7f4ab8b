// translator_set: every task of a checkpoint with shared weights (bit-identical to one translator
// per task), quantization at load (bit-identical to the converted int8 file), directories of
// .tmoe files, and errors.

#include <set>

#include "test_model_support.hpp"

using namespace taskmoe;
using taskmoe_test::fixture_dir;

namespace {

const std::vector<std::string> all_fixtures = {"dense", "task_pair", "task_target", "token_task", "token_token"};

// A few sources of awkward lengths, valid for the model's vocabulary.
std::vector<std::vector<int>> sources(const model_config& c) {
  std::vector<std::vector<int>> s;
  for (int len : {1, 3, 7, 12}) {
    std::vector<int> p;
    for (int i = 0; i < len; ++i) p.push_back(5 + (i * 7 + len) % (c.vocab_size - 5));
    s.push_back(p);
  }
  return s;
}

translation_options beam3() {
  translation_options o;
  o.beam_size = 3;
  o.num_hypotheses = 2;
  o.max_decoding_length = 10;
  return o;
}

// Tokens and scores of every hypothesis, bit for bit.
void check_same(const std::vector<translation_result>& a, const std::vector<translation_result>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].hypotheses.size() == b[i].hypotheses.size());
    for (std::size_t h = 0; h < a[i].hypotheses.size(); ++h) {
      CHECK(a[i].hypotheses[h].tokens == b[i].hypotheses[h].tokens);
      CHECK(a[i].hypotheses[h].score == b[i].hypotheses[h].score);
    }
  }
}

std::string convert(const checkpoint& ck, const std::string& task, quantization_scheme q,
                    const std::string& path) {
  convert_options o;
  o.quantization = q;
  o.created = "2025-01-31T12:00:00Z";
  o.overwrite = true;
  convert_task(ck, task, o, path);
  return path;
}

}  // namespace

TEST_CASE("translator_set from a checkpoint equals one translator per task, sharing the weights") {
  for (const std::string& fx : all_fixtures) {
    CAPTURE(fx);
    const translator_set set = translator_set::from_checkpoint(fixture_dir(fx));
    const checkpoint ck(fixture_dir(fx));
    REQUIRE(set.size() == ck.tasks().size());
    std::vector<std::string> names;
    for (const auto& t : ck.tasks()) names.push_back(t.name);
    std::sort(names.begin(), names.end());
    CHECK(set.tasks() == names);
    std::size_t separate_bytes = 0;
    std::set<const model::transformer*> models;
    for (const task_info& ti : ck.tasks()) {
      CAPTURE(ti.name);
      const translator alone = translator::from_checkpoint(fixture_dir(fx), ti.name);
      separate_bytes += alone.model().owned_bytes();
      const translator& shared = set.at(ti.name);
      CHECK(shared.task().name == ti.name);
      CHECK(shared.task().target == ti.target);
      CHECK(shared.target_tag_id() == alone.target_tag_id());
      CHECK(set.find(ti.source, ti.target) == &shared);
      check_same(shared.translate_tokens(sources(alone.config()), beam3()),
                 alone.translate_tokens(sources(alone.config()), beam3()));
      models.insert(&shared.model());
      // Every model is the first one or shares its layers.
      const model::transformer* m = &shared.model();
      const model::transformer* base = &set.at(ck.tasks().front().name).model();
      CHECK((m == base || m->base() == base));
    }
    // One model per distinct routing: dense and token-token models need one for all tasks,
    // task:target one per target language, task:pair one per task.
    const std::size_t expected = fx == "task_pair" ? 4 : (fx == "task_target" || fx == "token_task") ? 3 : 1;
    CHECK(models.size() == expected);
    CHECK(set.owned_bytes() < separate_bytes);
  }
}

TEST_CASE("translator_set quantization int8 equals the converted int8 files") {
  const taskmoe_test::temp_dir dir;
  translator_set_options o;
  o.quantization = "int8";
  for (const std::string& fx : all_fixtures) {
    CAPTURE(fx);
    const checkpoint ck(fixture_dir(fx));
    const translator_set set = translator_set::from_checkpoint(fixture_dir(fx), o);
    for (const task_info& ti : ck.tasks()) {
      CAPTURE(ti.name);
      const translator file(convert(ck, ti.name, quantization_scheme::int8, dir.file(fx + "-" + ti.name + ".tmoe")));
      check_same(set.at(ti.name).translate_tokens(sources(file.config()), beam3()),
                 file.translate_tokens(sources(file.config()), beam3()));
    }
  }
  // And it is really quantized: float32 results differ somewhere.
  const translator_set f32 = translator_set::from_checkpoint(fixture_dir("task_target"));
  const translator_set i8 = translator_set::from_checkpoint(fixture_dir("task_target"), o);
  bool differs = false;
  for (const auto& name : f32.tasks()) {
    const auto a = f32.at(name).translate_tokens(sources(f32.at(name).config()), beam3());
    const auto b = i8.at(name).translate_tokens(sources(i8.at(name).config()), beam3());
    for (std::size_t i = 0; i < a.size(); ++i) differs = differs || a[i].hypotheses[0].score != b[i].hypotheses[0].score;
  }
  CHECK(differs);
}

TEST_CASE("translator_set: a subset of tasks, and bad requests") {
  translator_set_options o;
  o.tasks = {"fr-en", "en-de"};
  const translator_set set = translator_set::from_checkpoint(fixture_dir("task_target"), o);
  CHECK(set.tasks() == std::vector<std::string>{"en-de", "fr-en"});
  CHECK(set.find("de-en") == nullptr);
  CHECK(set.find("de", "en") == nullptr);
  CHECK(set.find("en", "de") == &set.at("en-de"));
  CHECK_THROWS_WITH_AS(set.at("xx-yy"), taskmoe_test::contains("unknown task 'xx-yy' (served: en-de, fr-en)"),
                       invalid_argument_error);
  o.tasks = {"en-xx"};
  CHECK_THROWS_AS(translator_set::from_checkpoint(fixture_dir("task_target"), o), invalid_argument_error);
  translator_set_options q;
  q.quantization = "int4";
  CHECK_THROWS_WITH_AS(translator_set::from_checkpoint(fixture_dir("task_target"), q),
                       taskmoe_test::contains("unknown quantization 'int4'"), invalid_argument_error);
  translator_set_options bad_threads;
  bad_threads.translator.threads = 0;
  CHECK_THROWS_AS(translator_set::from_checkpoint(fixture_dir("task_target"), bad_threads), invalid_argument_error);
}

TEST_CASE("translator_set from a directory of .tmoe files") {
  const taskmoe_test::temp_dir dir;
  const checkpoint ck(fixture_dir("task_target"));
  CHECK_THROWS_WITH_AS(translator_set::from_directory(dir.path()), taskmoe_test::contains("no .tmoe files"),
                       invalid_argument_error);
  CHECK_THROWS_AS(translator_set::from_directory(dir.file("missing")), io_error);
  convert(ck, "en-de", quantization_scheme::int8, dir.file("a.tmoe"));
  convert(ck, "de-en", quantization_scheme::float32, dir.file("b.tmoe"));
  taskmoe_test::write_file(dir.file("notes.txt"), "not a model");
  const translator_set set = translator_set::from_directory(dir.path());
  CHECK(set.tasks() == std::vector<std::string>{"de-en", "en-de"});
  const translator alone(dir.file("a.tmoe"));
  check_same(set.at("en-de").translate_tokens(sources(alone.config()), beam3()),
             alone.translate_tokens(sources(alone.config()), beam3()));
  translator_set_options o;
  o.tasks = {"de-en"};
  CHECK(translator_set::from_directory(dir.path(), o).tasks() == std::vector<std::string>{"de-en"});
  o.tasks = {"fr-en"};
  CHECK_THROWS_WITH_AS(translator_set::from_directory(dir.path(), o),
                       taskmoe_test::contains("no .tmoe file holds task 'fr-en'"), invalid_argument_error);
  convert(ck, "en-de", quantization_scheme::float32, dir.file("c.tmoe"));  // a second en-de
  CHECK_THROWS_WITH_AS(translator_set::from_directory(dir.path()), taskmoe_test::contains("served twice"),
                       invalid_argument_error);
  // A corrupt file is reported, not skipped.
  std::remove(dir.file("c.tmoe").c_str());
  taskmoe_test::write_file(dir.file("d.tmoe"), "garbage");
  CHECK_THROWS_AS(translator_set::from_directory(dir.path()), format_error);
}

TEST_CASE("translator_set: per-task vocabulary maps from a directory") {
  const taskmoe_test::temp_dir models, maps;
  const checkpoint ck(fixture_dir("task_target"));
  convert(ck, "en-de", quantization_scheme::float32, models.file("a.tmoe"));
  convert(ck, "de-en", quantization_scheme::float32, models.file("b.tmoe"));
  // en-de gets a map (always: pieces 10-39, as in the translator test's format), de-en none.
  std::string pieces;
  tokenizer::for_each_piece(ck.sentencepiece_model(), [&](int id, std::string_view p) {
    if (id >= 10 && id < 40) pieces += (pieces.empty() ? "" : " ") + std::string(p);
    return id >= 40;
  });
  taskmoe_test::write_file(maps.file("en-de.vmap.txt"), "\t" + pieces + "\n");
  translator_set_options o;
  o.vocabulary_maps = maps.path();
  for (const translator_set& set : {translator_set::from_directory(models.path(), o), translator_set::from_checkpoint(ck.directory(), o)}) {
    CHECK(set.at("en-de").has_vocabulary_map());
    CHECK_FALSE(set.at("de-en").has_vocabulary_map());
    translation_options t = beam3();
    t.use_vocabulary_map = true;
    for (const auto& r : set.at("en-de").translate_tokens(sources(set.at("en-de").config()), t))
      for (int tok : r.hypotheses[0].tokens) CHECK(((tok >= 10 && tok < 40) || tok == 1 || tok == 2));  // or <unk>, <s>
    CHECK_THROWS_AS(set.at("de-en").translate_tokens(sources(set.at("de-en").config()), t), invalid_argument_error);
  }
  o.vocabulary_maps = maps.file("missing");
  CHECK_THROWS_WITH_AS(translator_set::from_directory(models.path(), o), taskmoe_test::contains("not a directory"), io_error);
}

TEST_CASE("translator_set: a file's embedded vocabulary map, unless the maps directory has the task's") {
  const taskmoe_test::temp_dir models, maps;
  const checkpoint ck(fixture_dir("task_target"));
  const auto pieces = [&](int first, int last) {
    std::string out;
    tokenizer::for_each_piece(ck.sentencepiece_model(), [&](int id, std::string_view p) {
      if (id >= first && id < last) out += (out.empty() ? "" : " ") + std::string(p);
      return id >= last;
    });
    return out;
  };
  taskmoe_test::write_file(maps.file("embedded.txt"), "\t" + pieces(40, 70) + "\n");
  taskmoe_test::write_file(maps.file("en-de.vmap.txt"), "\t" + pieces(10, 40) + "\n");
  for (const char* task : {"en-de", "de-en"}) {
    convert_options co;
    co.quantization = quantization_scheme::float32;
    co.vocabulary_map = maps.file("embedded.txt");
    convert_task(ck, task, co, models.file(std::string(task) + ".tmoe"));
  }
  translator_set_options o;
  o.vocabulary_maps = maps.path();
  const translator_set set = translator_set::from_directory(models.path(), o);
  translation_options t = beam3();
  t.use_vocabulary_map = true;
  const auto within = [&](const char* task, int first, int last) {
    CAPTURE(task);
    REQUIRE(set.at(task).has_vocabulary_map());
    for (const auto& r : set.at(task).translate_tokens(sources(set.at(task).config()), t))
      for (int tok : r.hypotheses[0].tokens) CHECK(((tok >= first && tok < last) || tok == 1 || tok == 2));
  };
  within("en-de", 10, 40);  // the directory's map
  within("de-en", 40, 70);  // the file's own
}
