#pragma once
// SentencePiece tokenizer loaded from the model bytes embedded in a .tmoe file (or a checkpoint's
// sentencepiece.model). Needs TASKMOE_HAS_SENTENCEPIECE (the build links libsentencepiece);
// without it, constructing one succeeds but every text method throws invalid_argument_error, so
// the token-level API of the translator keeps working.

#include <exception>    // std::exception
#include <memory>       // std::unique_ptr
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <vector>       // std::vector

#include <taskmoe/config.hpp>  // TASKMOE_HAS_SENTENCEPIECE
#include <taskmoe/error.hpp>

#if TASKMOE_HAS_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace taskmoe {
namespace tokenizer {

class sentencepiece {
 public:
  static constexpr bool available = TASKMOE_HAS_SENTENCEPIECE != 0;

  explicit sentencepiece(const std::string& model_bytes) {
#if TASKMOE_HAS_SENTENCEPIECE
    sp_ = std::make_unique<::sentencepiece::SentencePieceProcessor>();
    ::sentencepiece::util::Status status;
    try {
      status = sp_->LoadFromSerializedProto(model_bytes);
    } catch (const std::exception& e) {
      // libsentencepiece reports some malformed models by throwing its own exceptions (an empty
      // piece: Darts "zero-length key", found by tests/fuzz/fuzz_sentencepiece): one error type.
      throw format_error("sentencepiece model", std::string("cannot load: ") + e.what());
    }
    if (!status.ok())
      throw format_error("sentencepiece model", "cannot load: " + status.ToString());
#else
    (void)model_bytes;
#endif
  }

  // Pieces of `text` (the caller validated UTF-8). Thread-safe (SentencePiece encode is const).
  std::vector<int> encode(std::string_view text) const {
#if TASKMOE_HAS_SENTENCEPIECE
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    if (!status.ok()) throw invalid_argument_error("sentencepiece encode failed: " + status.ToString());
    return ids;
#else
    (void)text;
    unavailable();
#endif
  }

  std::string decode(const std::vector<int>& ids) const {
#if TASKMOE_HAS_SENTENCEPIECE
    std::string text;
    const auto status = sp_->Decode(ids, &text);
    if (!status.ok()) throw invalid_argument_error("sentencepiece decode failed: " + status.ToString());
    return text;
#else
    (void)ids;
    unavailable();
#endif
  }

  // Id of a piece, or -1 when it is not in the vocabulary (or SentencePiece is unavailable).
  int piece_to_id(const std::string& piece) const {
#if TASKMOE_HAS_SENTENCEPIECE
    const int id = sp_->PieceToId(piece);
    return sp_->IdToPiece(id) == piece ? id : -1;
#else
    (void)piece;
    return -1;
#endif
  }

 private:
#if TASKMOE_HAS_SENTENCEPIECE
  std::unique_ptr<::sentencepiece::SentencePieceProcessor> sp_;
#else
  [[noreturn]] static void unavailable() {
    throw invalid_argument_error(
        "text input needs SentencePiece: this build has TASKMOE_HAS_SENTENCEPIECE=0; use the "
        "token-level API (translate_tokens) or rebuild with libsentencepiece");
  }
#endif
};

}  // namespace tokenizer
}  // namespace taskmoe
