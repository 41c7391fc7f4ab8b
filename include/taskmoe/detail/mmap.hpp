#pragma once
// Read-only memory-mapped file (POSIX). Model files are mapped, never read into buffers, so that
// weights are used in place and pages are shared between processes serving the same model.

#include <cerrno>    // errno
#include <cstddef>   // std::size_t, std::byte
#include <cstdint>   // std::uint64_t, std::uintptr_t
#include <cstring>   // std::strerror
#include <string>    // std::string
#include <utility>   // std::exchange

#include <fcntl.h>     // open
#include <sys/mman.h>  // mmap, munmap
#include <sys/stat.h>  // fstat
#include <unistd.h>    // close

#include <taskmoe/error.hpp>

namespace taskmoe {
namespace detail {

class mapped_file {
 public:
  mapped_file() = default;

  // Throws io_error naming the path when the file cannot be opened or mapped. An empty file is
  // valid and maps to {nullptr, 0} (mmap of length 0 is an error on POSIX, so it is not called).
  explicit mapped_file(std::string path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("cannot open file");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int saved = errno;
      ::close(fd);
      errno = saved;
      throw_errno("cannot stat file");
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw io_error(path_ + ": not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int saved = errno;
        ::close(fd);
        errno = saved;
        throw_errno("cannot map file");
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);  // the mapping keeps the file alive
  }

  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  // Moving keeps the mapping address, so views into the data stay valid across moves.
  mapped_file(mapped_file&& o) noexcept
      : path_(std::move(o.path_)),
        data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)) {}
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~mapped_file() { unmap(); }

  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

 private:
  [[noreturn]] void throw_errno(const char* what) const {
    throw io_error(path_ + ": " + what + ": " + std::strerror(errno));
  }
  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// Tells the kernel we are done with these mapped pages: they leave our resident set (the page
// cache keeps them; touching them again faults them back in). Only for read-only, file-backed
// mappings, where this never loses data.
inline void release_pages(const void* p, std::uint64_t bytes) noexcept {
  if (p == nullptr || bytes == 0) return;
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page <= 0) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(p) / static_cast<std::uintptr_t>(page) *
                     static_cast<std::uintptr_t>(page);
  const auto end = reinterpret_cast<std::uintptr_t>(p) + static_cast<std::uintptr_t>(bytes);
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace detail
}  // namespace taskmoe
