// libFuzzer harness: a target-vocabulary map (CTranslate2's vmap.txt format,
// decoding/vocabulary_map.hpp). Each input is parsed over a small fixed vocabulary (pieces "a".."p"
// are ids 0..15, anything else unknown) with the specials {1, 2, 3}; when it parses, candidates
// are drawn for a few sources and a prefix. A format_error is the only accepted failure; the
// candidates must be sorted, distinct, inside the vocabulary and hold the specials and the prefix.

#include <algorithm>    // std::is_sorted, std::adjacent_find, std::binary_search
#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint8_t
#include <cstdlib>      // std::abort
#include <string_view>  // std::string_view
#include <vector>       // std::vector

#include <taskmoe/decoding/vocabulary_map.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto id_of = [](std::string_view piece) {
    return piece.size() == 1 && piece[0] >= 'a' && piece[0] <= 'p' ? piece[0] - 'a' : -1;
  };
  try {
    const taskmoe::decoding::vocabulary_map vm(in, id_of, {1, 2, 3}, "fuzz");
    const std::vector<int> prefix = {15, 4};
    for (const auto& sources : {std::vector<std::vector<int>>{{0, 1, 2, 3}, {4, 5}},
                                std::vector<std::vector<int>>{{6, 6, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}}}) {
      const std::vector<int> c = vm.candidates(sources, prefix);
      const bool ok = std::is_sorted(c.begin(), c.end()) && std::adjacent_find(c.begin(), c.end()) == c.end() &&
                      (c.empty() || (c.front() >= 0 && c.back() < 16));
      bool holds = true;
      for (int t : {1, 2, 3, 15, 4}) holds = holds && std::binary_search(c.begin(), c.end(), t);
      if (!ok || !holds) std::abort();
    }
  } catch (const taskmoe::format_error&) {
  }
  return 0;
}
