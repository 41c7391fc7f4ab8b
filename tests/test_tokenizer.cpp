// UTF-8 validation, piece lookup without SentencePiece, the SentencePiece wrapper.

#include "test_model_support.hpp"

using namespace taskmoe;

TEST_CASE("find_invalid_utf8 reports the first bad byte") {
  using tokenizer::find_invalid_utf8;
  constexpr auto ok = std::string_view::npos;
  CHECK(find_invalid_utf8("") == ok);
  CHECK(find_invalid_utf8("plain ascii") == ok);
  CHECK(find_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80") == ok);
  CHECK(find_invalid_utf8("ab\xC3") == 2);              // truncated
  CHECK(find_invalid_utf8("\xC0\xAF") == 0);            // overlong
  CHECK(find_invalid_utf8("x\xED\xA0\x80") == 1);       // surrogate
  CHECK(find_invalid_utf8("\xF4\x90\x80\x80") == 0);    // > U+10FFFF
  CHECK(find_invalid_utf8("a\x80") == 1);               // stray continuation
  CHECK(find_invalid_utf8("\xE2\x82(") == 0);
  CHECK_THROWS_WITH_AS(tokenizer::check_utf8("ok\xFF", "text"), "text: invalid UTF-8 at byte 2",
                       invalid_argument_error);
  CHECK(tokenizer::is_blank(" \t\r\n"));
  CHECK_FALSE(tokenizer::is_blank(" a "));
}

TEST_CASE("piece ids come from the serialized model without SentencePiece") {
  const checkpoint ck(taskmoe_test::fixture_dir("task_target"));
  const std::string& bytes = ck.sentencepiece_model();
  for (const auto& t : ck.tasks()) CHECK(tokenizer::find_piece_id(bytes, t.target_tag) >= 0);
  CHECK(tokenizer::find_piece_id(bytes, "<no such piece>") == -1);
  CHECK_THROWS_AS(tokenizer::find_piece_id(std::string("\x0a\xff", 2), "x"), format_error);
}

// Each of the next two needs one build: with SentencePiece or without. The other build compiles
// it as skipped, so the run says "skipped" instead of passing without asserting.
TEST_CASE("piece ids from the serialized model agree with SentencePiece" *
          doctest::skip(!tokenizer::sentencepiece::available)) {
  const checkpoint ck(taskmoe_test::fixture_dir("task_target"));
  const std::string& bytes = ck.sentencepiece_model();
  const tokenizer::sentencepiece sp(bytes);
  for (const auto& t : ck.tasks())
    CHECK(tokenizer::find_piece_id(bytes, t.target_tag) == sp.piece_to_id(t.target_tag));
  const auto ids = sp.encode("Open file");
  CHECK(!ids.empty());
  CHECK(sp.decode(ids) == "Open file");
  CHECK_THROWS_AS(tokenizer::sentencepiece("not a model"), format_error);
}

TEST_CASE("without SentencePiece, encoding text is refused with a clear error" *
          doctest::skip(tokenizer::sentencepiece::available)) {
  const checkpoint ck(taskmoe_test::fixture_dir("task_target"));
  const tokenizer::sentencepiece sp(ck.sentencepiece_model());
  CHECK_THROWS_AS(sp.encode("x"), invalid_argument_error);
}
