#pragma once
// A target-vocabulary shortlist in CTranslate2's vocabulary map format (its `vmap.txt`, so a map
// made for one engine serves the other): one rule per line,
//
//   source n-gram<TAB>target pieces
//
// pieces separated by single spaces. A rule whose source is empty lists pieces that are always
// candidates. A batch's candidates are those, the special tokens (unk, bos, eos), the targets of
// every rule whose source n-gram occurs in one of the batch's sources, and the target prefix.
// Decoding then scores only the candidates (layers::linear::select_rows): the output projection
// and the softmax shrink from the vocabulary to the candidates, and the log-probabilities are
// normalized over them, as in CTranslate2 (`use_vmap`).

#include <algorithm>    // std::sort, std::unique
#include <cstddef>      // std::size_t
#include <fstream>      // std::ifstream
#include <functional>   // std::function
#include <istream>      // std::istream
#include <map>          // std::map
#include <string>       // std::string, std::getline
#include <string_view>  // std::string_view
#include <vector>       // std::vector

#include <taskmoe/error.hpp>

namespace taskmoe {
namespace decoding {

class vocabulary_map {
 public:
  // Reads rules from `in`; `id_of` maps a piece to its id, or -1 when the vocabulary lacks it. A
  // rule whose source holds an unknown piece can never match and is dropped; unknown target
  // pieces are dropped (a map made for another vocabulary degrades, it does not fail). A line
  // without a tab, or with an empty piece (two spaces in a row), is a format_error naming `name`.
  vocabulary_map(std::istream& in, const std::function<int(std::string_view)>& id_of, std::vector<int> specials,
                 const std::string& name = "vocabulary map") {
    std::string line;
    std::size_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      const std::size_t tab = line.find('\t');
      const auto bad = [&](const std::string& what) {
        throw format_error(name, "line " + std::to_string(number) + ": " + what);
      };
      if (tab == std::string::npos) bad("no tab between the source n-gram and the target pieces");
      std::vector<int> key, targets;
      bool known = true;
      const auto pieces = [&](std::string_view text, std::vector<int>& out, bool source) {
        if (text.empty()) return;
        std::size_t start = 0;
        for (;;) {
          const std::size_t end = std::min(text.find(' ', start), text.size());
          if (end == start) bad("an empty piece (leading, trailing or double space)");
          const int id = id_of(text.substr(start, end - start));
          if (id >= 0) out.push_back(id);
          else if (source) known = false;
          if (end == text.size()) return;
          start = end + 1;
        }
      };
      pieces(std::string_view(line).substr(0, tab), key, true);
      pieces(std::string_view(line).substr(tab + 1), targets, false);
      if (!known) continue;
      if (key.empty()) {
        fixed_.insert(fixed_.end(), targets.begin(), targets.end());
        continue;
      }
      if (key.size() > rules_.size()) rules_.resize(key.size());
      auto& slot = rules_[key.size() - 1][key];
      slot.insert(slot.end(), targets.begin(), targets.end());
    }
    if (in.bad()) throw io_error(name + ": read failed");
    fixed_.insert(fixed_.end(), specials.begin(), specials.end());
    sort_unique(fixed_);
  }

  static vocabulary_map from_file(const std::string& path, const std::function<int(std::string_view)>& id_of,
                                  std::vector<int> specials) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw io_error("cannot open vocabulary map '" + path + "'");
    return vocabulary_map(in, id_of, std::move(specials), path);
  }

  // The sorted, distinct candidate ids for a batch of source id sequences and a target prefix.
  std::vector<int> candidates(const std::vector<std::vector<int>>& sources, const std::vector<int>& prefix) const {
    std::vector<int> out = fixed_;
    std::vector<int> gram;
    for (const auto& src : sources)
      for (std::size_t i = 0; i < src.size(); ++i) {
        gram.clear();
        for (std::size_t n = 0; n < rules_.size() && i + n < src.size(); ++n) {
          gram.push_back(src[i + n]);
          const auto it = rules_[n].find(gram);
          if (it != rules_[n].end()) out.insert(out.end(), it->second.begin(), it->second.end());
        }
      }
    out.insert(out.end(), prefix.begin(), prefix.end());
    sort_unique(out);
    return out;
  }

  std::size_t rules() const noexcept {
    std::size_t n = 0;
    for (const auto& r : rules_) n += r.size();
    return n;
  }
  const std::vector<int>& always() const noexcept { return fixed_; }

 private:
  static void sort_unique(std::vector<int>& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  }

  std::vector<std::map<std::vector<int>, std::vector<int>>> rules_;  // [n-gram length - 1]
  std::vector<int> fixed_;                                           // always candidates, sorted
};

}  // namespace decoding
}  // namespace taskmoe
