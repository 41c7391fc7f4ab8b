#pragma once
// taskmoe-server's /metrics: counters, gauges and histograms written in the Prometheus text
// exposition format (version 0.0.4). Small on purpose: a few fixed metric families, labels only
// from closed sets (endpoint names we route, status codes, task names), so a client cannot grow
// the label space.

#include <atomic>     // std::atomic
#include <cstdint>    // std::uint64_t
#include <cstdio>     // std::snprintf
#include <map>        // std::map
#include <mutex>      // std::mutex, std::lock_guard
#include <string>     // std::string
#include <utility>    // std::move
#include <vector>     // std::vector

namespace taskmoe::server {

inline std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// A cumulative-bucket histogram (le = upper bounds, +Inf implied).
class histogram {
 public:
  explicit histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

  void observe(double v) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
  }

  // `labels` is "" or `key="value"` pairs without braces, put in front of le.
  void write(std::string& out, const std::string& name, const std::string& labels = "") const {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string sep = labels.empty() ? "" : labels + ",";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i];
      out += name + "_bucket{" + sep + "le=\"" + format_number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
    }
    cumulative += counts_.back();
    out += name + "_bucket{" + sep + "le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
    const std::string braces = labels.empty() ? "" : "{" + labels + "}";
    out += name + "_sum" + braces + " " + format_number(sum_) + "\n";
    out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
  }

 private:
  mutable std::mutex mutex_;
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

// Counters keyed by a label string (`endpoint="/translate",status="200"`).
class labelled_counter {
 public:
  void add(const std::string& labels, std::uint64_t n = 1) {
    std::lock_guard<std::mutex> lock(mutex_);
    values_[labels] += n;
  }
  void write(std::string& out, const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [labels, v] : values_) out += name + "{" + labels + "} " + std::to_string(v) + "\n";
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> values_;
};

struct metrics {
  labelled_counter requests;         // endpoint, status
  labelled_counter sentences;        // task
  labelled_counter source_tokens;    // task
  labelled_counter target_tokens;    // task
  labelled_counter rejected;         // reason: queue_full, timeout, stopping
  std::atomic<std::uint64_t> truncated{0};
  std::atomic<std::int64_t> in_flight{0};  // /translate requests being answered
  std::atomic<std::int64_t> queued{0};     // sentences waiting for a worker
  std::atomic<std::int64_t> busy_workers{0};
  histogram latency{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  histogram batch_sentences{{1, 2, 4, 8, 16, 32, 64, 128, 256}};
  histogram batch_tokens{{16, 32, 64, 128, 256, 512, 1024, 2048, 4096}};
  histogram batch_seconds{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};

  std::string text() const {
    std::string out;
    const auto family = [&out](const char* name, const char* type, const char* help) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    };
    family("taskmoe_http_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
    requests.write(out, "taskmoe_http_requests_total");
    family("taskmoe_translate_duration_seconds", "histogram",
           "Time from a /translate request's arrival (body read) to its answer.");
    latency.write(out, "taskmoe_translate_duration_seconds");
    family("taskmoe_sentences_total", "counter", "Sentences (lines) translated, by task.");
    sentences.write(out, "taskmoe_sentences_total");
    family("taskmoe_source_tokens_total", "counter", "Source pieces translated, by task.");
    source_tokens.write(out, "taskmoe_source_tokens_total");
    family("taskmoe_target_tokens_total", "counter", "Target tokens generated (best hypothesis), by task.");
    target_tokens.write(out, "taskmoe_target_tokens_total");
    family("taskmoe_truncated_inputs_total", "counter", "Lines cut to the model's input length.");
    out += "taskmoe_truncated_inputs_total " + std::to_string(truncated.load()) + "\n";
    family("taskmoe_rejected_requests_total", "counter", "Requests refused with 503, by reason.");
    rejected.write(out, "taskmoe_rejected_requests_total");
    family("taskmoe_batch_sentences", "histogram", "Sentences per translate call (dynamic batch size).");
    batch_sentences.write(out, "taskmoe_batch_sentences");
    family("taskmoe_batch_tokens", "histogram", "Source tokens per translate call.");
    batch_tokens.write(out, "taskmoe_batch_tokens");
    family("taskmoe_batch_duration_seconds", "histogram", "Time of one translate call.");
    batch_seconds.write(out, "taskmoe_batch_duration_seconds");
    family("taskmoe_queue_depth", "gauge", "Sentences waiting for a worker.");
    out += "taskmoe_queue_depth " + std::to_string(queued.load()) + "\n";
    family("taskmoe_in_flight_requests", "gauge", "/translate requests being answered.");
    out += "taskmoe_in_flight_requests " + std::to_string(in_flight.load()) + "\n";
    family("taskmoe_busy_workers", "gauge", "Workers running a translate call.");
    out += "taskmoe_busy_workers " + std::to_string(busy_workers.load()) + "\n";
    return out;
  }
};

}  // namespace taskmoe::server
