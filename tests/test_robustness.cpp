// Hostile conditions around the runtime: model files changed while mapped, over-long and odd
// inputs, and crash-safe writers (no partial output, no temporary litter). docs/runtime.md has
// the table of what each input gets.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>


#include "test_model_support.hpp"

using namespace taskmoe;
using taskmoe_test::fixture_dir;

namespace {

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") names.push_back(e->d_name);
    ::closedir(d);
  }
  return names;
}

std::string convert_fixture(const taskmoe_test::temp_dir& dir, const std::string& name,
                            quantization_scheme q = quantization_scheme::float32) {
  const checkpoint ck(fixture_dir("task_target"));
  convert_options o;
  o.quantization = q;
  o.created = "2025-01-31T12:00:00Z";
  o.overwrite = true;
  const std::string path = dir.file(name);
  convert_task(ck, "en-de", o, path);
  return path;
}

translation_options greedy() {
  translation_options o;
  o.beam_size = 1;
  o.max_decoding_length = 10;
  return o;
}

const std::vector<std::vector<int>> two_sources = {{7, 89, 19, 18, 178}, {40, 41}};

// Rewrites the second half of the file in place (same size): what an editor or a careless
// `cp new.tmoe model.tmoe` does. The pause lets the coarse file clock tick (docs/runtime.md).
void rewrite_in_place(const std::string& path) {
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  std::string bytes = taskmoe_test::read_file(path);
  for (std::size_t i = bytes.size() / 2; i < bytes.size(); ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x5A);
  const int fd = ::open(path.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

}  // namespace

TEST_CASE("a mapped model file changed on disk: a clear error, never a changed translation") {
  const taskmoe_test::temp_dir dir;
  SUBCASE("rewritten in place: every later call throws io_error") {
    const std::string path = convert_fixture(dir, "a.tmoe");
    const translator t(path);
    const auto before = t.translate_tokens(two_sources, greedy());
    REQUIRE(before.size() == 2);
    rewrite_in_place(path);
    CHECK_THROWS_WITH_AS(t.translate_tokens(two_sources, greedy()),
                         doctest::Contains("modified after it was opened"), io_error);
    CHECK_THROWS_AS(t.translate_tokens(two_sources, greedy()), io_error);  // and stays refused
  }
  SUBCASE("truncated: io_error before any weight is touched (no SIGBUS)") {
    const std::string path = convert_fixture(dir, "b.tmoe");
    const translator t(path);
    REQUIRE(::truncate(path.c_str(), 1000) == 0);
    CHECK_THROWS_WITH_AS(t.translate_tokens(two_sources, greedy()), doctest::Contains("size"), io_error);
  }
  SUBCASE("replaced by rename (what taskmoe-convert does): the old mapping keeps serving") {
    const std::string path = convert_fixture(dir, "c.tmoe");
    const translator t(path);
    const auto before = t.translate_tokens(two_sources, greedy());
    convert_fixture(dir, "c.tmoe", quantization_scheme::int8);  // overwrite = true: rename
    const auto after = t.translate_tokens(two_sources, greedy());
    for (std::size_t i = 0; i < two_sources.size(); ++i) {
      CHECK(after[i].hypotheses[0].tokens == before[i].hypotheses[0].tokens);
      CHECK(after[i].hypotheses[0].score == before[i].hypotheses[0].score);
    }
  }
  SUBCASE("use_mmap = false: a private copy, unaffected by rewrites and truncation") {
    const std::string path = convert_fixture(dir, "d.tmoe");
    translator_options to;
    to.use_mmap = false;
    const translator t(path, to);
    const auto before = t.translate_tokens(two_sources, greedy());
    rewrite_in_place(path);
    const auto rewritten = t.translate_tokens(two_sources, greedy());
    REQUIRE(::truncate(path.c_str(), 0) == 0);
    const auto truncated = t.translate_tokens(two_sources, greedy());
    for (std::size_t i = 0; i < two_sources.size(); ++i) {
      CHECK(rewritten[i].hypotheses[0].tokens == before[i].hypotheses[0].tokens);
      CHECK(truncated[i].hypotheses[0].score == before[i].hypotheses[0].score);
    }
    // The copy equals the mapping: same results as a mapped translator of a fresh file.
    const translator mapped(convert_fixture(dir, "d2.tmoe"));
    const auto m = mapped.translate_tokens(two_sources, greedy());
    for (std::size_t i = 0; i < two_sources.size(); ++i) CHECK(m[i].hypotheses[0].score == before[i].hypotheses[0].score);
  }
}

TEST_CASE("a corrupted tensor in a .tmoe: the translator names it, whichever tensor it is") {
  // The translator checks each tensor as the model reads it (and the rest after the load):
  // every tensor must still be covered, the tokenizer before SentencePiece parses it.
  const taskmoe_test::temp_dir dir;
  const std::string path = convert_fixture(dir, "good.tmoe", quantization_scheme::int8);
  const std::string good = taskmoe_test::read_file(path);
  const tmoe_file file(path);
  std::size_t covered = 0;
  bool tokenizer = false;
  for (const std::string& name : file.tensor_names()) {
    const tensor_view& v = *file.find(name);
    // Corrupt the tensor where its first bytes occur just once in the file (found by content:
    // the format has no public offsets).
    const std::string head(reinterpret_cast<const char*>(v.data), std::min<std::size_t>(v.byte_size, 48));
    const std::size_t at = good.find(head);
    if (head.size() < 16 || at == std::string::npos || good.find(head, at + 1) != std::string::npos) continue;
    CAPTURE(name);
    std::string bad = good;
    bad[at + head.size() / 2] = static_cast<char>(bad[at + head.size() / 2] ^ 0x20);
    const std::string bad_path = dir.file("bad.tmoe");
    taskmoe_test::write_file(bad_path, bad);
    const std::string want = "tensor '" + name + "': checksum mismatch";
    CHECK_THROWS_WITH_AS(translator{bad_path}, taskmoe_test::contains(want), format_error);
    ++covered;
    if (name == tmoe_tokenizer_tensor) {
      tokenizer = true;
    } else {
      translator_options unchecked;
      unchecked.verify_checksums = false;  // a flipped weight loads (and computes garbage) unchecked
      CHECK_NOTHROW(translator{bad_path, unchecked});
    }
  }
  CHECK(covered >= file.tensor_names().size() / 2);
  CHECK(tokenizer);
  // A tensor the model never reads (a later format's addition) is checked after the load.
  const std::string extra = dir.file("extra.tmoe");
  {
    tmoe_writer w(extra);
    w.set_metadata(file.metadata());
    for (const std::string& name : file.tensor_names())
      if (name != tmoe_tokenizer_tensor) w.add_tensor(name, *file.find(name));
    const std::string marker = "<unread tensor>, 32 bytes or more";
    w.add_tensor("unread", dtype::u8, tensor_shape{marker.size()}, marker.data(), marker.size());
    w.add_sentencepiece(file.sentencepiece_model());
    w.finish();
  }
  CHECK_NOTHROW(translator{extra});
  std::string bytes = taskmoe_test::read_file(extra);
  bytes[bytes.find("<unread tensor>") + 3] ^= 0x01;
  taskmoe_test::write_file(extra, bytes);
  CHECK_THROWS_WITH_AS(translator{extra}, taskmoe_test::contains("tensor 'unread': checksum mismatch"), format_error);
}

TEST_CASE("max_input_length: over-long inputs are cut and flagged, or rejected on request") {
  const translator t = translator::from_checkpoint(fixture_dir("task_target"), "en-de");
  const std::size_t model_limit = static_cast<std::size_t>(t.config().max_positions - 2);
  CHECK(t.max_input_length() == model_limit);
  const std::vector<int> long_src(model_limit + 40, 7);
  const std::vector<int> cut(long_src.begin(), long_src.begin() + static_cast<std::ptrdiff_t>(model_limit));

  translation_options o = greedy();
  const auto r = t.translate_tokens({long_src, {7, 89}}, o);
  CHECK(r[0].truncated);
  CHECK_FALSE(r[1].truncated);
  // Truncation keeps the first pieces: the result is the translation of exactly those.
  const auto c = t.translate_tokens({cut, {7, 89}}, o);  // same batch: bit-comparable
  CHECK_FALSE(c[0].truncated);
  CHECK(c[0].hypotheses[0].tokens == r[0].hypotheses[0].tokens);
  CHECK(c[0].hypotheses[0].score == r[0].hypotheses[0].score);

  SUBCASE("a smaller limit") {
    o.max_input_length = 3;
    CHECK(t.max_input_length(o) == 3);
    const auto s = t.translate_tokens({{7, 89, 19, 18}, {7, 89, 19}}, o);
    CHECK(s[0].truncated);
    CHECK_FALSE(s[1].truncated);
    CHECK(s[0].hypotheses[0].tokens == s[1].hypotheses[0].tokens);
    o.max_input_length = 100000;  // more than the model allows: the model's limit
    CHECK(t.max_input_length(o) == model_limit);
  }
  SUBCASE("truncate_input = false rejects, naming the input") {
    o.truncate_input = false;
    CHECK_THROWS_WITH_AS(t.translate_tokens({{7}, long_src}, o), doctest::Contains("input 1:"),
                         invalid_argument_error);
    CHECK_FALSE(t.translate_tokens({cut}, o)[0].truncated);  // at the limit is fine
  }
}

TEST_CASE("odd text gets one defined result per input" *
          doctest::skip(!tokenizer::sentencepiece::available)) {
  const translator t = translator::from_checkpoint(fixture_dir("task_target"), "en-de");
  std::string many_tokens;
  for (int i = 0; i < 100000; ++i) many_tokens += "a ";
  const std::vector<std::string> texts = {
      std::string("Open\0 the\0 file", 15),        // NUL bytes
      "\x01\x02\x1b[31mred\x07\x7f",                 // control characters
      " \t \r ",                                     // only whitespace
      "Mixed Кириллица 漢字 and ελληνικά",            // mixed scripts
      "Emoji 😀🎉 👩‍👩‍👧 flags 🇩🇪",                   // astral plane, ZWJ sequences
      "עברית right-to-left مرحبا \u200F\u202E",      // RTL text and bidi controls
      std::string(1 << 20, 'x'),                     // a 1 MB line
      many_tokens,                                   // 100,000 identical tokens
  };
  const auto r = t.translate_batch(texts, greedy());
  REQUIRE(r.size() == texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    CAPTURE(i);
    REQUIRE(r[i].hypotheses.size() == 1);
  }
  // NUL bytes are dropped before encoding, like the other C0 controls the normaliser drops.
  CHECK(t.encode(texts[0]) == t.encode("Open the file"));
  CHECK(t.encode("\x01" "a\x1b" "b") == t.encode("ab"));
  CHECK(r[2].hypotheses[0].tokens.empty());  // blank: nothing is run
  CHECK_FALSE(r[3].truncated);
  CHECK(r[6].truncated);
  CHECK(r[7].truncated);
  CHECK(t.encode(many_tokens).size() > t.max_input_length());
}

TEST_CASE("atomic writers: no partial output, no temporary litter, stale temporaries removed") {
  const taskmoe_test::temp_dir dir;
  const std::string out = dir.file("m.tmoe");
  const checkpoint ck(fixture_dir("task_target"));
  convert_options o;
  o.quantization = quantization_scheme::float32;
  o.created = "2025-01-31T12:00:00Z";

  SUBCASE("while writing: at most one temporary, and it is locked (a live writer's)") {
    std::size_t checks = 0;
    o.progress = [&](const convert_progress&) {
      std::size_t temps = 0;
      for (const auto& n : list_dir(dir.path())) {
        CHECK(n != "m.tmoe");  // the destination appears only complete
        if (n.rfind("m.tmoe.tmp-", 0) != 0) continue;
        ++temps;
        const int fd = ::open(dir.file(n).c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        CHECK(::flock(fd, LOCK_EX | LOCK_NB) != 0);
        ::close(fd);
      }
      CHECK(temps <= 1);
      ++checks;
    };
    convert_task(ck, "en-de", o, out);
    CHECK(checks > 10);
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"m.tmoe"});
  }
  SUBCASE("an abandoned conversion leaves nothing") {
    o.progress = [](const convert_progress& p) {
      if (p.tensor_index == 5) throw std::runtime_error("interrupted");
    };
    CHECK_THROWS_WITH(convert_task(ck, "en-de", o, out), "interrupted");
    CHECK(list_dir(dir.path()).empty());
  }
  SUBCASE("temporaries of killed writers are removed by the next writer; locked ones are kept") {
    taskmoe_test::write_file(dir.file("m.tmoe.tmp-dead01"), std::string(4096, 'x'));
    taskmoe_test::write_file(dir.file("m.tmoe.tmp-live01"), std::string(10, 'y'));
    taskmoe_test::write_file(dir.file("other.tmoe.tmp-dead02"), "z");  // another output's: not ours
    const int live = ::open(dir.file("m.tmoe.tmp-live01").c_str(), O_RDONLY);
    REQUIRE(live >= 0);
    REQUIRE(::flock(live, LOCK_EX) == 0);  // as a live writer holds its temporary
    convert_task(ck, "en-de", o, out);
    ::close(live);
    std::vector<std::string> names = list_dir(dir.path());
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"m.tmoe", "m.tmoe.tmp-live01", "other.tmoe.tmp-dead02"});
    CHECK_NOTHROW(tmoe_file{out});
  }
  SUBCASE("no overwrite: an existing destination is refused and kept") {
    taskmoe_test::write_file(out, "keep");
    CHECK_THROWS_AS(convert_task(ck, "en-de", o, out), io_error);
    CHECK(taskmoe_test::read_file(out) == "keep");
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"m.tmoe"});
  }
}
