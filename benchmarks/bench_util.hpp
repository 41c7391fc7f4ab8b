#pragma once
// Helpers shared by the benchmark programs: the machine line.

#include <fstream>  // std::ifstream
#include <string>   // std::string, std::getline

namespace taskmoe_bench {

// The CPU's model name from /proc/cpuinfo ("unknown" elsewhere).
inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

}  // namespace taskmoe_bench
