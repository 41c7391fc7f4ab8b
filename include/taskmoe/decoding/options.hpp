#pragma once
// Options and results of the search algorithms (docs/decoding.md).

#include <cstdint>  // std::uint64_t
#include <vector>   // std::vector

namespace taskmoe {
namespace decoding {

struct search_options {
  int beam_size = 1;             // 1: greedy or sampling; > 1: beam search
  int num_hypotheses = 1;        // n-best returned per input, <= beam_size
  float length_penalty = 1.0f;   // normalized = score / length^length_penalty
  int min_length = 0;            // EOS is forbidden while fewer tokens were generated
  int sampling_topk = 1;         // 1: argmax; 0: whole vocabulary; k: the k most likely
  float sampling_topp = 1.0f;    // nucleus: smallest set with cumulative probability >= p
  float sampling_temperature = 1.0f;
  std::uint64_t seed = 0;        // sampling seed; 0 draws one from std::random_device
  float repetition_penalty = 1.0f;  // CTRL penalty on already generated tokens (1: off)
  int no_repeat_ngram_size = 0;     // forbid repeating any n-gram of this size (0: off)
};

struct hypothesis {
  std::vector<int> tokens;  // generated ids, ending with EOS unless cut at the length limit
  double score = 0;         // sum of the tokens' log-probabilities
  double normalized = 0;    // score / tokens.size()^length_penalty
};

}  // namespace decoding
}  // namespace taskmoe
