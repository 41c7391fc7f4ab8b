#include "test_helpers.hpp"

TEST_CASE("the version the code reports is the one CMake and meson parse from version.hpp") {
  // Independent sources: the text of include/taskmoe/version.hpp as the build systems read it
  // (CMakeLists.txt, meson.build: the three "#define TASKMOE_VERSION_<PART> <n>" lines), against
  // the compiled-in struct and string (which, with TASKMOE_SINGLE_HEADER_TESTS, come from the
  // generated single header: a stale amalgamation fails here).
  const std::string header =
      taskmoe_test::read_file(std::string(TASKMOE_TEST_DATA_DIR) + "/../../include/taskmoe/version.hpp");
  REQUIRE(!header.empty());
  const auto parse = [&](const std::string& part) {
    const std::string key = "\n#define TASKMOE_VERSION_" + part + " ";
    const auto at = header.find(key);
    REQUIRE_MESSAGE(at != std::string::npos, key);
    REQUIRE(header.find(key, at + 1) == std::string::npos);  // defined once
    std::size_t end = at + key.size();
    while (end < header.size() && header[end] >= '0' && header[end] <= '9') ++end;
    REQUIRE(end > at + key.size());
    return std::stoi(header.substr(at + key.size(), end - at - key.size()));
  };
  const int major = parse("MAJOR"), minor = parse("MINOR"), patch = parse("PATCH");
  CHECK(taskmoe::version.major == major);
  CHECK(taskmoe::version.minor == minor);
  CHECK(taskmoe::version.patch == patch);
  // The string is stringified by the preprocessor, the struct built from the integers: parse the
  // string back rather than rebuilding it from the same macros.
  int sm = -1, sn = -1, sp = -1;
  char tail = 0;
  REQUIRE(std::sscanf(taskmoe::version_string, "%d.%d.%d%c", &sm, &sn, &sp, &tail) == 3);
  CHECK(sm == major);
  CHECK(sn == minor);
  CHECK(sp == patch);
  CHECK(std::string(TASKMOE_VERSION_STRING) == taskmoe::version_string);
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
