// taskmoe-translate: translate text line by line with a per-task .tmoe file (or, for comparisons,
// a full multi-task checkpoint and one of its tasks). Uses only the public facade.
// `taskmoe-translate --help` prints the options; README.md ("Translating") documents them.

#include <chrono>       // std::chrono::steady_clock
#include <cerrno>       // errno, EINTR, EAGAIN
#include <cstdio>       // std::fprintf, std::FILE
#include <cstdlib>      // std::strtol, std::strtod
#include <cstring>      // std::strerror
#include <exception>    // std::exception
#include <new>          // std::bad_alloc
#include <string>       // std::string
#include <vector>       // std::vector

#include <fcntl.h>     // open
#include <poll.h>      // poll
#include <sys/stat.h>  // fstat
#include <unistd.h>    // read, isatty, close

#include <taskmoe/translator.hpp>

#include "../tools/cli/args.hpp"  // arg_cursor, usage_error

namespace {

constexpr const char* usage_text =
    "usage: taskmoe-translate --model FILE.tmoe [options] [-i IN] [-o OUT]\n"
    "       taskmoe-translate --checkpoint DIR --task NAME [options] [-i IN] [-o OUT]\n"
    "\n"
    "Translates one sentence per line (UTF-8) from stdin or -i, writing one translation per line\n"
    "to stdout or -o. A batch is translated as soon as it holds --batch-size lines or no more\n"
    "input is available without waiting, so an interactive pipe gets answers line by line.\n"
    "\n"
    "  --model FILE             per-task model made by taskmoe-convert (memory-mapped)\n"
    "  --checkpoint DIR         a full multi-task checkpoint instead (needs --task)\n"
    "  --task NAME              the task of --checkpoint; with --model: fail unless the file has it\n"
    "  --beam N                 beam size (default 4; 1 = greedy)\n"
    "  --n-best N               N hypotheses per line, as 'i ||| text ||| score' lines (default 1)\n"
    "  --scores                 write 'i ||| text ||| score' lines even with --n-best 1\n"
    "  --length-penalty X       beam ranking: score / length^X (default 1.0)\n"
    "  --max-length N           generated tokens at most per sentence, EOS included (default 256)\n"
    "  --min-length N           tokens before EOS may be generated (default 0)\n"
    "  --sampling-topk K        sample from the K most likely tokens (0: all; implies --beam 1)\n"
    "  --sampling-temperature T sampling temperature (default 1.0)\n"
    "  --seed S                 random seed for sampling (default 0: random)\n"
    "  --batch-size N           sentences per batch (default 32)\n"
    "  --max-input-length N     source pieces kept per line (default 0: what the model allows,\n"
    "                           max_positions - 2); longer lines are cut, with a warning\n"
    "  --no-truncate            reject lines longer than that instead: an error naming the line\n"
    "                           and an empty output line\n"
    "  --max-line-bytes N       lines longer than N bytes are rejected unread, so memory stays\n"
    "                           bounded (default 16777216)\n"
    "  --threads N              worker threads, each translating part of a batch (default 1)\n"
    "  --no-verify              skip the per-tensor checksum check when opening a .tmoe file\n"
    "  --kv-cache P             attention caches: auto (float16 for int8 models), float32, float16\n"
    "  --int8-weights W         int8 weights: auto (narrow on AVX2 CPUs without VNNI, else full),\n"
    "                           full (the file's, the same results on every CPU), narrow\n"
    "                           (requantized to [-64, 64]: the faster kernel without VNNI)\n"
    "  --vocabulary-map FILE    score only a shortlist of target pieces per batch (CTranslate2's\n"
    "                           vmap.txt format: 'source n-gram<TAB>target pieces'); faster,\n"
    "                           approximate. A .tmoe file's embedded map (taskmoe-convert\n"
    "                           --vocabulary-map) is used likewise unless --no-vocabulary-map\n"
    "  --no-vocabulary-map      decode over the full vocabulary even if the file embeds a map\n"
    "  -i, --input FILE         read from FILE instead of stdin\n"
    "  -o, --output FILE        write to FILE instead of stdout\n"
    "  --verbose                print the model on load and a summary (sentences, tokens/s) at the end\n"
    "  --quiet                  no progress bar, no warnings (errors are still printed)\n"
    "  --help                   this text\n"
    "  --version                the program and library version\n"
    "\n"
    "Output stays aligned with input: one output line (or n-best block) per input line, always.\n"
    "Empty or blank lines give empty lines. A line that is not valid UTF-8, too long in bytes, or\n"
    "(with --no-truncate) too long in pieces is reported on stderr (naming the line), gives an\n"
    "empty output line, and translation continues; the exit status is then 1. A trailing '\\r' is\n"
    "removed from each line; a last line without a newline is translated.\n"
    "Exit status: 0 success, 1 error (model file, I/O, invalid input lines), 2 usage error.\n";

using taskmoe_cli::usage_error;

struct cli_options {
  std::string model, checkpoint, task, input, output;
  int beam = 4;
  bool beam_given = false;
  int n_best = 1;
  bool scores = false;
  float length_penalty = 1.0f;
  int max_length = 256;
  int min_length = 0;
  int sampling_topk = 1;
  float sampling_temperature = 1.0f;
  unsigned long long seed = 0;
  int batch_size = 32;
  int max_input_length = 0;
  bool truncate = true;
  std::size_t max_line_bytes = std::size_t{16} << 20;
  int threads = 1;
  std::string kv_cache = "auto";
  taskmoe::kernels::int8_weights int8_weights = taskmoe::kernels::int8_weights::automatic;
  std::string vocabulary_map;
  bool no_vocabulary_map = false;
  bool verify = true;
  bool verbose = false;
  bool quiet = false;
  bool help = false;
  bool version = false;
};

int to_int(const std::string& opt, const std::string& v, int lo) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || x < lo || x > 1000000000L)
    throw usage_error{opt + " needs an integer >= " + std::to_string(lo) + ", got '" + v + "'"};
  return static_cast<int>(x);
}

float to_float(const std::string& opt, const std::string& v, bool positive) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !(x == x) || (positive && !(x > 0)))
    throw usage_error{opt + " needs a number" + (positive ? " > 0" : "") + ", got '" + v + "'"};
  return static_cast<float>(x);
}

cli_options parse(int argc, char** argv) {
  cli_options o;
  bool topk_given = false;
  for (taskmoe_cli::arg_cursor args(argc, argv); args.next();) {
    const std::string& a = args.name();
    const auto take = [&args] { return args.take(); };
    const auto flag = [&args] { args.flag(); };
    if (a == "--model" || a == "-m") o.model = take();
    else if (a == "--checkpoint") o.checkpoint = take();
    else if (a == "--task") o.task = take();
    else if (a == "--beam" || a == "--beam-size") { o.beam = to_int(a, take(), 1); o.beam_given = true; }
    else if (a == "--n-best") o.n_best = to_int(a, take(), 1);
    else if (a == "--scores") { flag(); o.scores = true; }
    else if (a == "--length-penalty") o.length_penalty = to_float(a, take(), false);
    else if (a == "--max-length") o.max_length = to_int(a, take(), 1);
    else if (a == "--min-length") o.min_length = to_int(a, take(), 0);
    else if (a == "--sampling-topk") { o.sampling_topk = to_int(a, take(), 0); topk_given = true; }
    else if (a == "--sampling-temperature") o.sampling_temperature = to_float(a, take(), true);
    else if (a == "--seed") o.seed = static_cast<unsigned long long>(to_int(a, take(), 0));
    else if (a == "--batch-size") o.batch_size = to_int(a, take(), 1);
    else if (a == "--max-input-length") o.max_input_length = to_int(a, take(), 0);
    else if (a == "--no-truncate") { flag(); o.truncate = false; }
    else if (a == "--max-line-bytes") o.max_line_bytes = static_cast<std::size_t>(to_int(a, take(), 1));
    else if (a == "--threads") o.threads = to_int(a, take(), 1);
    else if (a == "--no-verify") { flag(); o.verify = false; }
    else if (a == "--kv-cache") {
      o.kv_cache = take();
      if (o.kv_cache != "auto" && o.kv_cache != "float32" && o.kv_cache != "float16")
        throw usage_error{"--kv-cache needs auto, float32 or float16, got '" + o.kv_cache + "'"};
    }
    else if (a == "--int8-weights") {
      try {
        o.int8_weights = taskmoe::kernels::int8_weights_from_string(take());
      } catch (const taskmoe::invalid_argument_error& e) {
        throw usage_error{std::string("--int8-weights: ") + e.what()};
      }
    }
    else if (a == "--vocabulary-map") o.vocabulary_map = take();
    else if (a == "--no-vocabulary-map") { flag(); o.no_vocabulary_map = true; }
    else if (a == "--input" || a == "-i") o.input = take();
    else if (a == "--output" || a == "-o") o.output = take();
    else if (a == "--verbose" || a == "-v") { flag(); o.verbose = true; }
    else if (a == "--quiet" || a == "-q") { flag(); o.quiet = true; }
    else if (a == "--help" || a == "-h") o.help = true;
    else if (a == "--version") o.version = true;
    else throw usage_error{"unknown argument '" + a + "' (see --help)"};
  }
  if (o.help || o.version) return o;
  if (o.model.empty() == o.checkpoint.empty())
    throw usage_error{"give --model FILE.tmoe or --checkpoint DIR --task NAME"};
  if (!o.checkpoint.empty() && o.task.empty()) throw usage_error{"--checkpoint needs --task NAME"};
  if (topk_given && o.sampling_topk != 1) {
    if (o.beam_given && o.beam != 1) throw usage_error{"sampling (--sampling-topk) needs --beam 1"};
    o.beam = 1;
  }
  if (o.n_best > o.beam) throw usage_error{"--n-best must not exceed --beam"};
  if (o.min_length > o.max_length) throw usage_error{"--min-length must not exceed --max-length"};
  if (o.no_vocabulary_map && !o.vocabulary_map.empty())
    throw usage_error{"--vocabulary-map and --no-vocabulary-map are mutually exclusive"};
  return o;
}

// Reads lines from a file descriptor. fill(false) reads only what is available without blocking
// (poll with a zero timeout), so the caller can translate a partial batch while a pipe is idle.
// A line longer than max_bytes is never held whole: its bytes are dropped as they arrive and it
// comes back as an empty line with overlong set, so memory stays bounded by max_bytes.
class line_reader {
 public:
  line_reader(int fd, std::size_t max_bytes) : fd_(fd), max_bytes_(max_bytes) {}

  bool next_line(std::string& line, bool& overlong) {
    const auto nl = buf_.find('\n', pos_);
    if (nl == std::string::npos) {
      if (buf_.size() - pos_ > max_bytes_) {  // drop what we hold of the line, keep skipping it
        consumed_ += buf_.size() - pos_;
        pos_ = buf_.size();
        skipping_ = true;
      }
      if (!eof_ || pos_ >= buf_.size()) {
        if (!(eof_ && skipping_)) return false;
        line.clear();  // input ended inside an over-long last line
        overlong = true;
        skipping_ = false;
        return true;
      }
      line.assign(buf_, pos_, std::string::npos);  // last line without a newline
      consumed_ += buf_.size() - pos_;
      pos_ = buf_.size();
    } else {
      line.assign(buf_, pos_, nl - pos_);
      consumed_ += nl + 1 - pos_;
      pos_ = nl + 1;
    }
    overlong = skipping_ || line.size() > max_bytes_;
    skipping_ = false;
    if (overlong) line.clear();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }

  // Appends input; returns false when nothing was read (blocking: only at end of input).
  bool fill(bool block) {
    if (eof_) return false;
    if (!block) {
      pollfd p{fd_, POLLIN, 0};
      int r;
      do r = ::poll(&p, 1, 0); while (r < 0 && errno == EINTR);
      if (r <= 0) return false;  // would block (or poll unsupported: translate what we have)
    }
    if (pos_ > 0) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
    char chunk[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n > 0) {
        buf_.append(chunk, static_cast<std::size_t>(n));
        return true;
      }
      if (n == 0) {
        eof_ = true;
        return pos_ < buf_.size();
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      throw taskmoe::io_error(std::string("cannot read input: ") + std::strerror(errno));
    }
  }

  bool eof() const noexcept { return eof_ && pos_ >= buf_.size() && !skipping_; }
  std::size_t consumed() const noexcept { return consumed_; }

 private:
  int fd_;
  std::size_t max_bytes_;
  bool skipping_ = false;  // inside an over-long line whose start was dropped
  std::string buf_;
  std::size_t pos_ = 0;
  bool eof_ = false;
  std::size_t consumed_ = 0;
};

class progress_bar {
 public:
  progress_bar(bool enabled, std::size_t total) : enabled_(enabled && total > 0), total_(total) {}
  void update(std::size_t done, std::size_t lines, std::size_t tokens, double seconds) {
    if (!enabled_) return;
    const double f = std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
    const int width = 30;
    std::string bar(static_cast<std::size_t>(f * width), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r[%s] %3d%% %zu lines, %.0f tokens/s", bar.c_str(), static_cast<int>(f * 100),
                 lines, seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0);
    std::fflush(stderr);
  }
  void done() const {
    if (enabled_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  bool enabled_;
  std::size_t total_;
};

void write_all(std::FILE* out, const std::string& s, const std::string& name) {
  if (std::fwrite(s.data(), 1, s.size(), out) != s.size() || std::fflush(out) != 0)
    throw taskmoe::io_error(name + ": write failed: " + std::strerror(errno));
}

int run(const cli_options& o) {
  using clock = std::chrono::steady_clock;
  if (!taskmoe::tokenizer::sentencepiece::available)
    throw taskmoe::error("this build has no SentencePiece (TASKMOE_WITH_SENTENCEPIECE=OFF); "
                         "text translation needs it");
  taskmoe::translator_options to;
  to.threads = o.threads;
  to.verify_checksums = o.verify;
  using precision = taskmoe::model::model_options::cache_precision;
  to.kv_cache = o.kv_cache == "float32" ? precision::float32 : o.kv_cache == "float16" ? precision::float16 : precision::automatic;
  to.int8_weights = o.int8_weights;
  to.vocabulary_map = o.vocabulary_map;
  const auto t_load = clock::now();
  const taskmoe::translator tr = o.checkpoint.empty()
      ? [&] {
          to.expected_task = o.task;
          return taskmoe::translator(o.model, to);
        }()
      : taskmoe::translator::from_checkpoint(o.checkpoint, o.task, to);
  const double load_s = std::chrono::duration<double>(clock::now() - t_load).count();

  taskmoe::translation_options opts;
  opts.beam_size = o.beam;
  opts.num_hypotheses = o.n_best;
  opts.length_penalty = o.length_penalty;
  opts.max_decoding_length = o.max_length;
  opts.min_decoding_length = o.min_length;
  opts.sampling_topk = o.sampling_topk;
  opts.sampling_temperature = o.sampling_temperature;
  opts.seed = o.seed;
  opts.use_vocabulary_map = tr.has_vocabulary_map() && !o.no_vocabulary_map;
  opts.return_scores = o.scores || o.n_best > 1;
  opts.max_input_length = static_cast<std::size_t>(o.max_input_length);
  const std::size_t max_pieces = tr.max_input_length(opts);
  try {
    tr.translate_tokens({}, opts);  // validates the options before any input is read
  } catch (const taskmoe::invalid_argument_error& e) {
    throw usage_error{e.what()};
  }
  if (o.verbose) {
    const auto& t = tr.task();
    const char* shortlist = !opts.use_vocabulary_map ? "" : o.vocabulary_map.empty() ? ", embedded vocabulary map"
                                                                                    : ", vocabulary map";
    std::fprintf(stderr, "taskmoe-translate: %s: task %s (%s -> %s), d_model %d, %d+%d layers, ISA %s, "
                 "%d thread(s), beam %d%s; loaded in %.3f s\n",
                 o.checkpoint.empty() ? o.model.c_str() : o.checkpoint.c_str(), t.name.c_str(),
                 t.source.c_str(), t.target.c_str(), tr.config().d_model, tr.config().encoder_layers,
                 tr.config().decoder_layers, taskmoe::kernels::to_string(taskmoe::kernels::active_isa()),
                 o.threads, o.beam, shortlist, load_s);
  }

  int in_fd = 0;
  std::string in_name = "stdin";
  if (!o.input.empty()) {
    in_name = o.input;
    in_fd = ::open(o.input.c_str(), O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) throw taskmoe::io_error(o.input + ": cannot open: " + std::strerror(errno));
  }
  std::size_t total_bytes = 0;
  struct stat st {};
  if (::fstat(in_fd, &st) == 0 && S_ISREG(st.st_mode)) total_bytes = static_cast<std::size_t>(st.st_size);

  std::FILE* out = stdout;
  std::string out_name = "stdout";
  if (!o.output.empty()) {
    out_name = o.output;
    out = std::fopen(o.output.c_str(), "wb");
    if (!out) throw taskmoe::io_error(o.output + ": cannot open for writing: " + std::strerror(errno));
  }

  line_reader reader(in_fd, o.max_line_bytes);
  progress_bar bar(!o.quiet && total_bytes > 0 && ::isatty(2), total_bytes);
  std::vector<std::vector<int>> batch;  // the lines' pieces (translate_tokens: encoded once, here)
  std::vector<std::size_t> bad;  // indices into batch of rejected lines (written as empty lines)
  std::size_t line_no = 0, sentences = 0, tokens = 0, bad_lines = 0, truncated_lines = 0;
  double translate_s = 0;
  const bool moses = o.scores || o.n_best > 1;

  const auto flush = [&] {
    if (batch.empty()) return;
    const auto t0 = clock::now();
    const std::vector<taskmoe::translation_result> res = tr.translate_tokens(batch, opts);
    translate_s += std::chrono::duration<double>(clock::now() - t0).count();
    std::string text;
    std::size_t b = 0;
    for (std::size_t i = 0; i < res.size(); ++i) {
      const std::size_t index = line_no - batch.size() + i;  // 0-based input line
      const bool invalid = b < bad.size() && bad[b] == i;
      if (invalid) ++b;
      if (!moses) {
        if (!invalid) text += res[i].hypotheses.front().text;
        text += '\n';
        continue;
      }
      for (const auto& h : res[i].hypotheses) {
        char score[32];
        std::snprintf(score, sizeof score, "%.6f", static_cast<double>(h.normalized_score));
        text += std::to_string(index) + " ||| " + (invalid ? std::string() : h.text) + " ||| " + score + "\n";
      }
    }
    for (const auto& r : res) tokens += r.hypotheses.front().tokens.size();
    sentences += res.size();
    write_all(out, text, out_name);
    batch.clear();
    bad.clear();
    bar.update(reader.consumed(), sentences, tokens, translate_s);
  };

  // A rejected line is reported here, translated as an empty line, and counted for the exit status.
  const auto reject = [&](const char* why, std::size_t detail) {
    if (!o.quiet)
      std::fprintf(stderr, "taskmoe-translate: %s: line %zu: %s %zu; writing an empty line\n", in_name.c_str(),
                   line_no, why, detail);
    ++bad_lines;
    bad.push_back(batch.size());
    batch.emplace_back();
  };
  std::string line;
  bool overlong = false;
  for (;;) {
    while (batch.size() < static_cast<std::size_t>(o.batch_size) && reader.next_line(line, overlong)) {
      ++line_no;
      if (overlong) {
        reject("longer than --max-line-bytes", o.max_line_bytes);
        continue;
      }
      const std::size_t at = taskmoe::tokenizer::find_invalid_utf8(line);
      if (at != std::string::npos) {
        reject("invalid UTF-8 at byte", at);
        continue;
      }
      std::vector<int> pieces = tr.encode(line);
      if (pieces.size() > max_pieces) {
        if (!o.truncate) {
          reject("more pieces than --max-input-length", max_pieces);
          continue;
        }
        ++truncated_lines;
        if (!o.quiet)
          std::fprintf(stderr, "taskmoe-translate: %s: line %zu: %zu pieces, translating the first %zu "
                       "(--max-input-length; --no-truncate rejects such lines)\n",
                       in_name.c_str(), line_no, pieces.size(), max_pieces);
      }
      batch.push_back(std::move(pieces));
    }
    if (batch.size() >= static_cast<std::size_t>(o.batch_size)) {
      flush();
      continue;
    }
    if (reader.eof()) break;
    if (batch.empty()) {
      reader.fill(true);
    } else if (!reader.fill(false)) {
      flush();  // input is idle: answer what we have
    }
  }
  flush();
  bar.done();
  if (in_fd != 0) ::close(in_fd);
  if (out != stdout && std::fclose(out) != 0)
    throw taskmoe::io_error(o.output + ": write failed: " + std::strerror(errno));

  if (o.verbose)
    std::fprintf(stderr, "taskmoe-translate: %zu sentences, %zu target tokens, %.3f s translating, "
                 "%.1f tokens/s, %.1f sentences/s\n",
                 sentences, tokens, translate_s,
                 translate_s > 0 ? static_cast<double>(tokens) / translate_s : 0.0,
                 translate_s > 0 ? static_cast<double>(sentences) / translate_s : 0.0);
  if (truncated_lines > 0 && !o.quiet)
    std::fprintf(stderr, "taskmoe-translate: %zu line(s) were truncated to %zu pieces\n", truncated_lines, max_pieces);
  if (bad_lines > 0) {
    std::fprintf(stderr, "taskmoe-translate: %zu line(s) were rejected (empty output lines; see above)\n", bad_lines);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cli_options o;
  try {
    o = parse(argc, argv);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "taskmoe-translate: %s\n", e.message.c_str());
    return 2;
  }
  if (o.help) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  if (o.version) {
    std::printf("taskmoe-translate %s\n", TASKMOE_VERSION_STRING);
    return 0;
  }
  try {
    return run(o);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "taskmoe-translate: %s\n", e.message.c_str());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "taskmoe-translate: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "taskmoe-translate: error: %s\n", e.what());
    return 1;
  }
}
