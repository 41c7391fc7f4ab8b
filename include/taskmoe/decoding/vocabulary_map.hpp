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
#include <map>          // std::map
#include <sstream>      // std::ostringstream
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <unordered_map>  // std::unordered_map
#include <vector>       // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/tokenizer/vocabulary.hpp>  // for_each_piece

namespace taskmoe {
namespace decoding {

class vocabulary_map {
 public:
  // Reads rules from `text`; `id_of` maps a piece to its id, or -1 when the vocabulary lacks it. A
  // rule whose source holds an unknown piece can never match and is dropped; unknown target
  // pieces are dropped (a map made for another vocabulary degrades, it does not fail). A line
  // without a tab, or with an empty piece (two spaces in a row), is a format_error naming `name`.
  vocabulary_map(std::string_view text, const std::function<int(std::string_view)>& id_of, std::vector<int> specials,
                 const std::string& name = "vocabulary map") {
    std::size_t number = 0;
    while (!text.empty()) {
      ++number;
      const std::size_t eol = std::min(text.find('\n'), text.size());
      std::string_view line = text.substr(0, eol);
      text.remove_prefix(std::min(eol + 1, text.size()));
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) continue;
      const std::size_t tab = line.find('\t');
      const auto bad = [&](const std::string& what) {
        throw format_error(name, "line " + std::to_string(number) + ": " + what);
      };
      if (tab == std::string_view::npos) bad("no tab between the source n-gram and the target pieces");
      std::vector<int> key, targets;
      bool known = true;
      const auto pieces = [&](std::string_view part, std::vector<int>& out, bool source) {
        if (part.empty()) return;
        std::size_t start = 0;
        for (;;) {
          const std::size_t end = std::min(part.find(' ', start), part.size());
          if (end == start) bad("an empty piece (leading, trailing or double space)");
          const int id = id_of(part.substr(start, end - start));
          if (id >= 0) out.push_back(id);
          else if (source) known = false;
          if (end == part.size()) return;
          start = end + 1;
        }
      };
      pieces(line.substr(0, tab), key, true);
      pieces(line.substr(tab + 1), targets, false);
      if (!known) continue;
      if (key.empty()) {
        fixed_.insert(fixed_.end(), targets.begin(), targets.end());
        continue;
      }
      if (key.size() > rules_.size()) rules_.resize(key.size());
      auto& slot = rules_[key.size() - 1][key];
      slot.insert(slot.end(), targets.begin(), targets.end());
    }
    fixed_.insert(fixed_.end(), specials.begin(), specials.end());
    sort_unique(fixed_);
  }

  // The same over a SentencePiece model's pieces (serialized ModelProto): ids below `vocab_size`.
  static vocabulary_map for_sentencepiece(std::string_view text, std::string_view spm_model, int vocab_size,
                                          std::vector<int> specials, const std::string& name) {
    std::unordered_map<std::string_view, int> ids;  // views into spm_model: no copy per piece
    tokenizer::for_each_piece(spm_model, [&](int id, std::string_view piece) {
      if (id < vocab_size) ids.emplace(piece, id);
      return false;
    });
    const auto id_of = [&](std::string_view piece) {
      const auto it = ids.find(piece);
      return it == ids.end() ? -1 : it->second;
    };
    return vocabulary_map(text, id_of, std::move(specials), name);
  }

  // A map file's whole text (io_error naming `path` when it cannot be read).
  static std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw io_error("cannot open vocabulary map '" + path + "'");
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) throw io_error(path + ": read failed");
    return text.str();
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
