#pragma once
// Overflow-checked size arithmetic. Every size or offset read from a file goes through these
// before it is used to form a pointer, so a hostile file cannot wrap an addition around and pass
// a bounds check.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint64_t
#include <type_traits>

namespace taskmoe {
namespace detail {

// Return false (and leave *out unspecified) when the exact result does not fit in T.
template <typename T>
inline bool checked_add(T a, T b, T* out) noexcept {
  static_assert(std::is_unsigned<T>::value, "sizes are unsigned");
  return !__builtin_add_overflow(a, b, out);
}

template <typename T>
inline bool checked_mul(T a, T b, T* out) noexcept {
  static_assert(std::is_unsigned<T>::value, "sizes are unsigned");
  return !__builtin_mul_overflow(a, b, out);
}

// product(dims[0..n)) * element_size; false on overflow. An empty product is 1 (a scalar).
inline bool checked_byte_size(const std::uint64_t* dims, std::size_t n, std::uint64_t element_size,
                              std::uint64_t* out) noexcept {
  std::uint64_t r = element_size;
  for (std::size_t i = 0; i < n; ++i) {
    if (!checked_mul(r, dims[i], &r)) return false;
  }
  *out = r;
  return true;
}

// True when [offset, offset + size) lies inside [0, limit) without overflow.
inline bool range_within(std::uint64_t offset, std::uint64_t size, std::uint64_t limit) noexcept {
  std::uint64_t end = 0;
  return checked_add(offset, size, &end) && end <= limit;
}

// Round up to a multiple of `align` (a power of two); false on overflow.
inline bool checked_align_up(std::uint64_t v, std::uint64_t align, std::uint64_t* out) noexcept {
  std::uint64_t t = 0;
  if (!checked_add(v, align - 1, &t)) return false;
  *out = t & ~(align - 1);
  return true;
}

}  // namespace detail
}  // namespace taskmoe
