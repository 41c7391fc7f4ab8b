// Decode pre-tokenized sources and time it: the C++ half of benchmarks/bench_vs_pytorch.py and
// bench_vs_ctranslate2.py. Input: one sentence per line, space-separated SentencePiece ids of the
// source (no target tag, no </s>: the translator adds them). Output (--output): per sentence the
// best hypothesis' ids, EOS removed. Prints a machine line and "seconds S" (median of --reps full
// passes). --batching consecutive (default): one call per --batch-size sentences, in input order
// (sort the input yourself for length-sorted batches). --batching translator: every sentence in
// one call with max_batch_size = --batch-size, so the translator sorts by length and spreads the
// batches over its worker threads, as CTranslate2's translate_batch does.
//
//   bench_decode (--model FILE | --checkpoint DIR --task T) --input ids.txt [--output out.txt]
//                [--beam 1] [--batch-size 1] [--max-length 128] [--min-length 0] [--length-penalty 1]
//                [--threads 1] [--reps 3] [--batching consecutive|translator] [--kv-cache auto|float32|float16]
//                [--vocabulary-map vmap.txt]
// One untimed pass runs first (page faults of the workspaces, the thread pool's start).

#include <algorithm>  // std::sort, std::max
#include <chrono>     // std::chrono::steady_clock
#include <cstdio>     // std::printf, std::fprintf
#include <cstdlib>    // std::atoi, std::atof, std::getenv
#include <exception>  // std::exception
#include <fstream>    // std::ifstream, std::ofstream
#include <sstream>    // std::istringstream
#include <string>     // std::string
#include <vector>     // std::vector

#include <taskmoe/translator.hpp>

#include "bench_util.hpp"  // taskmoe_bench::cpu_model

int main(int argc, char** argv) {
  std::string model, ckpt, task, input, output, batching = "consecutive", kv_cache = "auto", vocabulary_map,
              int8_weights = "auto";
  int beam = 1, batch = 1, max_length = 128, min_length = 0, threads = 1, reps = 3;
  float length_penalty = 1.0f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bench_decode: %s needs a value\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--model") model = v;
    else if (a == "--checkpoint") ckpt = v;
    else if (a == "--task") task = v;
    else if (a == "--input") input = v;
    else if (a == "--output") output = v;
    else if (a == "--beam") beam = std::atoi(v.c_str());
    else if (a == "--batch-size") batch = std::atoi(v.c_str());
    else if (a == "--batching") batching = v;
    else if (a == "--max-length") max_length = std::atoi(v.c_str());
    else if (a == "--min-length") min_length = std::atoi(v.c_str());
    else if (a == "--threads") threads = std::max(1, std::atoi(v.c_str()));
    else if (a == "--length-penalty") length_penalty = static_cast<float>(std::atof(v.c_str()));
    else if (a == "--reps") reps = std::max(1, std::atoi(v.c_str()));
    else if (a == "--kv-cache" && (v == "auto" || v == "float32" || v == "float16")) kv_cache = v;
    else if (a == "--vocabulary-map") vocabulary_map = v;
    else if (a == "--int8-weights") int8_weights = v;  // checked by int8_weights_from_string below
    else {
      std::fprintf(stderr, "bench_decode: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (model.empty() == ckpt.empty() || input.empty() || (!ckpt.empty() && task.empty())) {
    std::fprintf(stderr, "usage: bench_decode (--model FILE | --checkpoint DIR --task T) --input ids.txt "
                 "[--output out.txt] [--beam N] [--batch-size N] [--max-length N] [--min-length N] [--length-penalty X] "
                 "[--threads N] [--reps N] [--batching consecutive|translator] [--kv-cache auto|float32|float16] [--vocabulary-map FILE] [--int8-weights auto|full|narrow]\n");
    return 2;
  }
  try {
    namespace tk = taskmoe::kernels;
    const tk::int8_weights w8 = tk::int8_weights_from_string(int8_weights);
    std::printf("machine: %s | ISA %s | %d thread(s) | OMP_NUM_THREADS=%s | int8 weights %s (%s)\n",
                taskmoe_bench::cpu_model().c_str(), tk::to_string(tk::active_isa()), threads,
                std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "unset", tk::to_string(w8),
                tk::to_string(tk::resolve_int8_weights(w8)));
    taskmoe::translator_options to;
    to.threads = threads;
    using precision = taskmoe::model::model_options::cache_precision;
    to.kv_cache = kv_cache == "float32" ? precision::float32 : kv_cache == "float16" ? precision::float16 : precision::automatic;
    to.vocabulary_map = vocabulary_map;
    to.int8_weights = w8;
    const taskmoe::translator tr = model.empty() ? taskmoe::translator::from_checkpoint(ckpt, task, to)
                                                 : taskmoe::translator(model, to);
    std::vector<std::vector<int>> sources;
    std::ifstream in(input);
    if (!in) throw taskmoe::io_error(input + ": cannot open");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ss(line);
      std::vector<int> ids;
      int id;
      while (ss >> id) ids.push_back(id);
      sources.push_back(std::move(ids));
    }
    taskmoe::translation_options o;
    o.beam_size = beam;
    o.length_penalty = length_penalty;
    o.max_decoding_length = max_length;
    o.min_decoding_length = min_length;
    o.return_scores = false;
    o.use_vocabulary_map = !vocabulary_map.empty();
    if (batching != "consecutive" && batching != "translator")
      throw taskmoe::invalid_argument_error("--batching must be consecutive or translator");
    const bool one_call = batching == "translator";
    std::vector<std::vector<int>> best(sources.size());
    std::vector<double> times;
    for (int r = -1; r < reps; ++r) {  // r = -1: the untimed warm-up pass
      const auto t0 = std::chrono::steady_clock::now();
      if (one_call) {  // --batching translator
        // All sentences in one call, batched by the translator (sorted by length, at most `batch`
        // per batch, batches spread over the worker threads): what CTranslate2's translate_batch
        // does with max_batch_size.
        o.max_batch_size = static_cast<std::size_t>(batch);
        const auto res = tr.translate_tokens(sources, o);
        for (std::size_t j = 0; j < res.size(); ++j) best[j] = res[j].hypotheses.front().tokens;
      } else {
        for (std::size_t first = 0; first < sources.size(); first += static_cast<std::size_t>(batch)) {
          const std::size_t last = std::min(sources.size(), first + static_cast<std::size_t>(batch));
          const std::vector<std::vector<int>> part(sources.begin() + static_cast<std::ptrdiff_t>(first),
                                                   sources.begin() + static_cast<std::ptrdiff_t>(last));
          const auto res = tr.translate_tokens(part, o);
          for (std::size_t j = 0; j < res.size(); ++j) best[first + j] = res[j].hypotheses.front().tokens;
        }
      }
      if (r >= 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    std::size_t tokens = 0;
    for (const auto& b : best) tokens += b.size();
    std::printf("sentences %zu tokens %zu seconds %.6f tokens_per_s %.1f\n", sources.size(), tokens,
                times[times.size() / 2], static_cast<double>(tokens) / times[times.size() / 2]);
    if (!output.empty()) {
      std::ofstream out(output);
      for (const auto& b : best) {
        for (std::size_t k = 0; k < b.size(); ++k) out << (k ? " " : "") << b[k];
        out << '\n';
      }
      if (!out) throw taskmoe::io_error(output + ": write failed");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_decode: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
