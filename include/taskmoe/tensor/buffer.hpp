#pragma once
// Owned storage that is not zero-filled. The decoder's K/V cache is sized for a capacity its rows
// may never reach: std::vector would write (and so commit) every page of it; here a page costs
// memory only once something is written to it.

#include <cstddef>  // std::size_t
#include <memory>   // std::unique_ptr

namespace taskmoe {

template <class T>
class uninitialized_buffer {
 public:
  uninitialized_buffer() = default;
  explicit uninitialized_buffer(std::size_t n) : data_(n ? new T[n] : nullptr), size_(n) {}
  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  std::unique_ptr<T[]> data_;  // new T[n]: default-initialized, i.e. untouched for float
  std::size_t size_ = 0;
};

}  // namespace taskmoe
