#pragma once
// Argument checks shared by the kernels. Every public kernel validates sizes, leading dimensions
// and pointers before touching memory: a bad call throws invalid_argument_error instead of
// reading out of bounds. The checks are O(1), negligible next to any kernel.

#include <string>  // std::string, std::to_string

#include <taskmoe/error.hpp>  // invalid_argument_error

namespace taskmoe {
namespace kernels {
namespace detail {

[[noreturn]] inline void fail(const char* kernel, const std::string& problem) {
  throw invalid_argument_error(std::string("taskmoe::kernels::") + kernel + ": " + problem);
}

inline void check_size(const char* kernel, const char* name, long long value) {
  if (value < 0) fail(kernel, std::string(name) + " = " + std::to_string(value) + " is negative");
}

// A row-major [rows, cols] matrix with leading dimension ld: ld >= cols, and a non-null pointer
// unless the matrix is empty.
inline void check_matrix(const char* kernel, const char* name, const void* ptr, long long rows,
                         long long cols, long long ld) {
  if (rows < 0 || cols < 0) {
    fail(kernel, std::string(name) + " has negative size " + std::to_string(rows) + " x " +
                     std::to_string(cols));
  }
  if (ld < cols || ld < 1) {
    fail(kernel, std::string("leading dimension of ") + name + " (" + std::to_string(ld) +
                     ") is smaller than its " + std::to_string(cols) + " columns");
  }
  if (ptr == nullptr && rows > 0 && cols > 0) fail(kernel, std::string(name) + " is null");
}

// A vector of n elements: non-null unless n == 0.
inline void check_vector(const char* kernel, const char* name, const void* ptr, long long n) {
  check_size(kernel, name, n);
  if (ptr == nullptr && n > 0) fail(kernel, std::string(name) + " is null");
}

}  // namespace detail
}  // namespace kernels
}  // namespace taskmoe
