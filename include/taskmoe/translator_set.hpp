#pragma once
// Every task of a model behind one object: what a server needs.
//
//   auto set = taskmoe::translator_set::from_checkpoint("models/demo");   // all 8 tasks
//   const taskmoe::translator& t = set.at("en-de");                      // or find("en", "de")
//   t.translate("Open the file.");
//
// From a full multi-task checkpoint, the weights every task uses (embeddings, attention, dense
// FFNs, norms) are loaded once and shared; each task adds only its kept experts. From a directory
// of per-task .tmoe files, each file is mapped (the page cache shares what the kernel can).
// A translator_set is immutable after construction; its translators are safe to call from any
// number of threads (translator.hpp).

#include <algorithm>    // std::sort, std::find
#include <filesystem>   // std::filesystem::directory_iterator
#include <memory>       // std::shared_ptr
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <utility>      // std::pair
#include <vector>       // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/translator.hpp>

namespace taskmoe {
namespace detail {

// The experts and gates `src`'s task runs in every MoE layer, in layer order: equal routes mean
// two tasks compute with the same model (one target language under task:target routing).
inline std::vector<std::pair<std::vector<int>, std::vector<float>>> routes(const model::weight_source& src) {
  std::vector<std::pair<std::vector<int>, std::vector<float>>> r;
  const model_config& c = src.config();
  if (!c.has_moe) return r;
  for (stack s : {stack::encoder, stack::decoder})
    for (int l : c.moe(s).layers) {
      model::moe_layer_spec spec = src.moe_layer(s, l);
      r.emplace_back(std::move(spec.expert_ids), std::move(spec.gates));
    }
  return r;
}

}  // namespace detail

struct translator_set_options {
  translator_options translator;  // threads per call, checksums, mmap... (expected_task unused)
  // Checkpoint sources only: "" serves the stored dtype (a float16 checkpoint runs float32);
  // "int8" quantizes at load exactly as `taskmoe-convert --quantization int8` does, so each task
  // translates exactly like its converted int8 file.
  std::string quantization;
  std::vector<std::string> tasks;  // empty: every task; else only these (unknown names throw)
  // A directory of target-vocabulary shortlists: each task's `<task>.vmap.txt` there, when present,
  // becomes that task's translator_options::vocabulary_map (translator::has_vocabulary_map),
  // in place of a map its .tmoe file embeds.
  std::string vocabulary_maps;
};

namespace detail {
inline void check_vocabulary_maps(const translator_set_options& o) {
  std::error_code ec;
  if (!o.vocabulary_maps.empty() && !std::filesystem::is_directory(o.vocabulary_maps, ec))
    throw io_error(o.vocabulary_maps + ": not a directory (translator_set_options::vocabulary_maps)");
}

// `o.translator` with task `task`'s shortlist from o.vocabulary_maps, when that file exists
// (check_vocabulary_maps first).
inline translator_options task_translator_options(const translator_set_options& o, const std::string& task) {
  translator_options t = o.translator;
  std::error_code ec;
  const std::filesystem::path p = std::filesystem::path(o.vocabulary_maps) / (task + ".vmap.txt");
  if (!o.vocabulary_maps.empty() && std::filesystem::is_regular_file(p, ec)) t.vocabulary_map = p.string();
  return t;
}
}  // namespace detail

class translator_set {
 public:
  // Every task of a full checkpoint directory (config.json + model.safetensors + sentencepiece).
  static translator_set from_checkpoint(const std::string& dir, const translator_set_options& o = {});
  // Every *.tmoe file directly in `dir` (one task each; two files of one task throw).
  static translator_set from_directory(const std::string& dir, const translator_set_options& o = {});

  // Task names, sorted ("de-en", "en-de", ...).
  std::vector<std::string> tasks() const {
    std::vector<std::string> names;
    for (const auto& e : entries_) names.push_back(e.name);
    return names;
  }
  std::size_t size() const noexcept { return entries_.size(); }

  // nullptr when the task is not served.
  const translator* find(std::string_view task) const noexcept {
    for (const auto& e : entries_)
      if (e.name == task) return e.t.get();
    return nullptr;
  }
  // By languages (task_info::source / target), as LibreTranslate clients ask.
  const translator* find(std::string_view source, std::string_view target) const noexcept {
    for (const auto& e : entries_)
      if (e.t->task().source == source && e.t->task().target == target) return e.t.get();
    return nullptr;
  }
  // Throws invalid_argument_error naming the served tasks.
  const translator& at(std::string_view task) const {
    if (const translator* t = find(task)) return *t;
    std::string known;
    for (const auto& e : entries_) known += (known.empty() ? "" : ", ") + e.name;
    throw invalid_argument_error("unknown task '" + std::string(task) + "' (served: " + known + ")");
  }

  // Bytes the set owns outside the mapped files (converted/packed weights), shared ones once.
  std::size_t owned_bytes() const noexcept { return owned_bytes_; }

 private:
  struct entry {
    std::string name;
    std::shared_ptr<const translator> t;
  };
  void add(std::string name, std::shared_ptr<const translator> t) {
    for (const auto& e : entries_)
      if (e.name == name) throw invalid_argument_error("task '" + name + "' is served twice");
    entries_.push_back(entry{std::move(name), std::move(t)});
    std::sort(entries_.begin(), entries_.end(), [](const entry& a, const entry& b) { return a.name < b.name; });
  }

  std::vector<entry> entries_;
  std::size_t owned_bytes_ = 0;
};

inline translator_set translator_set::from_checkpoint(const std::string& dir, const translator_set_options& o) {
  if (!o.quantization.empty() && o.quantization != "int8")
    throw invalid_argument_error("translator_set: unknown quantization '" + o.quantization +
                                 "' (expected \"\" or \"int8\")");
  detail::check_vocabulary_maps(o);
  auto ck = std::make_shared<const checkpoint>(dir);
  std::vector<task_info> tasks;
  if (o.tasks.empty()) {
    tasks = ck->tasks();
  } else {
    for (const auto& n : o.tasks) tasks.push_back(ck->task(n));  // throws listing the known tasks
  }
  if (tasks.empty()) throw format_error(dir, "the checkpoint has no tasks");
  model::model_options mo = translator::model_options(o.translator);
  mo.quantize_int8 = o.quantization == "int8";
  // The first task's model owns every shared layer; the others load only their experts. Tasks
  // routed to the same experts with the same gates (one target language under task:target
  // routing; every task under token routing) share one model outright.
  const kernels::scoped_intra_op_threads load_threads(o.translator.threads);  // packing at load
  auto first = model::weight_source::from_checkpoint(ck, tasks.front().name);
  auto first_routes = detail::routes(first);
  const auto base = std::make_shared<const model::transformer>(std::move(first), mo);
  const auto spm = std::make_shared<const tokenizer::sentencepiece>(ck->sentencepiece_model());
  std::vector<std::pair<decltype(first_routes), std::shared_ptr<const model::transformer>>> models;
  models.emplace_back(std::move(first_routes), base);
  translator_set set;
  set.owned_bytes_ = base->owned_bytes();
  for (const task_info& t : tasks) {
    auto src = model::weight_source::from_checkpoint(ck, t.name);
    auto r = detail::routes(src);
    std::shared_ptr<const model::transformer> m;
    for (const auto& [key, candidate] : models)
      if (key == r) m = candidate;
    if (!m) {
      m = std::make_shared<const model::transformer>(base, std::move(src));
      set.owned_bytes_ += m->owned_bytes();
      models.emplace_back(std::move(r), m);
    }
    set.add(t.name, std::shared_ptr<const translator>(new translator(m, spm, t, detail::task_translator_options(o, t.name))));
  }
  return set;
}

inline translator_set translator_set::from_directory(const std::string& dir, const translator_set_options& o) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw io_error(dir + ": not a directory");
  detail::check_vocabulary_maps(o);
  std::vector<std::string> paths;
  for (const auto& de : fs::directory_iterator(dir))
    if (de.path().extension() == ".tmoe") paths.push_back(de.path().string());
  std::sort(paths.begin(), paths.end());
  translator_set set;
  // Maps are read once the task is known (below), not by the constructor as well.
  translator_options unmapped = o.translator;
  unmapped.vocabulary_map.clear();
  for (const auto& p : paths) {
    auto t = std::make_shared<translator>(p, unmapped);
    const std::string name = t->task().name;
    if (!o.tasks.empty() && std::find(o.tasks.begin(), o.tasks.end(), name) == o.tasks.end()) continue;
    // The task is known only once the file is open: its shortlist is attached before sharing (a
    // map in DIR takes the place of one embedded in the file).
    t->options_.vocabulary_map = detail::task_translator_options(o, name).vocabulary_map;
    t->load_vocabulary_map(t->model().source().sentencepiece_model());
    set.owned_bytes_ += t->model().owned_bytes();
    set.add(name, std::move(t));
  }
  for (const auto& n : o.tasks)
    if (!set.find(n)) throw invalid_argument_error(dir + ": no .tmoe file holds task '" + n + "'");
  if (set.size() == 0) throw invalid_argument_error(dir + ": no .tmoe files");
  return set;
}

}  // namespace taskmoe
