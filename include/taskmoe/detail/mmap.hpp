#pragma once
// Read-only view of a whole file (POSIX). By default the file is memory-mapped, so weights are
// used in place and pages are shared between processes serving the same model. A mapping sees
// later writes to the same file (and faults with SIGBUS past a truncation), so the open
// descriptor is kept and check_unchanged() compares size and modification time with those at
// open. Replacing the file by rename (what our writers do) is safe: the mapping keeps the old
// inode. mapping = false reads the file into owned memory instead: immune to later changes.

#include <cerrno>    // errno
#include <cstddef>   // std::size_t, std::byte
#include <cstdint>   // std::uint64_t, std::uintptr_t
#include <cstring>   // std::strerror
#include <new>       // operator new(std::align_val_t)
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

  // Throws io_error naming the path when the file cannot be opened, mapped or read. An empty file
  // is valid and maps to {nullptr, 0} (mmap of length 0 is an error on POSIX, so it is not called).
  explicit mapped_file(std::string path, bool mapping = true) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw_errno("cannot open file");
    try {
      struct stat st {};
      if (::fstat(fd_, &st) != 0) throw_errno("cannot stat file");
      if (!S_ISREG(st.st_mode)) throw io_error(path_ + ": not a regular file");
      size_ = static_cast<std::size_t>(st.st_size);
      mtime_ = st.st_mtim;
      if (size_ > 0 && mapping) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
        if (p == MAP_FAILED) throw_errno("cannot map file");
        data_ = static_cast<const std::byte*>(p);
      } else if (size_ > 0) {
        read_all();
      }
    } catch (...) {
      unmap();
      throw;
    }
    if (!mapping) close_fd();  // owned bytes: nothing left to watch
  }

  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  // Moving keeps the mapping address, so views into the data stay valid across moves.
  mapped_file(mapped_file&& o) noexcept { take(o); }
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      unmap();
      take(o);
    }
    return *this;
  }
  ~mapped_file() { unmap(); }

  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

  // Throws io_error when the mapped file's size or modification time differs from when it was
  // opened: its bytes may have changed under the mapping. One fstat; a no-op for owned bytes.
  void check_unchanged() const {
    if (fd_ < 0) return;
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw_errno("cannot stat file");
    if (static_cast<std::size_t>(st.st_size) == size_ && st.st_mtim.tv_sec == mtime_.tv_sec &&
        st.st_mtim.tv_nsec == mtime_.tv_nsec)
      return;
    throw io_error(path_ + ": the file was modified after it was opened (" +
                   (static_cast<std::size_t>(st.st_size) == size_
                        ? std::string("same size, new modification time")
                        : "size " + std::to_string(size_) + " -> " + std::to_string(st.st_size)) +
                   "); its memory-mapped weights can no longer be trusted: open it again (replace "
                   "model files by rename, or load them with use_mmap = false)");
  }

 private:
  [[noreturn]] void throw_errno(const char* what) const {
    throw io_error(path_ + ": " + what + ": " + std::strerror(errno));
  }
  // Owned copy, 64-byte aligned like the mapping's tensors need.
  void read_all() {
    auto* buf = static_cast<std::byte*>(::operator new(size_, std::align_val_t{64}));
    data_ = buf;
    owned_ = true;
    std::size_t done = 0;
    while (done < size_) {
      const ssize_t n = ::pread(fd_, buf + done, size_ - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("cannot read file");
      if (n == 0) throw io_error(path_ + ": file shrank while it was read");
      done += static_cast<std::size_t>(n);
    }
  }
  void take(mapped_file& o) noexcept {
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    fd_ = std::exchange(o.fd_, -1);
    owned_ = std::exchange(o.owned_, false);
    mtime_ = o.mtime_;
  }
  void close_fd() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void unmap() noexcept {
    if (data_ != nullptr && owned_) {
      ::operator delete(const_cast<std::byte*>(data_), std::align_val_t{64});
    } else if (data_ != nullptr) {
      ::munmap(const_cast<std::byte*>(data_), size_);
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    owned_ = false;
    data_ = nullptr;
    size_ = 0;
  }

  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;         // kept open while mapped, for check_unchanged()
  bool owned_ = false;  // data_ was read into memory (operator delete), not mapped
  struct timespec mtime_ {};
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
