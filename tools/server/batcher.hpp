#pragma once
// Dynamic batching for taskmoe-server (docs/serving.md, "Batching").
//
// A request is split into its sentences (lines). Sentences wait in one queue per (task, number of
// hypotheses): only those can share a translate_tokens call. A pool of worker threads takes
// batches: a queue is ready when its oldest sentence has waited batch_wait, or it holds
// max_batch_tokens source tokens, or the server is stopping; the worker takes the ready queue
// whose oldest sentence is oldest (so no task starves) and as many sentences, in arrival order, as
// fit in max_batch_tokens (at least one), and no more than its share when other workers are idle
// (a queue of 8 sentences and 2 idle workers: two batches of 4, one per core, not one of 8 and an
// idle core). Different tasks, and different batches of one task, run
// side by side on different workers: translators are safe to call concurrently.
// While every worker is busy, sentences pile up and the next batch is bigger: throughput grows
// with load, and a lone request waits at most batch_wait.

#include <algorithm>           // std::min
#include <atomic>              // std::atomic
#include <chrono>              // std::chrono::steady_clock
#include <condition_variable>  // std::condition_variable
#include <cstddef>             // std::size_t
#include <deque>               // std::deque
#include <exception>           // std::exception_ptr
#include <map>                 // std::map
#include <memory>              // std::shared_ptr
#include <mutex>               // std::mutex
#include <thread>              // std::thread
#include <utility>             // std::pair
#include <vector>              // std::vector

#include <taskmoe/translator.hpp>

#include "metrics.hpp"

namespace taskmoe::server {

using clock = std::chrono::steady_clock;

struct batcher_options {
  int workers = 1;
  std::size_t max_batch_tokens = 1024;  // source tokens (pieces + tag + </s>) per call
  std::chrono::milliseconds batch_wait{0};
  std::size_t max_queued = 1024;  // sentences waiting, all tasks together; more: submit refuses
  bool batching = true;           // false: a call holds one request's sentences, never more
  bool vocabulary_maps = true;    // a task with a shortlist (file or embedded) decodes over it
  translation_options decoding;   // num_hypotheses is set per request
};

// One request's sentences. The HTTP thread waits on it; workers fill results.
struct job {
  job(const translator* t_, int hypotheses_, std::vector<std::vector<int>> pieces_, clock::time_point deadline_)
      : t(t_), hypotheses(hypotheses_), pieces(std::move(pieces_)), results(pieces.size()),
        remaining(pieces.size()), deadline(deadline_) {}

  const translator* t;
  int hypotheses;
  std::vector<std::vector<int>> pieces;  // moved out by the worker that takes each sentence
  std::vector<translation_result> results;
  std::size_t remaining;
  std::exception_ptr error;  // the first failure of any of its batches
  clock::time_point deadline;
  std::atomic<bool> cancelled{false};  // the client was answered (timeout): skip what is queued
  std::mutex mutex;
  std::condition_variable done;

  // True when every sentence is done, false at the deadline (then the job is cancelled).
  bool wait() {
    std::unique_lock<std::mutex> lock(mutex);
    if (done.wait_until(lock, deadline, [this] { return remaining == 0; })) return true;
    cancelled = true;
    return false;
  }
};

enum class submit_status { ok, queue_full, stopping };

class batcher {
 public:
  batcher(const batcher_options& o, metrics& m) : o_(o), metrics_(m) {
    for (int i = 0; i < std::max(1, o_.workers); ++i) workers_.emplace_back([this] { work(); });
  }
  batcher(const batcher&) = delete;
  batcher& operator=(const batcher&) = delete;
  ~batcher() { stop(); }

  submit_status submit(const std::shared_ptr<job>& j) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return submit_status::stopping;
      if (queued_ + j->pieces.size() > o_.max_queued) return submit_status::queue_full;
      const auto now = clock::now();
      auto& q = queues_[{j->t, j->hypotheses}];
      for (std::size_t i = 0; i < j->pieces.size(); ++i) {
        const std::size_t tokens = j->pieces[i].size() + 2;  // + target tag + </s>
        q.items.push_back(item{j, i, tokens, now});
        q.tokens += tokens;
      }
      queued_ += j->pieces.size();
      metrics_.queued = static_cast<std::int64_t>(queued_);
    }
    cv_.notify_all();
    return submit_status::ok;
  }

  // Refuses new jobs, translates everything queued, joins the workers.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_)
      if (w.joinable()) w.join();
  }

  // Stops waiting for company (shutdown: translate what is queued now); still accepts jobs.
  void hurry() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      hurry_ = true;
    }
    cv_.notify_all();
  }

  std::size_t queued() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queued_;
  }

 private:
  struct item {
    std::shared_ptr<job> j;
    std::size_t index;
    std::size_t tokens;
    clock::time_point enqueued;
  };
  struct queue {
    std::deque<item> items;
    std::size_t tokens = 0;
  };
  using key = std::pair<const translator*, int>;

  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      const auto now = clock::now();
      queue* best = nullptr;
      key best_key{};
      auto next_ready = clock::time_point::max();
      for (auto& [k, q] : queues_) {
        if (q.items.empty()) continue;
        const bool full = q.tokens >= o_.max_batch_tokens;
        const item& front = q.items.front();
        // At its deadline the front is ready too: taking it drops it, freeing its queue places.
        const auto ready_at = (stopping_ || hurry_ || full || !o_.batching)
                                  ? front.enqueued
                                  : std::min(front.enqueued + o_.batch_wait, front.j->deadline);
        if (ready_at > now) {
          next_ready = std::min(next_ready, ready_at);
        } else if (!best || front.enqueued < best->items.front().enqueued) {
          best = &q;
          best_key = k;
        }
      }
      if (best) {
        const std::size_t idle = static_cast<std::size_t>(std::max(1, o_.workers)) - busy_;  // this one included
        const std::size_t share = (best->items.size() + idle - 1) / idle;
        std::vector<item> batch = take(*best, share);
        ++busy_;
        lock.unlock();
        run(best_key, batch);
        lock.lock();
        --busy_;
        continue;
      }
      if (stopping_ && queued_ == 0) return;
      if (next_ready == clock::time_point::max()) cv_.wait(lock);
      else cv_.wait_until(lock, next_ready);
    }
  }

  // Pops the next batch of `q` (lock held). Sentences of cancelled or expired jobs are dropped.
  std::vector<item> take(queue& q, std::size_t max_sentences) {
    std::vector<item> batch;
    std::size_t tokens = 0;
    const auto now = clock::now();
    while (!q.items.empty()) {
      item& it = q.items.front();
      if (it.j->cancelled || it.j->deadline <= now) {
        drop(q);
        continue;
      }
      if (!batch.empty() && (tokens + it.tokens > o_.max_batch_tokens || batch.size() >= max_sentences ||
                             (!o_.batching && it.j != batch.front().j)))
        break;
      tokens += it.tokens;
      batch.push_back(std::move(it));
      drop(q);
    }
    metrics_.queued = static_cast<std::int64_t>(queued_);
    return batch;
  }
  void drop(queue& q) {
    q.tokens -= q.items.front().tokens;
    q.items.pop_front();
    --queued_;
  }

  void run(const key& k, std::vector<item>& batch) {
    if (batch.empty()) return;
    std::vector<std::vector<int>> pieces;
    pieces.reserve(batch.size());
    std::size_t tokens = 0;
    for (auto& it : batch) {
      pieces.push_back(std::move(it.j->pieces[it.index]));  // each sentence is taken once
      tokens += it.tokens;
    }
    translation_options opts = o_.decoding;
    opts.num_hypotheses = k.second;
    opts.use_vocabulary_map = o_.vocabulary_maps && k.first->has_vocabulary_map();  // the task's shortlist
    std::vector<translation_result> results;
    std::exception_ptr error;
    ++metrics_.busy_workers;
    const auto t0 = clock::now();
    try {
      results = k.first->translate_tokens(pieces, opts);
    } catch (...) {
      error = std::current_exception();
    }
    metrics_.batch_seconds.observe(std::chrono::duration<double>(clock::now() - t0).count());
    --metrics_.busy_workers;
    metrics_.batch_sentences.observe(static_cast<double>(batch.size()));
    metrics_.batch_tokens.observe(static_cast<double>(tokens));
    if (!error) {
      const std::string task = "task=\"" + k.first->task().name + "\"";
      std::size_t target = 0;
      for (const auto& r : results) {
        if (!r.hypotheses.empty()) target += r.hypotheses.front().tokens.size();
        if (r.truncated) ++metrics_.truncated;
      }
      metrics_.sentences.add(task, batch.size());
      metrics_.source_tokens.add(task, tokens - 2 * batch.size());
      metrics_.target_tokens.add(task, target);
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      job& j = *batch[i].j;
      std::lock_guard<std::mutex> lock(j.mutex);
      if (error) {
        if (!j.error) j.error = error;
      } else {
        j.results[batch[i].index] = std::move(results[i]);
      }
      if (--j.remaining == 0) j.done.notify_all();
    }
  }

  batcher_options o_;
  metrics& metrics_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<key, queue> queues_;
  std::size_t queued_ = 0;
  bool stopping_ = false;
  bool hurry_ = false;
  std::size_t busy_ = 0;  // workers running a batch
  std::vector<std::thread> workers_;
};

}  // namespace taskmoe::server
