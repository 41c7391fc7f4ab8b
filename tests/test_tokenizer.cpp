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

TEST_CASE("piece ids from the serialized model agree with SentencePiece") {
  const checkpoint ck(taskmoe_test::fixture_dir("task_target"));
  const std::string& bytes = ck.sentencepiece_model();
  for (const auto& t : ck.tasks()) CHECK(tokenizer::find_piece_id(bytes, t.target_tag) >= 0);
  CHECK(tokenizer::find_piece_id(bytes, "<no such piece>") == -1);
  CHECK_THROWS_AS(tokenizer::find_piece_id(std::string("\x0a\xff", 2), "x"), format_error);
  const tokenizer::sentencepiece sp(bytes);
  if (tokenizer::sentencepiece::available) {
    for (const auto& t : ck.tasks())
      CHECK(tokenizer::find_piece_id(bytes, t.target_tag) == sp.piece_to_id(t.target_tag));
    const auto ids = sp.encode("Open file");
    CHECK(!ids.empty());
    CHECK(sp.decode(ids) == "Open file");
    CHECK_THROWS_AS(tokenizer::sentencepiece("not a model"), format_error);
  } else {
    CHECK_THROWS_AS(sp.encode("x"), invalid_argument_error);
  }
}

TEST_CASE("a SentencePiece model with an empty piece is a format_error (fuzz_sentencepiece)" *
          doctest::skip(!tokenizer::sentencepiece::available)) {
  // tests/fuzz/regressions/sentencepiece/empty-piece-darts-exception: libsentencepiece throws
  // Darts::Details::Exception ("zero-length key") for it, which used to escape the constructor.
  const std::string bytes(
      "\x0a\x0e\x0a\x05\x3c\x70\x61\x64\x3e\x15\x00\x00\x00\x00\x18\x03\x0a\x0e\x0a\x05\x3c\x75"
      "\x6e\x6b\x3e\x15\x00\x00\x00\x00\x18\x02\x0a\x0c\x0a\x03\x04\x0a\x0e\x0a\x05\x00\x18\x02"
      "\x0a\x0c\x85\xe8\xbf\x0a\x08\x0a\x01\x6f\x15\x67\xe3\x1e\xc0\x0a\x08\x0a\x01\x65\x15\x63"
      "\x7b\x26\xc0\x28\xc0\x0a",
      72);
  CHECK_THROWS_AS(tokenizer::sentencepiece{bytes}, format_error);
}
