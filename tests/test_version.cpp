#include "test_helpers.hpp"

TEST_CASE("the version macros, constants and string agree") {
  CHECK(taskmoe::version.major == TASKMOE_VERSION_MAJOR);
  CHECK(taskmoe::version.minor == TASKMOE_VERSION_MINOR);
  CHECK(taskmoe::version.patch == TASKMOE_VERSION_PATCH);
  const std::string expected = std::to_string(TASKMOE_VERSION_MAJOR) + "." +
                               std::to_string(TASKMOE_VERSION_MINOR) + "." +
                               std::to_string(TASKMOE_VERSION_PATCH);
  CHECK(std::string(taskmoe::version_string) == expected);
}

TEST_CASE("feature macros are defined to 0 or 1") {
  CHECK((TASKMOE_HAS_ONEDNN == 0 || TASKMOE_HAS_ONEDNN == 1));
  CHECK((TASKMOE_HAS_SENTENCEPIECE == 0 || TASKMOE_HAS_SENTENCEPIECE == 1));
}

TEST_CASE("format_error names the file and the problem") {
  const taskmoe::format_error e("model.tmoe", "wrong magic");
  CHECK(std::string(e.what()) == "model.tmoe: wrong magic");
  CHECK(e.file() == "model.tmoe");
  CHECK(e.problem() == "wrong magic");
  const taskmoe::error& base = e;
  CHECK(dynamic_cast<const std::runtime_error*>(&base) != nullptr);
}
