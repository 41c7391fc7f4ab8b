// The paper's comparison on CPU (Kudugunta et al. 2021, fig. "throughput vs batch size"): one
// model per process, greedy decoding with a fixed output length, target tokens/s per batch size,
// load time, file size and peak resident memory. benchmarks/run_paper.sh runs it on the paper-size
// random checkpoints (TokenMoE, dense, TaskMoE extracted at float32 and int8) and
// benchmarks/plot_paper.py draws the figure. Timings are medians of --reps repetitions.
//
//   bench_paper --model en-de.tmoe --label taskmoe-int8 [--batches 1,4,16,64,256] [--length 30]
//               [--source-length 20] [--reps 3] [--csv results.csv]
//   bench_paper --checkpoint DIR --task en-de --label tokenmoe ...
//
// Timing covers encoder + decoder + search (token ids in, token ids out): tokenization is not
// timed, and random weights need no text. Each measurement translates max(batch, 16) sentences in
// batches of `batch`, so small batches are timed over enough work.

#include <algorithm>   // std::sort, std::max
#include <chrono>      // std::chrono::steady_clock
#include <cstdio>      // std::printf, std::fprintf
#include <cstdlib>     // std::atoi, std::getenv
#include <exception>   // std::exception
#include <filesystem>  // std::filesystem::file_size
#include <fstream>     // std::ifstream
#include <random>      // std::mt19937
#include <sstream>     // std::stringstream
#include <string>      // std::string
#include <vector>      // std::vector

#include <sys/resource.h>  // getrusage

#include <taskmoe/translator.hpp>

#include "bench_util.hpp"  // taskmoe_bench::cpu_model

namespace {

using clock_type = std::chrono::steady_clock;

// Peak and current resident set (bytes) from /proc/self/status; getrusage as a fallback.
std::uint64_t status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(std::string(key).size())) * 1024;
  if (std::string(key) == "VmHWM:") {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<std::uint64_t>(ru.ru_maxrss) * 1024;
  }
  return 0;
}

std::uint64_t path_bytes(const std::string& p) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(p)) return fs::file_size(p);
  std::uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(p))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) v.push_back(std::atoi(item.c_str()));
  return v;
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr, "bench_paper: %s\nusage: bench_paper (--model FILE | --checkpoint DIR --task T) --label NAME "
               "[--batches 1,4,16,64,256] [--length 30] [--source-length 20] [--reps 3] [--csv FILE]\n", msg);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, ckpt, task, label, csv;
  std::vector<int> batches = {1, 4, 16, 64, 256};
  int length = 30, source_length = 20, reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage((a + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--model") model = val();
    else if (a == "--checkpoint") ckpt = val();
    else if (a == "--task") task = val();
    else if (a == "--label") label = val();
    else if (a == "--batches") batches = parse_list(val());
    else if (a == "--length") length = std::atoi(val().c_str());
    else if (a == "--source-length") source_length = std::atoi(val().c_str());
    else if (a == "--reps") reps = std::max(1, std::atoi(val().c_str()));
    else if (a == "--csv") csv = val();
    else usage(("unknown argument " + a).c_str());
  }
  if (model.empty() == ckpt.empty() || (!ckpt.empty() && task.empty())) usage("give --model or --checkpoint + --task");
  if (label.empty()) label = model.empty() ? ckpt : model;
  try {
    namespace tk = taskmoe::kernels;
    std::printf("machine: %s | ISA %s | 1 thread | OMP_NUM_THREADS=%s\n", taskmoe_bench::cpu_model().c_str(),
                tk::to_string(tk::active_isa()), std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "unset");
    const auto t0 = clock_type::now();
    taskmoe::translator_options to;
    const taskmoe::translator tr = model.empty() ? taskmoe::translator::from_checkpoint(ckpt, task, to)
                                                 : taskmoe::translator(model, to);
    const double load_s = std::chrono::duration<double>(clock_type::now() - t0).count();
    const std::uint64_t file_bytes = path_bytes(model.empty() ? ckpt : model);
    const std::uint64_t rss_after_load = status_kb("VmRSS:");
    const auto& cfg = tr.config();
    std::printf("model: %s (%s), task %s, d_model %d, %d+%d layers, file %.1f MB, load %.3f s, RSS after load %.1f MB\n",
                label.c_str(), model.empty() ? ckpt.c_str() : model.c_str(), tr.task().name.c_str(), cfg.d_model,
                cfg.encoder_layers, cfg.decoder_layers, static_cast<double>(file_bytes) / 1e6, load_s,
                static_cast<double>(rss_after_load) / 1e6);

    // Random sources of `source_length` pieces (ids above the special ids), the same every run.
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int> piece(4, cfg.vocab_size - 1);
    const int max_batch = batches.empty() ? 1 : *std::max_element(batches.begin(), batches.end());
    std::vector<std::vector<int>> sources(static_cast<std::size_t>(std::max(max_batch, 16)));
    for (auto& s : sources) {
      std::vector<int> pieces(static_cast<std::size_t>(source_length));
      for (int& p : pieces) p = piece(rng);
      s = tr.source_ids(pieces);
    }
    taskmoe::decoding::search_options so;
    so.beam_size = 1;
    so.min_length = length;  // EOS forbidden before `length`: every sentence decodes exactly `length` tokens
    const auto& m = tr.model();
    const auto translate = [&](std::size_t first, std::size_t count) -> std::size_t {
      std::vector<std::vector<int>> srcs(sources.begin() + static_cast<std::ptrdiff_t>(first),
                                         sources.begin() + static_cast<std::ptrdiff_t>(first + count));
      std::vector<taskmoe::decoding::sentence_constraints> cons(count);
      for (auto& c : cons) c.max_length = length;
      taskmoe::model::workspace ws;
      const taskmoe::model::encoder_output enc = m.encode(srcs, ws);
      taskmoe::decoding::model_session session(m, enc);
      const auto hyps = taskmoe::decoding::search(session, cons, so, cfg.bos_id, cfg.eos_id);
      std::size_t n = 0;
      for (const auto& h : hyps) n += h.front().tokens.size();
      return n;
    };

    std::printf("\n%-16s %6s %12s %12s %10s %14s\n", "model", "batch", "tokens/s", "ms/batch", "tokens",
                "peak RSS MB");
    struct row {
      int batch;
      double tokens_per_s;
      std::uint64_t peak_rss;  // VmHWM after this batch size (and every smaller one before it)
    };
    std::vector<row> rows;
    for (int b : batches) {
      const std::size_t per_rep = static_cast<std::size_t>(std::max(b, 16));
      translate(0, static_cast<std::size_t>(b));  // warm-up (page faults, primitive creation)
      std::vector<double> rates;
      std::size_t tokens = 0;
      double ms = 0;
      for (int r = 0; r < reps; ++r) {
        tokens = 0;
        const auto s0 = clock_type::now();
        for (std::size_t first = 0; first < per_rep; first += static_cast<std::size_t>(b))
          tokens += translate(first, static_cast<std::size_t>(b));
        const double s = std::chrono::duration<double>(clock_type::now() - s0).count();
        rates.push_back(static_cast<double>(tokens) / s);
        ms = s * 1e3 * b / static_cast<double>(per_rep);
      }
      std::sort(rates.begin(), rates.end());
      const double med = rates[rates.size() / 2];
      if (tokens != per_rep * static_cast<std::size_t>(length))
        std::fprintf(stderr, "bench_paper: warning: %zu tokens decoded, expected %zu\n", tokens,
                     per_rep * static_cast<std::size_t>(length));
      const std::uint64_t hwm = status_kb("VmHWM:");
      std::printf("%-16s %6d %12.1f %12.1f %10zu %14.1f\n", label.c_str(), b, med, ms, tokens,
                  static_cast<double>(hwm) / 1e6);
      std::fflush(stdout);
      rows.push_back({b, med, hwm});
    }
    const std::uint64_t peak = status_kb("VmHWM:");
    std::printf("\n%s: peak RSS %.1f MB, file %.1f MB, load %.3f s\n", label.c_str(), static_cast<double>(peak) / 1e6,
                static_cast<double>(file_bytes) / 1e6, load_s);
    if (!csv.empty()) {
      const bool fresh = !std::filesystem::exists(csv);
      std::FILE* f = std::fopen(csv.c_str(), "a");
      if (!f) throw taskmoe::io_error(csv + ": cannot open");
      if (fresh) std::fprintf(f, "model,batch,tokens_per_s,file_bytes,load_s,peak_rss_bytes,peak_rss_at_batch_bytes,isa\n");
      for (const auto& r : rows)
        std::fprintf(f, "%s,%d,%.2f,%llu,%.4f,%llu,%llu,%s\n", label.c_str(), r.batch, r.tokens_per_s,
                     static_cast<unsigned long long>(file_bytes), load_s, static_cast<unsigned long long>(peak),
                     static_cast<unsigned long long>(r.peak_rss), tk::to_string(tk::active_isa()));
      std::fclose(f);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_paper: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
