#include "test_helpers.hpp"

using taskmoe::detail::mapped_file;

TEST_CASE("mapped_file maps a file's bytes read-only") {
  taskmoe_test::temp_dir dir;
  taskmoe_test::write_file(dir.file("a.bin"), "hello");
  mapped_file f(dir.file("a.bin"));
  REQUIRE(f.size() == 5);
  CHECK(std::string(reinterpret_cast<const char*>(f.data()), 5) == "hello");
  mapped_file g(std::move(f));  // moving keeps the address
  CHECK(g.size() == 5);
  CHECK(f.data() == nullptr);
}

TEST_CASE("mapped_file handles an empty file") {
  taskmoe_test::temp_dir dir;
  taskmoe_test::write_file(dir.file("empty"), "");
  mapped_file f(dir.file("empty"));
  CHECK(f.size() == 0);
  CHECK(f.data() == nullptr);
}

TEST_CASE("mapped_file reports a missing file with its path") {
  CHECK_THROWS_WITH_AS(mapped_file("/nonexistent/x.tmoe"),
                       taskmoe_test::contains("/nonexistent/x.tmoe: cannot open file"), taskmoe::io_error);
  taskmoe_test::temp_dir dir;
  CHECK_THROWS_WITH_AS(mapped_file(dir.path()), taskmoe_test::contains("not a regular file"),
                       taskmoe::io_error);
}
