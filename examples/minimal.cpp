// The shortest useful embedding of taskmoe: open a per-task model, translate the arguments.
//   minimal de-en.tmoe "Guten Morgen." "Wie spät ist es?"

#include <cstdio>     // std::printf, std::fprintf
#include <exception>  // std::exception

#include <taskmoe/translator.hpp>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.tmoe TEXT...\n", argv[0]);
    return 2;
  }
  try {
    const taskmoe::translator translator(argv[1]);  // memory-mapped, checksums verified
    for (int i = 2; i < argc; ++i)
      std::printf("%s\n", translator.translate(argv[i]).hypotheses[0].text.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
