#pragma once
// Command-line reading shared by taskmoe-convert and taskmoe-translate (not part of the library).

#include <string>  // std::string

namespace taskmoe_cli {

// A bad command line: main() prints the message and exits with status 2.
struct usage_error {
  std::string message;
};

// Walks argv one option at a time; "--name=value" is split so both spellings work.
class arg_cursor {
 public:
  arg_cursor(int argc, char** argv) : argc_(argc), argv_(argv) {}

  bool next() {
    if (++i_ >= argc_) return false;
    name_ = argv_[i_];
    value_.clear();
    inline_ = false;
    if (name_.rfind("--", 0) == 0) {
      const auto eq = name_.find('=');
      if (eq != std::string::npos) {
        value_ = name_.substr(eq + 1);
        name_.resize(eq);
        inline_ = true;
      }
    }
    return true;
  }
  const std::string& name() const noexcept { return name_; }
  // The option's value: inline, or the next argument.
  std::string take() {
    if (inline_) return value_;
    if (i_ + 1 >= argc_) throw usage_error{name_ + " needs a value"};
    return argv_[++i_];
  }
  // For options without a value.
  void flag() const {
    if (inline_) throw usage_error{name_ + " takes no value"};
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string name_, value_;
  bool inline_ = false;
};

}  // namespace taskmoe_cli
