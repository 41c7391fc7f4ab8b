#pragma once
// Intra-op parallelism: parallel_for(threads, n, f) runs f(begin, end) over `threads` contiguous
// chunks of [0, n), the calling thread taking the first, on one process-wide pool of persistent
// workers (created on first use, never more than the largest request minus one).
//
// Why persistent and spinning: a decoder step at batch 1 is ~40 GEMMs of 10-100 µs each; a
// fresh std::thread or a condition-variable wake-up per GEMM (5-50 µs) would eat the gain.
// Workers spin for a short while (~50 µs) after their last job before they sleep; a caller helps
// run queued chunks of its own call while it waits, so a call never waits on a sleeping worker
// and concurrent callers (several translators, several threads) cannot deadlock. A chunk run by
// a pool worker that itself calls parallel_for runs that inner loop serially.

#include <algorithm>    // std::min
#include <atomic>       // std::atomic
#include <chrono>       // std::chrono::steady_clock
#include <condition_variable>
#include <deque>        // std::deque
#include <exception>    // std::exception_ptr
#include <functional>   // std::function
#include <mutex>        // std::mutex
#include <thread>       // std::thread, std::this_thread::yield
#include <vector>       // std::vector

namespace taskmoe {
namespace kernels {
namespace detail {

class thread_pool {
 public:
  static thread_pool& instance() {
    static thread_pool pool;
    return pool;
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  static bool& inside_worker() noexcept {
    thread_local bool inside = false;
    return inside;
  }

  void run(int chunks, int n, const std::function<void(int, int)>& f) {
    ensure_workers(chunks - 1);
    call c;
    c.f = &f;
    c.remaining.store(chunks - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (int t = 1; t < chunks; ++t) queue_.push_back(job{&c, bound(t, chunks, n), bound(t + 1, chunks, n)});
      pending_.fetch_add(chunks - 1, std::memory_order_release);
    }
    cv_.notify_all();
    std::exception_ptr own;
    try {
      f(0, bound(1, chunks, n));
    } catch (...) {
      own = std::current_exception();
    }
    while (c.remaining.load(std::memory_order_acquire) != 0) {
      if (!help_one(&c)) std::this_thread::yield();
    }
    if (own) std::rethrow_exception(own);
    if (c.error) std::rethrow_exception(c.error);
  }

 private:
  struct call {
    const std::function<void(int, int)>* f = nullptr;
    std::atomic<int> remaining{0};
    std::mutex error_mutex;
    std::exception_ptr error;
  };
  struct job {
    call* owner;
    int begin, end;
  };

  thread_pool() = default;

  static int bound(int t, int chunks, int n) {
    return static_cast<int>(static_cast<long long>(n) * t / chunks);
  }

  static void execute(const job& j) {
    try {
      (*j.owner->f)(j.begin, j.end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(j.owner->error_mutex);
      if (!j.owner->error) j.owner->error = std::current_exception();
    }
    j.owner->remaining.fetch_sub(1, std::memory_order_acq_rel);
  }

  // Runs one queued job of `mine` (the caller's own call), if any is still queued.
  bool help_one(call* mine) {
    job j{};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = queue_.begin();
      while (it != queue_.end() && it->owner != mine) ++it;
      if (it == queue_.end()) return false;
      j = *it;
      queue_.erase(it);
      pending_.fetch_sub(1, std::memory_order_relaxed);
    }
    execute(j);
    return true;
  }

  bool pop(job& j) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.empty()) return false;
    j = queue_.front();
    queue_.pop_front();
    pending_.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }

  void ensure_workers(int wanted) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (static_cast<int>(workers_.size()) < wanted) workers_.emplace_back([this] { work(); });
  }

  void work() {
    inside_worker() = true;
    using clock = std::chrono::steady_clock;
    for (;;) {
      job j{};
      if (pop(j)) {
        execute(j);
        continue;
      }
      // Spin briefly: the next GEMM of the same decoder step is usually microseconds away.
      const auto until = clock::now() + std::chrono::microseconds(50);
      bool found = false;
      while (clock::now() < until) {
        if (pending_.load(std::memory_order_acquire) > 0) {
          found = true;
          break;
        }
        std::this_thread::yield();
      }
      if (found) continue;
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty()) return;
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<job> queue_;
  std::atomic<int> pending_{0};
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

}  // namespace detail

// A thread budget shared by the workers of one parallel region (the translator's sub-batch
// workers): while `active` of them still work, each kernel call gets budget / active threads, so
// a worker that runs out of sub-batches hands its core to the GEMMs of those still running
// instead of leaving it idle behind one long sub-batch.
class thread_share {
 public:
  thread_share(int budget, int workers) noexcept : budget_(budget < 1 ? 1 : budget), active_(workers < 1 ? 1 : workers) {}
  int per_worker() const noexcept {
    const int active = active_.load(std::memory_order_relaxed);
    return active <= 1 ? budget_ : std::max(1, budget_ / active);
  }
  void leave() noexcept { active_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  int budget_;
  std::atomic<int> active_;
};

namespace detail {
// Threads one kernel call may use on the calling thread when its options say 0 ("inherit"): a
// fixed count or a share, set for a scope by whoever owns the parallelism decision (the
// translator), default 1.
struct intra_op_setting {
  int threads = 1;
  const thread_share* share = nullptr;
};
inline intra_op_setting& intra_op_slot() noexcept {
  thread_local intra_op_setting setting;
  return setting;
}
}  // namespace detail

inline int intra_op_threads() noexcept {
  const detail::intra_op_setting& s = detail::intra_op_slot();
  return s.share ? s.share->per_worker() : s.threads;
}

class scoped_intra_op_threads {
 public:
  explicit scoped_intra_op_threads(int threads) : previous_(detail::intra_op_slot()) {
    detail::intra_op_slot() = {threads < 1 ? 1 : threads, nullptr};
  }
  explicit scoped_intra_op_threads(const thread_share& share) : previous_(detail::intra_op_slot()) {
    detail::intra_op_slot() = {1, &share};
  }
  ~scoped_intra_op_threads() { detail::intra_op_slot() = previous_; }
  scoped_intra_op_threads(const scoped_intra_op_threads&) = delete;
  scoped_intra_op_threads& operator=(const scoped_intra_op_threads&) = delete;

 private:
  detail::intra_op_setting previous_;
};

// f(begin, end) over `threads` contiguous chunks of [0, n) (fewer when n is smaller); serial
// when threads <= 1 or when called from inside a pool worker. Rethrows the first exception.
template <class F>
void parallel_for(int threads, int n, F&& f) {
  const int chunks = std::min(threads, n);
  if (chunks <= 1 || detail::thread_pool::inside_worker()) {
    if (n > 0) f(0, n);
    return;
  }
  const std::function<void(int, int)> fn(std::ref(f));
  detail::thread_pool::instance().run(chunks, n, fn);
}

}  // namespace kernels
}  // namespace taskmoe
