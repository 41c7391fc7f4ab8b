#pragma once
// An output file that appears at its path complete or not at all (POSIX).
//
// Bytes go to an unnamed temporary file in the destination's directory (O_TMPFILE), which the
// kernel frees if the process dies, even by SIGKILL: a killed writer leaves nothing behind.
// commit() fsyncs, gives it a name (linkat) and renames it over the destination, then fsyncs the
// directory. Where O_TMPFILE or /proc is unavailable, the temporary is a named
// "<file>.tmp-XXXXXX" held under an exclusive flock; a killed writer leaves it, and the next
// writer to the same path removes every such file nobody holds a lock on (remove_stale_temps).

#include <cerrno>    // errno
#include <cstddef>   // std::size_t
#include <cstdint>   // std::uint64_t
#include <cstdio>    // std::rename
#include <cstring>   // std::strerror, std::strncmp
#include <string>    // std::string
#include <utility>   // std::move

#include <dirent.h>    // opendir, readdir
#include <fcntl.h>     // open, O_TMPFILE, linkat
#include <stdlib.h>    // mkstemp
#include <sys/file.h>  // flock
#include <sys/stat.h>  // stat, fchmod
#include <unistd.h>    // write, pwrite, fsync, close, unlink, access

#include <taskmoe/error.hpp>

namespace taskmoe {
namespace detail {

class atomic_output_file {
 public:
  // overwrite = false: commit() fails if the destination exists (checked now and at commit).
  atomic_output_file(std::string path, bool overwrite) : path_(std::move(path)), overwrite_(overwrite) {
    if (!overwrite_ && exists(path_))
      throw io_error(path_ + ": file exists (pass overwrite = true to replace it)");
    remove_stale_temps(path_);
    open_temp();
  }
  atomic_output_file(const atomic_output_file&) = delete;
  atomic_output_file& operator=(const atomic_output_file&) = delete;
  ~atomic_output_file() { abandon(); }

  bool is_open() const noexcept { return fd_ >= 0; }
  std::uint64_t size() const noexcept { return pos_; }

  // Appends; a failure (disk full, EFBIG, ...) abandons the file and throws io_error.
  void write(const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail_errno("write failed");
      }
      p += w;
      n -= static_cast<std::size_t>(w);
      pos_ += static_cast<std::uint64_t>(w);
    }
  }
  // Overwrites bytes already written (a header placeholder).
  void write_at(std::uint64_t offset, const void* data, std::size_t n) {
    if (::pwrite(fd_, data, n, static_cast<off_t>(offset)) != static_cast<ssize_t>(n)) fail_errno("write failed");
  }

  // Durable and atomic: after it returns the destination holds exactly these bytes.
  void commit() {
    if (::fsync(fd_) != 0) fail_errno("fsync failed");
    if (tmp_.empty()) {  // unnamed: name it (no-clobber is atomic here), then rename if replacing
      const std::string proc = "/proc/self/fd/" + std::to_string(fd_);
      if (!overwrite_) {
        if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path_.c_str(), AT_SYMLINK_FOLLOW) != 0) {
          if (errno == EEXIST) {
            abandon();
            throw io_error(path_ + ": file exists (pass overwrite = true to replace it)");
          }
          fail_errno("cannot create file");
        }
        return finish();
      }
      for (int attempt = 0; tmp_.empty(); ++attempt) {
        std::string name = path_ + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(attempt);
        if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW) == 0) {
          tmp_ = std::move(name);
        } else if (errno != EEXIST || attempt > 100) {
          fail_errno("cannot create file");
        }
      }
    } else if (!overwrite_ && exists(path_)) {
      abandon();
      throw io_error(path_ + ": file exists (pass overwrite = true to replace it)");
    }
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail_errno("rename failed");
    tmp_.clear();
    finish();
  }

  // Removes "<path>.tmp-*" files left by killed writers: those no live writer holds a flock on.
  static void remove_stale_temps(const std::string& path) noexcept {
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    const std::string prefix = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp-";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return;
    while (const dirent* e = ::readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) != 0) continue;
      const std::string p = (slash == std::string::npos ? std::string() : dir) + e->d_name;
      const int fd = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) continue;
      struct stat st {};
      if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::flock(fd, LOCK_EX | LOCK_NB) == 0)
        ::unlink(p.c_str());
      ::close(fd);
    }
    ::closedir(d);
  }

 private:
  static bool exists(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0;
  }
  std::string directory() const {
    const auto slash = path_.rfind('/');
    return slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  }

  void open_temp() {
#ifdef O_TMPFILE
    if (::access("/proc/self/fd", X_OK) == 0)
      fd_ = ::open(directory().c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
#endif
    if (fd_ < 0) {  // no O_TMPFILE here (filesystem, kernel or /proc): a named, locked temporary
      tmp_ = path_ + ".tmp-XXXXXX";
      fd_ = ::mkstemp(&tmp_[0]);
      if (fd_ < 0) {
        tmp_.clear();
        throw io_error(path_ + ": cannot create temporary file: " + std::strerror(errno));
      }
    }
    // Held until close: remove_stale_temps of another writer sees this file as live.
    ::flock(fd_, LOCK_EX | LOCK_NB);
    ::fchmod(fd_, 0644);
  }

  void finish() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
      const int saved = errno;
      throw io_error(path_ + ": close failed: " + std::strerror(saved));
    }
    const int dfd = ::open(directory().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);  // best effort: the new name is durable once the directory is synced
      ::close(dfd);
    }
  }

  [[noreturn]] void fail_errno(const char* what) {
    const std::string msg = path_ + ": " + what + ": " + std::strerror(errno);
    abandon();
    throw io_error(msg);
  }

  void abandon() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
    tmp_.clear();
  }

  std::string path_;
  bool overwrite_;
  std::string tmp_;  // empty while the temporary is unnamed (O_TMPFILE)
  int fd_ = -1;
  std::uint64_t pos_ = 0;
};

}  // namespace detail
}  // namespace taskmoe
