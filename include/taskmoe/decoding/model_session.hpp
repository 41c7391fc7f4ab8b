#pragma once
// The Session of decoding/search.hpp over a transformer's incremental decoder.

#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/model/transformer.hpp>

namespace taskmoe {
namespace decoding {

// Session over a transformer's incremental decoder for an encoded batch.
class model_session {
 public:
  model_session(const model::transformer& m, const model::encoder_output& enc)
      : model_(m), state_(m.start_decoding(enc, iota(enc.batch()))) {}
  int vocab() const noexcept { return model_.config().vocab_size; }
  void step(const std::vector<int>& tokens, std::vector<float>& logits) {
    if (static_cast<int>(tokens.size()) != state_.rows)
      throw invalid_argument_error("model_session::step: token count differs from the row count");
    logits.resize(tokens.size() * static_cast<std::size_t>(vocab()));
    model_.step(state_, tokens.data(), logits.data());
  }
  void reorder(const std::vector<int>& rows) { model_.reorder(state_, rows); }
  model::decoder_state& state() noexcept { return state_; }

 private:
  static std::vector<int> iota(int n) {
    std::vector<int> v(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
    return v;
  }
  const model::transformer& model_;
  model::decoder_state state_;
};

}  // namespace decoding
}  // namespace taskmoe
