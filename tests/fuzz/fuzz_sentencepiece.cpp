// libFuzzer harness: the embedded SentencePiece model bytes. Always: find_piece_id, the small
// ModelProto reader the translator uses to find the target tag (tokenizer/vocabulary.hpp). With
// TASKMOE_HAS_SENTENCEPIECE: the tokenizer loader (tokenizer::sentencepiece, which hands the bytes
// to libsentencepiece) and, when it loads, encode / decode / piece lookups. libsentencepiece itself
// is not instrumented, so coverage guidance comes from our code only; ASan still sees its heap.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t

#include "fuzz_support.hpp"

namespace {

using namespace taskmoe;

void write_seeds(const std::string& dir) {
  using namespace taskmoe_fuzz;
  const std::string& good = tiny_sentencepiece();
  write_seed(dir, "tiny.model", good);
  write_seed(dir, "truncated", good.substr(0, good.size() / 3));
  write_seed(dir, "fake", "fake sentencepiece model bytes");  // what the checkpoint tests embed
  // Hand-made protos: field 1 (a piece message) holding field 1 (the piece string).
  write_seed(dir, "one-piece", std::string("\x0a\x07\x0a\x05<2de>", 9));
  write_seed(dir, "length-past-end", std::string("\x0a\x7f\x0a\x05<2de>", 9));
  write_seed(dir, "varint-too-long", std::string(11, '\xff'));
  write_seed(dir, "fixed64-field", std::string("\x09\x01\x02\x03\x04\x05\x06\x07\x08", 9));
}

}  // namespace

TASKMOE_FUZZ_SEEDS(write_seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes = taskmoe_fuzz::bytes_of(data, size);
  for (const char* piece : {"<2de>", "<unk>", "\xe2\x96\x81the", ""}) {
    try {
      (void)tokenizer::find_piece_id(bytes, piece);
    } catch (const format_error&) {
    }
  }
#if TASKMOE_HAS_SENTENCEPIECE
  try {
    const tokenizer::sentencepiece sp(bytes);
    for (const char* text : {"the cat sat on the mat", "Grüße, 世界! \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d", " ", ""}) {
      const std::vector<int> ids = sp.encode(text);
      (void)sp.decode(ids);
    }
    (void)sp.piece_to_id("<2de>");
    (void)sp.piece_to_id("");
  } catch (const taskmoe::error&) {
  }
#endif
  return 0;
}
