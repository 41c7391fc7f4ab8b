// taskmoe-server: every task of a model behind a LibreTranslate-compatible HTTP API, with dynamic
// batching (docs/serving.md). `taskmoe-server --help` prints the options.

#include <cerrno>     // errno
#include <chrono>     // std::chrono
#include <csignal>    // SIGTERM, SIGINT, SIGPIPE
#include <cstdio>     // std::fprintf
#include <cstdlib>    // std::strtol, std::_Exit
#include <cstring>    // std::strerror
#include <exception>  // std::exception
#include <fstream>    // std::ifstream
#include <mutex>      // std::mutex, std::lock_guard
#include <new>        // std::bad_alloc
#include <set>        // std::set
#include <string>     // std::string
#include <thread>     // std::thread
#include <vector>     // std::vector

#include <pthread.h>     // pthread_sigmask
#include <sys/socket.h>  // setsockopt, listen

// The library first: <httplib.h> includes <resolv.h>, whose `_res` macro breaks Eigen's headers.
#include <taskmoe/translator_set.hpp>

#include <httplib.h>

#include "../cli/args.hpp"  // arg_cursor, usage_error
#include "api.hpp"
#include "batcher.hpp"
#include "metrics.hpp"

namespace {

constexpr const char* usage_text =
    "usage: taskmoe-server --checkpoint DIR [--quantization int8] [options]\n"
    "       taskmoe-server --models DIR [options]\n"
    "\n"
    "Serves every task of a model over HTTP with LibreTranslate's API: POST /translate,\n"
    "GET /languages, GET /health, GET /metrics (Prometheus), and a web page at GET /.\n"
    "Concurrent requests for one task are batched; tasks run side by side. docs/serving.md.\n"
    "\n"
    "Model:\n"
    "  --checkpoint DIR        a full multi-task checkpoint: every task, shared weights loaded once\n"
    "  --quantization int8     (--checkpoint) quantize at load, as taskmoe-convert --quantization int8\n"
    "  --models DIR            every per-task .tmoe file in DIR (taskmoe-convert's output)\n"
    "  --tasks A,B,...         serve only these tasks (e.g. en-de,fr-de); default: all\n"
    "  --no-verify             skip the per-tensor checksum check of .tmoe files\n"
    "  --vocabulary-maps DIR   target shortlists: a task whose DIR/<task>.vmap.txt exists decodes over\n"
    "                          it (CTranslate2's vmap.txt format; tools/make_vocabulary_map.py); a\n"
    "                          .tmoe file's embedded map (taskmoe-convert --vocabulary-map) likewise\n"
    "  --no-vocabulary-maps    decode every task over its full vocabulary, embedded maps or not\n"
    "Network:\n"
    "  --host ADDR             address to listen on (default 127.0.0.1; 0.0.0.0: every interface)\n"
    "  --port N                TCP port (default 5000; 0: any free port, printed at start)\n"
    "  --http-threads N        connections served at once (default 128)\n"
    "  --api-keys FILE         require api_key, one of the keys in FILE (one per line, # comments)\n"
    "  --access-log            one line per request on stderr\n"
    "Batching and limits:\n"
    "  --threads N             translation workers, one batch each (default: hardware threads)\n"
    "  --max-batch-tokens N    source tokens per batch at most (default 1024)\n"
    "  --batch-wait-ms N       how long a sentence may wait for others to join its batch (default 0:\n"
    "                          batches form from what piles up while the workers are busy)\n"
    "  --no-batching           a batch holds one request's lines only (no merging of requests)\n"
    "  --queue N               sentences waiting at most, all tasks together; more: 503 (default 1024)\n"
    "  --timeout-ms N          a request not answered by then gets 503 (default 30000)\n"
    "  --max-chars N           characters per text at most (default 5000)\n"
    "  --batch-limit N         texts per list q at most (default 128)\n"
    "Decoding (defaults are taskmoe-translate's, so answers equal its output):\n"
    "  --beam N                beam size (default 4); alternatives may ask for up to N-1 more\n"
    "\n"
    "  --help                  this text\n"
    "  --version               the program and library version\n"
    "\n"
    "SIGTERM or SIGINT: stop accepting connections, answer the requests in flight, exit 0.\n"
    "Exit status: 0 after a signal, 1 error (model, address in use), 2 usage error.\n";

using taskmoe_cli::usage_error;

struct server_options {
  std::string models, checkpoint, quantization, host = "127.0.0.1", api_keys, vocabulary_maps;
  std::vector<std::string> tasks;
  int port = 5000;
  int http_threads = 128;
  int threads = 0;
  int max_batch_tokens = 1024;
  int batch_wait_ms = 0;
  bool batching = true;
  int queue = 1024;
  int timeout_ms = 30000;
  int max_chars = 5000;
  int batch_limit = 128;
  int beam = 4;
  bool verify = true;
  bool no_vocabulary_maps = false;
  bool access_log = false;
  bool help = false;
  bool version = false;
};

int to_int(const std::string& opt, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || x < lo || x > hi)
    throw usage_error{opt + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
                      v + "'"};
  return static_cast<int>(x);
}

std::vector<std::string> split_list(const std::string& opt, const std::string& v) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = v.find(',', start);
    std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) throw usage_error{opt + " needs a comma-separated list of task names, got '" + v + "'"};
    out.push_back(std::move(item));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

server_options parse(int argc, char** argv) {
  server_options o;
  for (taskmoe_cli::arg_cursor args(argc, argv); args.next();) {
    const std::string& a = args.name();
    const auto take = [&args] { return args.take(); };
    const auto flag = [&args] { args.flag(); };
    if (a == "--models") o.models = take();
    else if (a == "--checkpoint") o.checkpoint = take();
    else if (a == "--quantization") o.quantization = take();
    else if (a == "--tasks") o.tasks = split_list(a, take());
    else if (a == "--no-verify") { flag(); o.verify = false; }
    else if (a == "--vocabulary-maps") o.vocabulary_maps = take();
    else if (a == "--no-vocabulary-maps") { flag(); o.no_vocabulary_maps = true; }
    else if (a == "--host") o.host = take();
    else if (a == "--port") o.port = to_int(a, take(), 0, 65535);
    else if (a == "--http-threads") o.http_threads = to_int(a, take(), 1, 100000);
    else if (a == "--api-keys") o.api_keys = take();
    else if (a == "--access-log") { flag(); o.access_log = true; }
    else if (a == "--threads") o.threads = to_int(a, take(), 1, 1024);
    else if (a == "--max-batch-tokens") o.max_batch_tokens = to_int(a, take(), 1, 1 << 24);
    else if (a == "--batch-wait-ms") o.batch_wait_ms = to_int(a, take(), 0, 60000);
    else if (a == "--no-batching") { flag(); o.batching = false; }
    else if (a == "--queue") o.queue = to_int(a, take(), 1, 1 << 24);
    else if (a == "--timeout-ms") o.timeout_ms = to_int(a, take(), 1, 24 * 3600 * 1000);
    else if (a == "--max-chars") o.max_chars = to_int(a, take(), 1, 1 << 24);
    else if (a == "--batch-limit") o.batch_limit = to_int(a, take(), 1, 1 << 20);
    else if (a == "--beam") o.beam = to_int(a, take(), 1, 64);
    else if (a == "--help" || a == "-h") o.help = true;
    else if (a == "--version") o.version = true;
    else throw usage_error{"unknown argument '" + a + "' (see --help)"};
  }
  if (o.help || o.version) return o;
  if (o.models.empty() == o.checkpoint.empty()) throw usage_error{"give --checkpoint DIR or --models DIR (one of them)"};
  if (o.no_vocabulary_maps && !o.vocabulary_maps.empty())
    throw usage_error{"--vocabulary-maps and --no-vocabulary-maps are mutually exclusive"};
  if (!o.quantization.empty() && o.quantization != "int8")
    throw usage_error{"--quantization takes int8 (float32 is the default), got '" + o.quantization + "'"};
  if (!o.quantization.empty() && o.checkpoint.empty())
    throw usage_error{"--quantization applies to --checkpoint; .tmoe files are quantized by taskmoe-convert"};
  if (static_cast<long long>(o.batch_limit) > o.queue)
    throw usage_error{"--batch-limit must not exceed --queue (a full list could never be queued)"};
  if (o.threads == 0) o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return o;
}

std::set<std::string> read_api_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw taskmoe::io_error(path + ": cannot open the API key file: " + std::strerror(errno));
  std::set<std::string> keys;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    const std::size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    keys.insert(line.substr(start));
  }
  if (keys.empty()) throw taskmoe::invalid_argument_error(path + ": no API keys (one per line; # starts a comment)");
  return keys;
}

int run(const server_options& o) {
  using clock = std::chrono::steady_clock;
  if (!taskmoe::tokenizer::sentencepiece::available)
    throw taskmoe::error("this build has no SentencePiece (TASKMOE_WITH_SENTENCEPIECE=OFF); the server needs it");

  // Signals go to one thread (sigwait), never to a worker in the middle of a call: block them
  // before any thread exists so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server

  std::set<std::string> keys;
  if (!o.api_keys.empty()) keys = read_api_keys(o.api_keys);

  taskmoe::translator_set_options so;
  so.translator.threads = 1;  // one thread per call: parallelism comes from the workers
  so.translator.verify_checksums = o.verify;
  so.quantization = o.quantization;
  so.tasks = o.tasks;
  so.vocabulary_maps = o.vocabulary_maps;
  const auto t_load = clock::now();
  const taskmoe::translator_set set = o.checkpoint.empty() ? taskmoe::translator_set::from_directory(o.models, so)
                                                           : taskmoe::translator_set::from_checkpoint(o.checkpoint, so);
  const double load_s = std::chrono::duration<double>(clock::now() - t_load).count();
  std::string task_list;
  for (const auto& t : set.tasks()) task_list += (task_list.empty() ? "" : " ") + t;
  std::fprintf(stderr, "taskmoe-server: %s: %zu task(s) [%s]%s, loaded in %.2f s (%.1f MB owned)\n",
               o.checkpoint.empty() ? o.models.c_str() : o.checkpoint.c_str(), set.size(), task_list.c_str(),
               o.quantization.empty() ? "" : ", int8", load_s, static_cast<double>(set.owned_bytes()) / 1e6);

  taskmoe::server::metrics m;
  taskmoe::server::batcher_options bo;
  bo.workers = o.threads;
  bo.max_batch_tokens = static_cast<std::size_t>(o.max_batch_tokens);
  bo.batch_wait = std::chrono::milliseconds(o.batch_wait_ms);
  bo.max_queued = static_cast<std::size_t>(o.queue);
  bo.batching = o.batching;
  bo.vocabulary_maps = !o.no_vocabulary_maps;
  bo.decoding.beam_size = o.beam;      // the rest: taskmoe-translate's defaults, which are the
  bo.decoding.return_scores = false;   // library's except the beam (its --scores is off)
  set.at(set.tasks().front()).translate_tokens({}, bo.decoding);  // validates the options
  // Every shortlist is read now: a bad embedded map fails the start, not each request, and the
  // first request pays nothing for it.
  if (bo.vocabulary_maps)
    for (const auto& t : set.tasks())
      if (set.at(t).has_vocabulary_map()) (void)set.at(t).vocabulary_map();

  taskmoe::server::api_options ao;
  ao.max_chars = static_cast<std::size_t>(o.max_chars);
  ao.batch_limit = static_cast<std::size_t>(o.batch_limit);
  // The largest valid request: every text at the limit, each code point written as \uXXXX.
  ao.max_body_bytes = ao.batch_limit * ao.max_chars * 6 + 65536;
  ao.max_alternatives = o.beam - 1;
  ao.max_lines = static_cast<std::size_t>(o.queue);
  ao.timeout = std::chrono::milliseconds(o.timeout_ms);
  ao.api_keys = std::move(keys);
  ao.access_log = o.access_log;

  taskmoe::server::batcher batcher(bo, m);
  taskmoe::server::api api(set, batcher, m, ao);
  httplib::Server svr;
  api.install(svr);
  const std::size_t http_threads = static_cast<std::size_t>(o.http_threads);
  svr.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  svr.set_payload_max_length(ao.max_body_bytes);
  svr.set_read_timeout(5, 0);   // a client that stops sending mid-request is dropped (slowloris)
  svr.set_write_timeout(5, 0);
  svr.set_keep_alive_timeout(5);
  // httplib writes headers and body separately: with Nagle on, the body waits for the client's
  // delayed ACK (40 ms on Linux), several times a short sentence's translation time.
  svr.set_tcp_nodelay(true);
  svr.set_keep_alive_max_count(1000);
  // httplib (as Debian builds it) listens with a backlog of 5: a burst of connections would get
  // SYN retries (1 s each). Keep the socket to listen() again with a real backlog, and set
  // SO_REUSEADDR only (httplib's default adds SO_REUSEPORT, which would let a second server
  // share the port silently).
  int listen_fd = -1;
  svr.set_socket_options([&listen_fd](socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd = sock;
  });
  int port = o.port;
  if (port == 0) {
    port = svr.bind_to_any_port(o.host);
    if (port < 0) throw taskmoe::io_error("cannot listen on " + o.host + " (any port)");
  } else if (!svr.bind_to_port(o.host, port)) {
    throw taskmoe::io_error("cannot listen on " + o.host + ":" + std::to_string(port) +
                            " (address in use, or not an address of this machine)");
  }
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);

  // The signal thread touches svr and batcher only under `life` and only while !closing: main
  // sets closing (under `life`) before it destroys them.
  std::mutex life;
  bool closing = false, stop_requested = false;
  std::thread signals([&] {
    for (int count = 0;; ++count) {
      int sig = 0;
      if (sigwait(&stop_signals, &sig) != 0) continue;
      if (count > 0) {
        std::fprintf(stderr, "taskmoe-server: second signal: exiting without finishing requests\n");
        std::_Exit(1);
      }
      std::fprintf(stderr, "taskmoe-server: %s: finishing requests in flight, then exiting\n",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
      // httplib's stop() does nothing before listen_after_bind() is running, so a signal right
      // after the start waits for it (or for main to be closing) instead of being lost.
      for (;;) {
        {
          std::lock_guard<std::mutex> lock(life);
          if (closing) break;
          if (svr.is_running()) {
            stop_requested = true;
            batcher.hurry();  // queued sentences go now, not after their batch wait
            svr.stop();       // closes the listening socket; listen_after_bind returns when all is answered
            break;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  });
  signals.detach();  // blocked in sigwait until exit; nothing to join

  std::fprintf(stderr, "taskmoe-server: listening on http://%s:%d (%d worker(s), batching %s)\n", o.host.c_str(),
               port, o.threads, o.batching ? "on" : "off");
  const bool ok = svr.listen_after_bind();  // returns once stop() ran and every connection is done
  bool stopped_by_signal = false;
  {
    std::lock_guard<std::mutex> lock(life);
    closing = true;
    stopped_by_signal = stop_requested;
  }
  batcher.stop();
  if (!ok && !stopped_by_signal) throw taskmoe::io_error("the server stopped listening unexpectedly");
  std::fprintf(stderr, "taskmoe-server: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  server_options o;
  try {
    o = parse(argc, argv);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "taskmoe-server: %s\n", e.message.c_str());
    return 2;
  }
  if (o.help) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  if (o.version) {
    std::printf("taskmoe-server %s (cpp-httplib %s)\n", TASKMOE_VERSION_STRING, CPPHTTPLIB_VERSION);
    return 0;
  }
  try {
    return run(o);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "taskmoe-server: %s\n", e.message.c_str());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "taskmoe-server: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "taskmoe-server: error: %s\n", e.what());
    return 1;
  }
}
