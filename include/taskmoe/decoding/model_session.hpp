#pragma once
// The Session of decoding/search.hpp over a transformer's incremental decoder.

#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/model/transformer.hpp>

namespace taskmoe {
namespace decoding {

// Session over a transformer's incremental decoder for an encoded batch. With `candidates` (a
// target-vocabulary shortlist: sorted distinct ids) the search sees a vocabulary of
// candidates.size() tokens: token i is candidates[i], in and out (to_id maps results back).
class model_session {
 public:
  model_session(const model::transformer& m, const model::encoder_output& enc, std::vector<int> candidates = {})
      : model_(m), state_(m.start_decoding(enc, iota(enc.batch()))) {
    if (!candidates.empty()) model_.restrict_output(state_, std::move(candidates));
  }
  int vocab() const noexcept { return model_.output_size(state_); }
  // The model's id of the search's token t.
  int to_id(int t) const { return state_.output ? state_.output_ids.at(static_cast<std::size_t>(t)) : t; }
  void step(const std::vector<int>& tokens, std::vector<float>& logits) {
    if (static_cast<int>(tokens.size()) != state_.rows)
      throw invalid_argument_error("model_session::step: token count differs from the row count");
    logits.resize(tokens.size() * static_cast<std::size_t>(vocab()));
    const std::vector<int>* ids = &tokens;
    if (state_.output) {
      ids_.resize(tokens.size());
      for (std::size_t i = 0; i < tokens.size(); ++i) ids_[i] = to_id(tokens[i]);
      ids = &ids_;
    }
    model_.step(state_, ids->data(), logits.data());
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
  std::vector<int> ids_;  // step's tokens as model ids (restricted output only)
};

}  // namespace decoding
}  // namespace taskmoe
