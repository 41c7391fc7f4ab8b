// taskmoe-convert: extract per-task .tmoe files from a multi-task TaskMoE checkpoint.
// docs/converter.md documents every option; `taskmoe-convert --help` prints the summary.

#include <atomic>      // std::atomic
#include <csignal>     // std::signal, SIGINT, SIGTERM
#include <cstdio>      // std::fprintf, std::printf
#include <cstdlib>     // std::strtol
#include <exception>   // std::exception
#include <filesystem>  // std::filesystem
#include <fstream>     // std::ifstream
#include <new>         // std::bad_alloc
#include <string>      // std::string
#include <vector>      // std::vector

#include <unistd.h>  // isatty

#include <taskmoe/convert/convert.hpp>
#include <taskmoe/convert/verify.hpp>
#include <taskmoe/format/checkpoint.hpp>
#include <taskmoe/version.hpp>

#include "../cli/args.hpp"  // arg_cursor, usage_error

namespace {

constexpr const char* usage_text =
    "usage: taskmoe-convert --checkpoint DIR --list-tasks\n"
    "       taskmoe-convert --checkpoint DIR --task NAME --output FILE.tmoe [options]\n"
    "       taskmoe-convert --checkpoint DIR --task NAME [--task NAME ...] --output-dir DIR [options]\n"
    "       taskmoe-convert --checkpoint DIR --all-tasks --output-dir DIR [options]\n"
    "\n"
    "Extracts per-task models (.tmoe, docs/format.md) from a full multi-task TaskMoE checkpoint\n"
    "(docs/checkpoint-format.md): for each task-routed MoE layer only the task's top-k experts and\n"
    "their gate weights are kept; token-routed stacks keep all experts and their router.\n"
    "\n"
    "  --checkpoint DIR       checkpoint folder (config.json, model.safetensors[.index.json],\n"
    "                         sentencepiece.model)\n"
    "  --list-tasks           print the tasks, the routing of each stack, per task the experts kept\n"
    "                         in each MoE layer with their gates, and the file size per quantization\n"
    "  --task NAME            a task to extract (repeatable)\n"
    "  --all-tasks            extract every task of the checkpoint\n"
    "  --output FILE          output file (exactly one --task)\n"
    "  --output-dir DIR       output folder (must exist); files are named <task>.tmoe\n"
    "  --quantization Q       float32 | float16 | bfloat16 | int8 (default: int8)\n"
    "                         float32 is bit-exact; int8 stores FFN, expert, attention and\n"
    "                         embedding weights as symmetric per-row int8 with f32 scales\n"
    "                         (see docs/converter.md)\n"
    "  --embeddings T         int8 only: float16 | int8 | float32 token embeddings (default:\n"
    "                         float16, a separate output projection int8; int8: the smallest\n"
    "                         file, up to 0.5 BLEU lower; float32: the output projection too)\n"
    "  --float32-embeddings   the same as --embeddings float32\n"
    "  --vocabulary-map FILE  embed a target-vocabulary shortlist (CTranslate2's vmap.txt format;\n"
    "                         tools/make_vocabulary_map.py) in the file (exactly one --task)\n"
    "  --vocabulary-maps DIR  embed DIR/<task>.vmap.txt in each task's file, where it exists\n"
    "  --verify N             after each conversion run the full checkpoint model (routing computed\n"
    "                         live) and the extracted file on N probe sentences; print the max abs\n"
    "                         logit difference and the share of identical greedy outputs (float32:\n"
    "                         anything but 100% identical is an error)\n"
    "  --probe-file FILE      probe sentences for --verify, one per line (default: generated)\n"
    "  --force                replace existing output files (atomically)\n"
    "  --quiet                no progress bar and no summary lines (errors are still printed)\n"
    "  --help                 this text\n"
    "  --version              the converter version\n"
    "\n"
    "Output is atomic: each file is written to a temporary file beside it, fsynced and renamed;\n"
    "a failed or interrupted conversion leaves nothing at the output path.\n"
    "Exit status: 0 success, 1 conversion error, 2 usage error, 130 interrupted.\n";

std::atomic<bool> g_interrupted{false};

extern "C" void on_signal(int) { g_interrupted.store(true); }

struct interrupted {};

using taskmoe_cli::usage_error;

struct cli_options {
  std::string checkpoint;
  bool list_tasks = false;
  bool all_tasks = false;
  std::vector<std::string> tasks;
  std::string output;
  std::string output_dir;
  taskmoe::quantization_scheme quantization = taskmoe::quantization_scheme::int8;
  taskmoe::embedding_precision embeddings = taskmoe::embedding_precision::float16;
  int verify = 0;
  std::string probe_file;
  std::string vocabulary_map;
  std::string vocabulary_maps;
  bool force = false;
  bool quiet = false;
  bool help = false;
  bool version = false;
};

cli_options parse(int argc, char** argv) {
  cli_options o;
  bool have_checkpoint = false, have_output = false, have_output_dir = false, have_q = false,
       have_embeddings = false;
  for (taskmoe_cli::arg_cursor args(argc, argv); args.next();) {
    const std::string& a = args.name();
    const auto take = [&args] { return args.take(); };
    const auto flag = [&args] { args.flag(); };
    if (a == "--checkpoint") {
      if (have_checkpoint) throw usage_error{"--checkpoint given twice"};
      o.checkpoint = take();
      have_checkpoint = true;
    } else if (a == "--list-tasks") {
      flag();
      o.list_tasks = true;
    } else if (a == "--task") {
      o.tasks.push_back(take());
    } else if (a == "--all-tasks") {
      flag();
      o.all_tasks = true;
    } else if (a == "--output" || a == "-o") {
      if (have_output) throw usage_error{"--output given twice"};
      o.output = take();
      have_output = true;
    } else if (a == "--output-dir") {
      if (have_output_dir) throw usage_error{"--output-dir given twice"};
      o.output_dir = take();
      have_output_dir = true;
    } else if (a == "--quantization") {
      if (have_q) throw usage_error{"--quantization given twice"};
      try {
        o.quantization = taskmoe::parse_quantization(take());
      } catch (const taskmoe::invalid_argument_error& e) {
        throw usage_error{e.what()};
      }
      have_q = true;
    } else if (a == "--embeddings" || a == "--float32-embeddings") {
      if (have_embeddings) throw usage_error{"--embeddings given twice"};
      if (a == "--float32-embeddings") {
        flag();
        o.embeddings = taskmoe::embedding_precision::float32;
      } else {
        try {
          o.embeddings = taskmoe::parse_embedding_precision(take());
        } catch (const taskmoe::invalid_argument_error& e) {
          throw usage_error{e.what()};
        }
      }
      have_embeddings = true;
    } else if (a == "--verify") {
      const std::string v = take();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 100000)
        throw usage_error{"--verify needs a number of probes in 1..100000, got '" + v + "'"};
      o.verify = static_cast<int>(n);
    } else if (a == "--probe-file") {
      o.probe_file = take();
    } else if (a == "--vocabulary-map") {
      if (!o.vocabulary_map.empty()) throw usage_error{"--vocabulary-map given twice"};
      o.vocabulary_map = take();
      if (o.vocabulary_map.empty()) throw usage_error{"--vocabulary-map needs a file"};
    } else if (a == "--vocabulary-maps") {
      if (!o.vocabulary_maps.empty()) throw usage_error{"--vocabulary-maps given twice"};
      o.vocabulary_maps = take();
      if (o.vocabulary_maps.empty()) throw usage_error{"--vocabulary-maps needs a folder"};
    } else if (a == "--force") {
      flag();
      o.force = true;
    } else if (a == "--quiet" || a == "-q") {
      flag();
      o.quiet = true;
    } else if (a == "--help" || a == "-h") {
      o.help = true;
    } else if (a == "--version") {
      o.version = true;
    } else {
      throw usage_error{"unknown argument '" + a + "' (see --help)"};
    }
  }
  if (o.help || o.version) return o;
  if (!have_checkpoint || o.checkpoint.empty()) throw usage_error{"--checkpoint DIR is required"};
  const int modes = (o.list_tasks ? 1 : 0) + (o.all_tasks ? 1 : 0) + (!o.tasks.empty() ? 1 : 0);
  if (modes == 0) throw usage_error{"nothing to do: give --list-tasks, --task NAME or --all-tasks"};
  if (modes > 1) throw usage_error{"--list-tasks, --task and --all-tasks are mutually exclusive"};
  if (o.list_tasks) {
    if (have_output || have_output_dir || !o.vocabulary_map.empty() || !o.vocabulary_maps.empty())
      throw usage_error{"--list-tasks writes no files"};
    return o;
  }
  if (have_output && have_output_dir) throw usage_error{"give --output or --output-dir, not both"};
  if (o.all_tasks && have_output) throw usage_error{"--all-tasks needs --output-dir, not --output"};
  if (o.tasks.size() > 1 && have_output)
    throw usage_error{"several --task need --output-dir (--output names one file)"};
  if (!have_output && !have_output_dir) throw usage_error{"give --output FILE or --output-dir DIR"};
  if ((have_output && o.output.empty()) || (have_output_dir && o.output_dir.empty()))
    throw usage_error{"empty output path"};
  if (!o.probe_file.empty() && o.verify == 0) throw usage_error{"--probe-file needs --verify N"};
  if (have_embeddings && o.quantization != taskmoe::quantization_scheme::int8)
    throw usage_error{"--embeddings applies to --quantization int8 only"};
  if (!o.vocabulary_map.empty() && !o.vocabulary_maps.empty())
    throw usage_error{"--vocabulary-map and --vocabulary-maps are mutually exclusive"};
  if (!o.vocabulary_map.empty() && (o.all_tasks || o.tasks.size() != 1))
    throw usage_error{"--vocabulary-map needs exactly one --task (--vocabulary-maps DIR for several)"};
  for (std::size_t i = 0; i < o.tasks.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (o.tasks[i] == o.tasks[j]) throw usage_error{"--task " + o.tasks[i] + " given twice"};
  return o;
}

std::string human_bytes(std::uint64_t b) {
  char buf[32];
  if (b >= 1000ull * 1000 * 1000)
    std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(b) / 1e9);
  else if (b >= 1000ull * 1000)
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(b) / 1e6);
  else if (b >= 1000)
    std::snprintf(buf, sizeof buf, "%.1f kB", static_cast<double>(b) / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

std::uint64_t checkpoint_bytes(const taskmoe::checkpoint& ck, std::uint64_t* params) {
  std::uint64_t bytes = 0;
  *params = 0;
  for (const auto& r : taskmoe::required_checkpoint_tensors(ck.config())) {
    const auto& v = ck.tensor(r.name);
    bytes += v.byte_size;
    *params += v.numel();
  }
  return bytes;
}

void list_tasks(const taskmoe::checkpoint& ck) {
  using namespace taskmoe;
  const model_config& c = ck.config();
  std::uint64_t params = 0;
  const std::uint64_t bytes = checkpoint_bytes(ck, &params);
  std::printf("checkpoint %s: %.1fM parameters, %s of weights, content hash %s\n",
              ck.directory().c_str(), static_cast<double>(params) / 1e6, human_bytes(bytes).c_str(),
              ck.content_hash_hex().c_str());
  for (stack s : {stack::encoder, stack::decoder}) {
    const auto& m = c.moe(s);
    std::printf("%s: %d layers, routing %s", std::string(stack_name(s)).c_str(), c.num_layers(s),
                c.has_moe ? std::string(routing_name(m.route)).c_str() : "dense");
    if (c.has_moe && !m.layers.empty()) {
      std::printf(", MoE layers");
      for (std::size_t i = 0; i < m.layers.size(); ++i) std::printf("%s%d", i ? "," : " ", m.layers[i]);
      std::printf(" (%d experts, top-%d)", c.num_experts, c.top_k);
    }
    std::printf("\n");
  }
  std::printf("tasks: %zu\n", ck.tasks().size());
  const quantization_scheme schemes[] = {quantization_scheme::float32, quantization_scheme::float16,
                                         quantization_scheme::bfloat16, quantization_scheme::int8};
  for (const auto& t : ck.tasks()) {
    convert_options o;
    o.created = "2000-01-01T00:00:00Z";  // same length as a real time stamp: exact sizes
    o.quantization = quantization_scheme::float32;
    const conversion_plan p = plan_task(ck, t.name, o);
    std::printf("\n%s  (%s -> %s, tag %s, %.1fM parameters kept)\n", t.name.c_str(), t.source.c_str(),
                t.target.c_str(), t.target_tag.c_str(), static_cast<double>(p.parameters) / 1e6);
    for (stack s : {stack::encoder, stack::decoder}) {
      for (const auto& l : p.metadata.moe_layers(s)) {
        std::printf("  %s.%d: ", std::string(stack_name(s)).c_str(), l.layer);
        if (is_task_routed(l.route)) {
          std::printf("experts");
          for (std::size_t j = 0; j < l.experts.size(); ++j)
            std::printf("%s %d (gate %.4f)", j ? "," : "", l.experts[j], static_cast<double>(l.gates[j]));
          std::printf("\n");
        } else {
          std::printf("token-routed: all %zu experts and the router kept\n", l.experts.size());
        }
      }
    }
    std::printf("  file size:");
    for (std::size_t k = 0; k < 4; ++k) {
      o.quantization = schemes[k];
      std::printf("%s %s %s", k ? "," : "", std::string(quantization_name(schemes[k])).c_str(),
                  human_bytes(plan_task(ck, t.name, o).file_size).c_str());
    }
    std::printf("\n");
  }
}

class progress_bar {
 public:
  progress_bar(bool enabled, std::string label) : enabled_(enabled), label_(std::move(label)) {}
  void operator()(const taskmoe::convert_progress& p) {
    if (g_interrupted.load()) throw interrupted{};
    if (!enabled_) return;
    const double f = p.bytes_total ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total) : 1.0;
    const int width = 30;
    const int filled = static_cast<int>(f * width);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %3d%% %zu/%zu tensors", label_.c_str(), bar.c_str(),
                 static_cast<int>(f * 100), p.tensor_index, p.tensor_count);
    std::fflush(stderr);
  }
  void done() const {
    if (enabled_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  bool enabled_;
  std::string label_;
};

int run(const cli_options& o) {
  using namespace taskmoe;
  checkpoint_options copts;
  copts.check_finite = false;  // the converter checks every value it reads, naming the tensor
  const checkpoint ck(o.checkpoint, copts);
  if (!o.quiet)
    for (const auto& n : ck.extra_tensors())
      std::fprintf(stderr, "taskmoe-convert: warning: ignoring unexpected tensor '%s'\n", n.c_str());
  if (o.list_tasks) {
    list_tasks(ck);
    return 0;
  }
  std::vector<std::string> tasks = o.tasks;
  if (o.all_tasks)
    for (const auto& t : ck.tasks()) tasks.push_back(t.name);
  for (const auto& t : tasks) ck.task(t);  // unknown task: fail before writing anything

  std::vector<std::filesystem::path> outputs;
  if (!o.output.empty()) {
    outputs.emplace_back(o.output);
  } else {
    std::error_code ec;
    if (!std::filesystem::is_directory(o.output_dir, ec))
      throw io_error(o.output_dir + ": output folder does not exist");
    for (const auto& t : tasks) outputs.push_back(std::filesystem::path(o.output_dir) / (t + ".tmoe"));
  }
  for (const auto& p : outputs) {
    std::error_code ec;
    const auto parent = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
    if (!std::filesystem::is_directory(parent, ec))
      throw io_error(p.string() + ": output folder '" + parent.string() + "' does not exist");
    if (!o.force && std::filesystem::exists(p, ec))
      throw io_error(p.string() + ": file exists (use --force to replace it)");
  }

  // Each task's options and plan; a bad vocabulary map fails here, before any file is written.
  std::vector<convert_options> options(tasks.size());
  std::vector<conversion_plan> plans;
  plans.reserve(tasks.size());
  if (!o.vocabulary_maps.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(o.vocabulary_maps, ec))
      throw io_error(o.vocabulary_maps + ": not a directory (--vocabulary-maps)");
  }
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    convert_options& co = options[i];
    co.quantization = o.quantization;
    co.embeddings = o.embeddings;
    co.overwrite = o.force;
    co.vocabulary_map = o.vocabulary_map;
    if (!o.vocabulary_maps.empty()) {
      std::error_code ec;
      const auto p = std::filesystem::path(o.vocabulary_maps) / (tasks[i] + ".vmap.txt");
      if (std::filesystem::is_regular_file(p, ec)) co.vocabulary_map = p.string();
      else if (!o.quiet)
        std::fprintf(stderr, "taskmoe-convert: note: no %s: %s gets no vocabulary map\n", p.string().c_str(),
                     tasks[i].c_str());
    }
    plans.push_back(plan_task(ck, tasks[i], co));
  }

  std::vector<std::string> probes;
  if (!o.probe_file.empty()) {
    std::ifstream in(o.probe_file);
    if (!in) throw io_error(o.probe_file + ": cannot open probe file");
    for (std::string line; std::getline(in, line) && static_cast<int>(probes.size()) < o.verify;)
      if (!line.empty()) probes.push_back(line);
    if (probes.empty()) throw io_error(o.probe_file + ": no probe sentences");
  }
  int failed = 0;
  const bool bar = !o.quiet && ::isatty(2);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    convert_options co = options[i];
    progress_bar pb(bar, tasks[i]);
    co.progress = [&pb](const convert_progress& p) { pb(p); };
    const convert_result r = convert_task(ck, plans[i], co, outputs[i]);
    pb.done();
    if (!o.quiet)
      std::fprintf(stderr, "%s: %s, %zu tensors%s, %s, %.2f s\n", r.path.string().c_str(),
                   std::string(quantization_name(o.quantization)).c_str(), r.tensor_count,
                   co.vocabulary_map.empty() ? "" : " (vocabulary map embedded)", human_bytes(r.file_size).c_str(),
                   r.seconds);
    if (o.verify > 0) {
      verify_options vo;
      vo.probes = o.verify;
      vo.texts = probes;
      const verify_result v = verify_task(o.checkpoint, tasks[i], r.path.string(), vo);
      std::printf("verify %s (%s): %d probes, identical greedy outputs %.1f%%, max abs logit difference %g\n",
                  tasks[i].c_str(), std::string(quantization_name(o.quantization)).c_str(), v.probes,
                  100.0 * v.identical_share(), static_cast<double>(v.max_abs_logit_diff));
      if (o.quantization == quantization_scheme::float32 && v.identical != v.probes) {
        std::fprintf(stderr, "taskmoe-convert: error: %s: float32 extraction differs from the full model\n",
                     r.path.string().c_str());
        ++failed;
      }
    }
  }
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  cli_options o;
  try {
    o = parse(argc, argv);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "taskmoe-convert: %s\n", e.message.c_str());
    return 2;
  }
  if (o.help) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  if (o.version) {
    std::printf("taskmoe-convert %s\n", TASKMOE_VERSION_STRING);
    return 0;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    return run(o);
  } catch (const interrupted&) {
    std::fprintf(stderr, "\ntaskmoe-convert: interrupted; no output was written for the current task\n");
    return 130;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "taskmoe-convert: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "taskmoe-convert: error: %s\n", e.what());
    return 1;
  }
}
