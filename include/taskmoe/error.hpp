#pragma once
// Exception hierarchy. Everything the library throws on bad input derives from taskmoe::error,
// so an application can catch one type; the subclasses say which kind of input was wrong.

#include <stdexcept>  // std::runtime_error
#include <string>     // std::string
#include <utility>    // std::move

namespace taskmoe {

// Base of every taskmoe exception.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A file (checkpoint, safetensors, .tmoe) is malformed. what() is "<file>: <problem>" so the
// user sees which file and what is wrong with it; both parts are also available separately.
class format_error : public error {
 public:
  format_error(std::string file, std::string problem)
      : error(file + ": " + problem), file_(std::move(file)), problem_(std::move(problem)) {}
  const std::string& file() const noexcept { return file_; }
  const std::string& problem() const noexcept { return problem_; }

 private:
  std::string file_;
  std::string problem_;
};

// A model configuration is invalid; the message starts with the offending field's path
// (for example "moe.encoder.layers: ...").
class config_error : public error {
 public:
  using error::error;
};

// A caller passed an argument the API cannot accept (unknown task, wrong dtype, ...).
class invalid_argument_error : public error {
 public:
  using error::error;
};

// The operating system refused a file operation (missing file, permission, disk full).
class io_error : public error {
 public:
  using error::error;
};

}  // namespace taskmoe
