// Runtime speed: target tokens/s of taskmoe::translator on a Transformer-base-sized model with
// random weights (d_model 512, 8 heads, ff 2048, 6+6 layers, vocab 8k), float32 and int8, at
// batch 1/16/64, beam 1/4, threads 1/2, with a FIXED output length (min = max decoding length,
// default 30 tokens, so random weights cannot stop early). Prints a machine line and a table of
// medians over --reps repeats: wall-clock tokens/s, and tokens per CPU-second (all threads of
// the process), which other processes on the core do not distort. docs/performance.md has the
// results.
//
//   bench_runtime [--checkpoint DIR] [--routing dense|task] [--dtypes f32,int8] [--batches 1,16,64]
//                 [--beams 1,4] [--threads 1,2] [--length 30] [--source-length 25] [--reps 3]
//                 [--min-sentences 64] [--work DIR] [--make-script tools/make_random_checkpoint.py]
//   bench_runtime --model X.tmoe --input sentences.txt [--batches ..] [--beams ..] [--threads ..]
//                 [--length 0 (free length; N forces N tokens)] [--reps 3]
//
// Without --checkpoint, a random checkpoint is written once into --work (default /tmp) by
// tools/make_random_checkpoint.py (needs /usr/bin/python3 with numpy), with an 8000-piece
// SentencePiece model trained by spm_train on pseudo-words, and converted to .tmoe files with
// taskmoe::convert_task. --routing task makes MoE every other layer (32 experts,
// top-2, task routing: the .tmoe keeps 2 experts per MoE layer, each ff 2048).
// Pin to one core when measuring: taskset -c 1 bench_runtime.

#include <algorithm>   // std::sort, std::max
#include <chrono>      // std::chrono::steady_clock
#include <cstdio>      // std::printf, std::fprintf
#include <cstdlib>     // std::atoi, std::system
#include <exception>   // std::exception
#include <filesystem>  // std::filesystem::exists
#include <fstream>     // std::ifstream
#include <random>      // std::mt19937
#include <sstream>     // std::istringstream
#include <string>      // std::string
#include <vector>      // std::vector

#include <sys/resource.h>  // getrusage: CPU seconds, robust to other processes on the core

#include <taskmoe/convert/convert.hpp>
#include <taskmoe/translator.hpp>

#ifndef TASKMOE_SOURCE_DIR
#define TASKMOE_SOURCE_DIR "."
#endif

namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream ss(s);
  while (std::getline(ss, cur, ','))
    if (!cur.empty()) out.push_back(cur);
  return out;
}

std::vector<int> int_list(const std::string& s) {
  std::vector<int> out;
  for (const auto& x : split_list(s)) out.push_back(std::atoi(x.c_str()));
  return out;
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct measurement {
  double tokens_per_s = 0;
  double seconds = 0;  // median seconds per repeat
  double cpu = 0;      // median CPU seconds (all threads) per repeat
  std::size_t tokens = 0;
};

// Translates `sources` (token ids, or text when `texts` is non-empty) in consecutive batches of
// `batch`, `reps` times; tokens/s from the median repeat.
measurement measure(const taskmoe::translator& tr, const std::vector<std::vector<int>>& sources,
                    const std::vector<std::string>& texts, int batch, const taskmoe::translation_options& o,
                    int reps) {
  const std::size_t n = texts.empty() ? sources.size() : texts.size();
  std::vector<double> times, cpus;
  measurement m;
  for (int r = 0; r < reps; ++r) {
    std::size_t tokens = 0;
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    for (std::size_t first = 0; first < n; first += static_cast<std::size_t>(batch)) {
      const std::size_t last = std::min(n, first + static_cast<std::size_t>(batch));
      std::vector<taskmoe::translation_result> res;
      if (texts.empty())
        res = tr.translate_tokens({sources.begin() + static_cast<std::ptrdiff_t>(first),
                                   sources.begin() + static_cast<std::ptrdiff_t>(last)}, o);
      else
        res = tr.translate_batch({texts.begin() + static_cast<std::ptrdiff_t>(first),
                                  texts.begin() + static_cast<std::ptrdiff_t>(last)}, o);
      for (const auto& x : res) tokens += x.hypotheses.front().tokens.size();
    }
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cpus.push_back(cpu_seconds() - c0);
    m.tokens = tokens;
  }
  m.seconds = median(times);
  m.cpu = median(cpus);
  m.tokens_per_s = static_cast<double>(m.tokens) / m.seconds;
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, routing = "dense", work = "/tmp", model, input;
  std::string script = std::string(TASKMOE_SOURCE_DIR) + "/tools/make_random_checkpoint.py";
  std::vector<std::string> dtypes{"f32", "int8"};
  std::vector<int> batches{1, 16, 64}, beams{1, 4}, threads{1, 2};
  int length = 30, source_length = 25, reps = 3, min_sentences = 64;
  bool length_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf("usage: bench_runtime [--checkpoint DIR | --model X.tmoe --input FILE] [--routing dense|task]\n"
                  "  [--dtypes f32,int8] [--batches 1,16,64] [--beams 1,4] [--threads 1,2] [--length 30]\n"
                  "  [--source-length 25] [--reps 3] [--min-sentences 64] [--work /tmp] [--make-script PATH]\n");
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bench_runtime: %s needs a value\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--checkpoint") checkpoint = v;
    else if (a == "--routing") routing = v;
    else if (a == "--work") work = v;
    else if (a == "--make-script") script = v;
    else if (a == "--model") model = v;
    else if (a == "--input") input = v;
    else if (a == "--dtypes") dtypes = split_list(v);
    else if (a == "--batches") batches = int_list(v);
    else if (a == "--beams") beams = int_list(v);
    else if (a == "--threads") threads = int_list(v);
    else if (a == "--length") length = std::atoi(v.c_str()), length_given = true;
    else if (a == "--source-length") source_length = std::max(1, std::atoi(v.c_str()));
    else if (a == "--reps") reps = std::max(1, std::atoi(v.c_str()));
    else if (a == "--min-sentences") min_sentences = std::max(1, std::atoi(v.c_str()));
    else {
      std::fprintf(stderr, "bench_runtime: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (model.empty() != input.empty()) {
    std::fprintf(stderr, "bench_runtime: --model and --input go together\n");
    return 2;
  }
  if (routing != "dense" && routing != "task") {
    std::fprintf(stderr, "bench_runtime: --routing must be dense or task\n");
    return 2;
  }
  try {
    namespace tk = taskmoe::kernels;
    // (label, .tmoe path) of each model to measure
    std::vector<std::pair<std::string, std::string>> models;
    std::vector<std::string> texts;
    if (!model.empty()) {
      models.emplace_back(std::filesystem::path(model).filename().string(), model);
      std::ifstream in(input);
      if (!in) throw taskmoe::io_error(input + ": cannot open");
      std::string line;
      while (std::getline(in, line)) texts.push_back(line);
      if (texts.empty()) throw taskmoe::invalid_argument_error(input + ": no sentences");
      if (!length_given) length = 0;
    } else {
      if (checkpoint.empty()) {
        checkpoint = work + "/taskmoe_bench_" + routing;
        if (!std::filesystem::exists(checkpoint + "/model.safetensors")) {
          // An 8000-piece SentencePiece model (word model over pseudo-words), so that every id the
          // random model emits decodes to text (the test fixtures' model is smaller).
          const std::string spm = work + "/taskmoe_bench_spm8k";
          {
            std::ofstream corpus(spm + ".txt");
            std::mt19937 rng(0);
            for (int line = 0; line < 20000; ++line) {
              for (int w = 0; w < 12; ++w) corpus << (w ? " w" : "w") << rng() % 12000;
              corpus << '\n';
            }
          }
          const std::string train = "spm_train --input='" + spm + ".txt' --model_prefix='" + spm +
                                    "' --vocab_size=8000 --model_type=word --pad_id=0 --unk_id=1 --bos_id=2"
                                    " --eos_id=3 --user_defined_symbols='<2de>,<2en>,<2fr>' --minloglevel=2"
                                    " > /dev/null 2>&1";
          std::fprintf(stderr, "bench_runtime: %s\n", train.c_str());
          if (std::system(train.c_str()) != 0) throw taskmoe::io_error("could not run spm_train");
          const std::string cmd = "/usr/bin/python3 '" + script + "' '" + checkpoint + "' --spm '" + spm +
                                  ".model' --vocab 8000 --tasks en-de,de-en --routing " +
                                  (routing == "dense" ? std::string("dense") : std::string("task:target")) +
                                  " > /dev/null";
          std::fprintf(stderr, "bench_runtime: %s\n", cmd.c_str());
          if (std::system(cmd.c_str()) != 0) throw taskmoe::io_error("could not run " + script);
        }
      }
      const taskmoe::checkpoint ck(checkpoint);
      for (const auto& dt : dtypes) {
        taskmoe::convert_options co;
        co.quantization = taskmoe::parse_quantization(dt == "f32" ? "float32" : dt);
        co.overwrite = true;
        const std::string out = checkpoint + "/bench-en-de-" + dt + ".tmoe";
        taskmoe::convert_task(ck, "en-de", co, out);
        models.emplace_back(dt, out);
      }
    }
    std::printf("machine: %s | ISA %s | best %s | OMP_NUM_THREADS=%s\n", cpu_model().c_str(),
                tk::to_string(tk::active_isa()), tk::to_string(tk::best_supported_isa()),
                std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "unset");
    std::printf("model: %s | output length %s | source length %d | median of %d repeats\n",
                model.empty() ? (checkpoint + " (" + routing + ")").c_str() : model.c_str(),
                length > 0 ? std::to_string(length).c_str() : "free", source_length, reps);
    std::printf("| model | threads | beam | batch | sentences | target tokens | seconds | tokens/s | CPU s | tokens/CPU-s |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    std::fflush(stdout);
    for (const auto& [label, path] : models) {
      for (int th : threads) {
        taskmoe::translator_options to;
        to.threads = th;
        const taskmoe::translator tr(path, to);
        const int vocab = tr.config().vocab_size;
        for (int beam : beams)
          for (int batch : batches) {
            std::vector<std::vector<int>> sources;
            std::vector<std::string> these_texts = texts;
            if (texts.empty()) {
              const int n = std::max(batch, (min_sentences + batch - 1) / batch * batch);
              std::mt19937 rng(1234);
              std::uniform_int_distribution<int> tok(4, vocab - 1), len(source_length * 4 / 5,
                                                                       source_length * 6 / 5);
              for (int s = 0; s < n; ++s) {
                std::vector<int> ids(static_cast<std::size_t>(std::max(1, len(rng))));
                for (auto& t : ids) t = tok(rng);
                sources.push_back(std::move(ids));
              }
            }
            taskmoe::translation_options o;
            o.beam_size = beam;
            o.return_scores = false;
            if (length > 0) {
              o.min_decoding_length = length;
              o.max_decoding_length = length;
            }
            const measurement m = measure(tr, sources, these_texts, batch, o, reps);
            const std::size_t sentences = texts.empty() ? sources.size() : texts.size();
            std::printf("| %s | %d | %d | %d | %zu | %zu | %.3f | %.0f | %.3f | %.0f |\n", label.c_str(), th, beam,
                        batch, sentences, m.tokens, m.seconds, m.tokens_per_s, m.cpu,
                        static_cast<double>(m.tokens) / m.cpu);
            std::fflush(stdout);
          }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_runtime: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
