// Prints the installed taskmoe version; run by tests/package/run.sh.
#include <taskmoe/taskmoe.hpp>

#include <cstdio>

int main() {
  std::printf("taskmoe %s onednn=%d sentencepiece=%d\n", taskmoe::version_string, TASKMOE_HAS_ONEDNN,
              TASKMOE_HAS_SENTENCEPIECE);
  return taskmoe::detail::crc32c("123456789", 9) == 0xE3069283u ? 0 : 1;
}
