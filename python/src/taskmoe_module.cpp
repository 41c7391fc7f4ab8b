// taskmoe._taskmoe: the pybind11 binding behind the `taskmoe` Python package (docs/python.md).
//
// One translation unit holds the whole header-only runtime. Every call that runs the model (or
// reads / writes a model file) releases the GIL, so Python threads translate in parallel; the
// arguments are converted to C++ values before the release and the results after it.
// C++ exceptions become the taskmoe.* Python exceptions created in make_exceptions(), with the
// library's message unchanged.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // std::vector / std::string conversions

#include <cstdint>    // std::uint64_t
#include <memory>     // std::unique_ptr
#include <optional>   // std::optional
#include <string>     // std::string
#include <utility>    // std::move
#include <vector>     // std::vector

#include <taskmoe/convert/convert.hpp>
#include <taskmoe/convert/verify.hpp>
#include <taskmoe/error.hpp>
#include <taskmoe/format/checkpoint.hpp>
#include <taskmoe/kernels/isa.hpp>
#include <taskmoe/tokenizer/sentencepiece.hpp>
#include <taskmoe/translator.hpp>
#include <taskmoe/version.hpp>

namespace py = pybind11;

namespace {

// Python exception types, created once at import (module-lifetime references).
struct exception_types {
  py::handle error, invalid_argument, format, config, file;
};
exception_types& exceptions() {
  static exception_types e;
  return e;
}

py::handle new_exception(py::module_& m, const char* name, const char* doc, py::tuple bases) {
  const std::string qualified = std::string("taskmoe.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(type));  // steals the new reference; the module keeps it alive
  return py::handle(type);
}

void make_exceptions(py::module_& m) {
  exception_types& e = exceptions();
  const py::handle exc(PyExc_Exception), value(PyExc_ValueError), os(PyExc_OSError);
  e.error = new_exception(m, "Error", "Base of every exception taskmoe raises for bad input or files.",
                          py::make_tuple(exc));
  e.invalid_argument = new_exception(
      m, "InvalidArgumentError",
      "An argument the library cannot accept (options out of range, invalid UTF-8, unknown task...).",
      py::make_tuple(e.error, value));
  e.format = new_exception(m, "FormatError",
                           "A model file (.tmoe, safetensors, checkpoint) is malformed. "
                           "Attributes: file, problem.",
                           py::make_tuple(e.error));
  e.config = new_exception(m, "ConfigError",
                           "A model configuration is invalid; the message starts with the field.",
                           py::make_tuple(e.format));
  e.file = new_exception(m, "FileError",
                         "The operating system refused a file operation (missing file, permission, "
                         "disk full); also an OSError.",
                         py::make_tuple(e.error, os));
}

void raise(py::handle type, const std::string& message) { PyErr_SetString(type.ptr(), message.c_str()); }

// Most specific first: every taskmoe exception derives from taskmoe::error.
void translate_exception(std::exception_ptr p) {
  const exception_types& e = exceptions();
  try {
    std::rethrow_exception(p);
  } catch (const taskmoe::config_error& x) {
    raise(e.config, x.what());
  } catch (const taskmoe::format_error& x) {
    // Build the instance ourselves so the file and problem are attributes, as in C++.
    py::object instance = py::reinterpret_borrow<py::object>(e.format)(x.what());
    instance.attr("file") = x.file();
    instance.attr("problem") = x.problem();
    PyErr_SetObject(e.format.ptr(), instance.ptr());
  } catch (const taskmoe::io_error& x) {
    raise(e.file, x.what());
  } catch (const taskmoe::invalid_argument_error& x) {
    raise(e.invalid_argument, x.what());
  } catch (const taskmoe::error& x) {
    raise(e.error, x.what());
  }
}

taskmoe::batch_unit parse_batch_type(const std::string& s) {
  if (s == "examples") return taskmoe::batch_unit::examples;
  if (s == "tokens") return taskmoe::batch_unit::tokens;
  throw taskmoe::invalid_argument_error("batch_type must be 'examples' or 'tokens', got '" + s + "'");
}

std::size_t non_negative(long long v, const char* what) {
  if (v < 0) throw taskmoe::invalid_argument_error(std::string(what) + " must be >= 0, got " + std::to_string(v));
  return static_cast<std::size_t>(v);
}

taskmoe::translator_options make_translator_options(int threads, bool verify_checksums,
                                                    const std::string& expected_task, bool use_mmap,
                                                    bool fuse_qkv, bool int8_output_projection,
                                                    const std::string& kv_cache, const std::string& int8_weights,
                                                    const std::string& vocabulary_map) {
  using precision = taskmoe::model::model_options::cache_precision;
  taskmoe::translator_options o;
  if (kv_cache == "auto")
    o.kv_cache = precision::automatic;
  else if (kv_cache == "float32")
    o.kv_cache = precision::float32;
  else if (kv_cache == "float16")
    o.kv_cache = precision::float16;
  else
    throw taskmoe::invalid_argument_error("kv_cache must be 'auto', 'float32' or 'float16', got '" + kv_cache + "'");
  o.threads = threads;
  o.verify_checksums = verify_checksums;
  o.expected_task = expected_task;
  o.use_mmap = use_mmap;
  o.fuse_qkv = fuse_qkv;
  o.int8_output_projection = int8_output_projection;
  o.int8_weights = taskmoe::kernels::int8_weights_from_string(int8_weights);
  o.vocabulary_map = vocabulary_map;
  return o;
}

// nlohmann::json to plain Python objects (for the config property).
py::object to_python(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      py::dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d[py::str(it.key())] = to_python(it.value());
      return std::move(d);
    }
    case nlohmann::json::value_t::array: {
      py::list l;
      for (const auto& v : j) l.append(to_python(v));
      return std::move(l);
    }
    case nlohmann::json::value_t::string: return py::str(j.get<std::string>());
    case nlohmann::json::value_t::boolean: return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.get<std::int64_t>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.get<std::uint64_t>());
    case nlohmann::json::value_t::number_float: return py::float_(j.get<double>());
    default: return py::none();
  }
}

// The keyword arguments of translate_batch / translate_batch_tokens, in one place so both agree.
// Names are translation_options' (CTranslate2's where they exist); the defaults are read from a
// default-constructed translation_options `d`, so they cannot drift from the C++ ones.
#define TASKMOE_TRANSLATION_ARGS                                                                          \
  py::kw_only(), py::arg("beam_size") = d.beam_size, py::arg("num_hypotheses") = d.num_hypotheses,       \
      py::arg("length_penalty") = d.length_penalty, py::arg("max_decoding_length") = d.max_decoding_length, \
      py::arg("min_decoding_length") = d.min_decoding_length, py::arg("max_length_ratio") = d.max_length_ratio, \
      py::arg("max_length_offset") = d.max_length_offset, py::arg("sampling_topk") = d.sampling_topk,     \
      py::arg("sampling_topp") = d.sampling_topp, py::arg("sampling_temperature") = d.sampling_temperature, \
      py::arg("seed") = d.seed, py::arg("repetition_penalty") = d.repetition_penalty,                     \
      py::arg("no_repeat_ngram_size") = d.no_repeat_ngram_size, py::arg("return_scores") = d.return_scores, \
      py::arg("target_prefix") = py::none(), py::arg("max_batch_size") = d.max_batch_size,                \
      py::arg("batch_type") = "examples", py::arg("max_input_length") = d.max_input_length,               \
      py::arg("truncate_input") = d.truncate_input, py::arg("use_vocabulary_map") = d.use_vocabulary_map

taskmoe::translation_options make_translation_options(
    int beam_size, int num_hypotheses, float length_penalty, int max_decoding_length,
    int min_decoding_length, float max_length_ratio, int max_length_offset, int sampling_topk,
    float sampling_topp, float sampling_temperature, std::uint64_t seed, float repetition_penalty,
    int no_repeat_ngram_size, bool return_scores, long long max_batch_size,
    const std::string& batch_type, long long max_input_length, bool truncate_input, bool use_vocabulary_map) {
  taskmoe::translation_options o;
  o.beam_size = beam_size;
  o.num_hypotheses = num_hypotheses;
  o.length_penalty = length_penalty;
  o.max_decoding_length = max_decoding_length;
  o.min_decoding_length = min_decoding_length;
  o.max_length_ratio = max_length_ratio;
  o.max_length_offset = max_length_offset;
  o.sampling_topk = sampling_topk;
  o.sampling_topp = sampling_topp;
  o.sampling_temperature = sampling_temperature;
  o.seed = seed;
  o.repetition_penalty = repetition_penalty;
  o.no_repeat_ngram_size = no_repeat_ngram_size;
  o.return_scores = return_scores;
  o.max_batch_size = non_negative(max_batch_size, "max_batch_size");
  o.batch_type = parse_batch_type(batch_type);
  o.max_input_length = non_negative(max_input_length, "max_input_length");
  o.truncate_input = truncate_input;
  o.use_vocabulary_map = use_vocabulary_map;
  return o;
}

taskmoe::scoring_options make_scoring_options(long long max_batch_size, const std::string& batch_type,
                                              long long max_input_length, bool truncate_input) {
  taskmoe::scoring_options o;
  o.max_batch_size = non_negative(max_batch_size, "max_batch_size");
  o.batch_type = parse_batch_type(batch_type);
  o.max_input_length = non_negative(max_input_length, "max_input_length");
  o.truncate_input = truncate_input;
  return o;
}

// A list of str as UTF-8 strings. Done by hand rather than by pybind11's list caster so that a
// string that cannot be encoded (a lone surrogate) raises UnicodeEncodeError naming the problem
// instead of "incompatible function arguments", and so a bare str is refused, not iterated.
std::vector<std::string> utf8_texts(const py::handle& seq, const char* what) {
  if (py::isinstance<py::str>(seq) || py::isinstance<py::bytes>(seq) || !py::isinstance<py::sequence>(seq))
    throw py::type_error(std::string(what) + " must be a list of str, not " +
                         py::str(py::type::handle_of(seq).attr("__name__")).cast<std::string>());
  const py::sequence s = py::reinterpret_borrow<py::sequence>(seq);
  std::vector<std::string> out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const py::object item = s[i];
    if (!py::isinstance<py::str>(item))
      throw py::type_error(std::string(what) + "[" + std::to_string(i) + "] must be str, not " +
                           py::str(py::type::handle_of(item).attr("__name__")).cast<std::string>());
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
    if (data == nullptr) throw py::error_already_set();
    out.emplace_back(data, static_cast<std::size_t>(size));
  }
  return out;
}

// A file system path from str, bytes or os.PathLike (pathlib.Path), as open() takes.
std::string fspath(const py::handle& p) {
  const py::object v = py::module_::import("os").attr("fspath")(p);
  return v.cast<std::string>();  // str as UTF-8, bytes as they are
}

std::string hypothesis_repr(const taskmoe::translation_hypothesis& h) {
  return "Hypothesis(text=" + py::repr(py::str(h.text)).cast<std::string>() +
         ", score=" + std::to_string(h.score) + ", normalized_score=" + std::to_string(h.normalized_score) + ")";
}

}  // namespace

PYBIND11_MODULE(_taskmoe, m) {
  m.doc() = "taskmoe: Task-level Mixture-of-Experts translation on CPU (the C++ runtime's binding).";
  make_exceptions(m);
  py::register_exception_translator(&translate_exception);
  const taskmoe::translation_options d;  // the defaults of TASKMOE_TRANSLATION_ARGS

  m.attr("__version__") = TASKMOE_VERSION_STRING;
  m.attr("with_sentencepiece") = taskmoe::tokenizer::sentencepiece::available;
#if defined(TASKMOE_HAS_ONEDNN) && TASKMOE_HAS_ONEDNN
  m.attr("with_onednn") = true;
#else
  m.attr("with_onednn") = false;
#endif
  m.def("active_isa", [] { return std::string(taskmoe::kernels::to_string(taskmoe::kernels::active_isa())); },
        "The instruction set the kernels dispatch to: 'generic', 'avx2' or 'avx512' (TASKMOE_ISA "
        "forces one).");

  py::class_<taskmoe::task_info>(m, "Task", "One translation task: name, source and target language, target tag.")
      .def_readonly("name", &taskmoe::task_info::name)
      .def_readonly("source", &taskmoe::task_info::source)
      .def_readonly("target", &taskmoe::task_info::target)
      .def_readonly("target_tag", &taskmoe::task_info::target_tag)
      .def("__repr__", [](const taskmoe::task_info& t) {
        return "Task(name='" + t.name + "', source='" + t.source + "', target='" + t.target +
               "', target_tag='" + t.target_tag + "')";
      })
      .def("__eq__", [](const taskmoe::task_info& a, const taskmoe::task_info& b) {
        return a.name == b.name && a.source == b.source && a.target == b.target && a.target_tag == b.target_tag;
      });

  py::class_<taskmoe::translation_hypothesis>(m, "Hypothesis", "One translation of an input.")
      .def_readonly("text", &taskmoe::translation_hypothesis::text, "Translated text.")
      .def_readonly("tokens", &taskmoe::translation_hypothesis::tokens, "Target piece ids, EOS removed.")
      .def_readonly("score", &taskmoe::translation_hypothesis::score,
                    "Sum of the token log-probabilities (EOS included when generated).")
      .def_readonly("normalized_score", &taskmoe::translation_hypothesis::normalized_score,
                    "score / (tokens + EOS)^length_penalty: what the beam ranks by.")
      .def("__repr__", &hypothesis_repr);

  py::class_<taskmoe::translation_result>(m, "TranslationResult",
                                          "The hypotheses of one input, best first.")
      .def_property_readonly(
          "hypotheses",
          [](const taskmoe::translation_result& r) {
            std::vector<std::string> v;
            for (const auto& h : r.hypotheses) v.push_back(h.text);
            return v;
          },
          "Texts of the hypotheses, best first.")
      .def_property_readonly(
          "scores",
          [](const taskmoe::translation_result& r) {
            std::vector<float> v;
            for (const auto& h : r.hypotheses) v.push_back(h.normalized_score);
            return v;
          },
          "Normalized score of each hypothesis (as CTranslate2's and taskmoe-translate's n-best).")
      .def_property_readonly(
          "tokens",
          [](const taskmoe::translation_result& r) {
            std::vector<std::vector<int>> v;
            for (const auto& h : r.hypotheses) v.push_back(h.tokens);
            return v;
          },
          "Target piece ids of each hypothesis.")
      .def_readonly("truncated", &taskmoe::translation_result::truncated,
                    "The input had more than max_input_length pieces and was cut.")
      .def("__len__", [](const taskmoe::translation_result& r) { return r.hypotheses.size(); })
      .def("__getitem__",
           [](const taskmoe::translation_result& r, long long i) {
             const long long n = static_cast<long long>(r.hypotheses.size());
             if (i < 0) i += n;
             if (i < 0 || i >= n) throw py::index_error("hypothesis index out of range");
             return r.hypotheses[static_cast<std::size_t>(i)];
           })
      .def("__repr__", [](const taskmoe::translation_result& r) {
        std::string s = "TranslationResult(hypotheses=[";
        for (std::size_t i = 0; i < r.hypotheses.size(); ++i)
          s += (i ? ", " : "") + py::repr(py::str(r.hypotheses[i].text)).cast<std::string>();
        s += "], scores=[";
        for (std::size_t i = 0; i < r.hypotheses.size(); ++i)
          s += (i ? ", " : "") + std::to_string(r.hypotheses[i].normalized_score);
        return s + "])";
      });

  py::class_<taskmoe::scoring_result>(m, "ScoringResult", "Log-probabilities of one given target.")
      .def_readonly("tokens", &taskmoe::scoring_result::tokens, "Target piece ids, then EOS.")
      .def_readonly("log_probs", &taskmoe::scoring_result::log_probs, "Log-probability of each token.")
      .def_property_readonly("score", &taskmoe::scoring_result::score, "Sum of log_probs.")
      .def_readonly("truncated", &taskmoe::scoring_result::truncated,
                    "The source had more than max_input_length pieces and was cut.")
      .def("__repr__", [](const taskmoe::scoring_result& r) {
        return "ScoringResult(tokens=" + std::to_string(r.tokens.size()) + ", score=" + std::to_string(r.score()) + ")";
      });

  py::class_<taskmoe::translator>(m, "Translator",
                                  "A model for one task: a .tmoe file, or a task of a full checkpoint. "
                                  "Immutable; any number of threads may use it at once.")
      .def(py::init([](const py::object& path_in, int threads, bool verify_checksums,
                       std::optional<std::string> expected_task, bool use_mmap, bool fuse_qkv,
                       bool int8_output_projection, const std::string& kv_cache, const std::string& int8_weights,
                       const std::optional<py::object>& vocabulary_map) {
             const auto o = make_translator_options(threads, verify_checksums, expected_task.value_or(""),
                                                    use_mmap, fuse_qkv, int8_output_projection, kv_cache, int8_weights,
                                                    vocabulary_map ? fspath(*vocabulary_map) : "");
             const std::string path = fspath(path_in);
             py::gil_scoped_release release;  // loading verifies checksums and packs weights
             return std::make_unique<taskmoe::translator>(path, o);
           }),
           py::arg("path"), py::kw_only(), py::arg("threads") = 1, py::arg("verify_checksums") = true,
           py::arg("expected_task") = py::none(), py::arg("use_mmap") = true, py::arg("fuse_qkv") = true,
           py::arg("int8_output_projection") = true, py::arg("kv_cache") = "auto", py::arg("int8_weights") = "auto",
           py::arg("vocabulary_map") = py::none(),
           "Opens a .tmoe file (memory-mapped). vocabulary_map: a target shortlist (CTranslate2's "
           "vmap.txt format) that translate calls use with use_vocabulary_map=True.")
      .def_static(
          "from_checkpoint",
          [](const py::object& dir_in, const std::string& task, int threads, bool fuse_qkv,
             bool int8_output_projection, const std::string& kv_cache, const std::string& int8_weights,
             const std::optional<py::object>& vocabulary_map) {
            const auto o = make_translator_options(threads, true, "", true, fuse_qkv, int8_output_projection, kv_cache,
                                                   int8_weights,
                                                   vocabulary_map ? fspath(*vocabulary_map) : "");
            const std::string dir = fspath(dir_in);
            py::gil_scoped_release release;
            return std::make_unique<taskmoe::translator>(taskmoe::translator::from_checkpoint(dir, task, o));
          },
          py::arg("checkpoint"), py::arg("task"), py::kw_only(), py::arg("threads") = 1,
          py::arg("fuse_qkv") = true, py::arg("int8_output_projection") = true, py::arg("kv_cache") = "auto",
          py::arg("int8_weights") = "auto", py::arg("vocabulary_map") = py::none(),
          "One task of a full multi-task checkpoint directory (comparisons, debugging).")
      .def_property_readonly(
          "task", [](const taskmoe::translator& t) { return t.task(); }, "The task this model translates.")
      .def_property_readonly(
          "config", [](const taskmoe::translator& t) { return to_python(nlohmann::json(t.config())); },
          "The model configuration, as the 'model' and 'moe' objects of config.json.")
      .def_property_readonly(
          "isa", [](const taskmoe::translator&) { return std::string(taskmoe::kernels::to_string(taskmoe::kernels::active_isa())); },
          "The instruction set the kernels dispatch to (process-wide).")
      .def_property_readonly("target_tag_id", [](const taskmoe::translator& t) { return t.target_tag_id(); },
                             "SentencePiece id of the target tag put before every source.")
      .def_property_readonly(
          "has_vocabulary_map", [](const taskmoe::translator& t) { return t.has_vocabulary_map(); },
          "Whether use_vocabulary_map=True is allowed: a vocabulary_map was given or the file embeds one.")
      .def(
          "translate_batch",
          [](const taskmoe::translator& t, const py::object& texts_in, int beam_size,
             int num_hypotheses, float length_penalty, int max_decoding_length, int min_decoding_length,
             float max_length_ratio, int max_length_offset, int sampling_topk, float sampling_topp,
             float sampling_temperature, std::uint64_t seed, float repetition_penalty,
             int no_repeat_ngram_size, bool return_scores, std::optional<std::string> target_prefix,
             long long max_batch_size, const std::string& batch_type, long long max_input_length,
             bool truncate_input, bool use_vocabulary_map) {
            taskmoe::translation_options o = make_translation_options(
                beam_size, num_hypotheses, length_penalty, max_decoding_length, min_decoding_length,
                max_length_ratio, max_length_offset, sampling_topk, sampling_topp, sampling_temperature, seed,
                repetition_penalty, no_repeat_ngram_size, return_scores, max_batch_size, batch_type,
                max_input_length, truncate_input, use_vocabulary_map);
            if (target_prefix) o.target_prefix = *target_prefix;
            const std::vector<std::string> texts = utf8_texts(texts_in, "texts");
            py::gil_scoped_release release;
            return t.translate_batch(texts, o);
          },
          py::arg("texts"), TASKMOE_TRANSLATION_ARGS,
          "Translates a list of UTF-8 texts; one TranslationResult per text, in order.")
      .def(
          "translate_batch_tokens",
          [](const taskmoe::translator& t, const std::vector<std::vector<int>>& pieces, int beam_size,
             int num_hypotheses, float length_penalty, int max_decoding_length, int min_decoding_length,
             float max_length_ratio, int max_length_offset, int sampling_topk, float sampling_topp,
             float sampling_temperature, std::uint64_t seed, float repetition_penalty,
             int no_repeat_ngram_size, bool return_scores, std::optional<std::vector<int>> target_prefix,
             long long max_batch_size, const std::string& batch_type, long long max_input_length,
             bool truncate_input, bool use_vocabulary_map) {
            taskmoe::translation_options o = make_translation_options(
                beam_size, num_hypotheses, length_penalty, max_decoding_length, min_decoding_length,
                max_length_ratio, max_length_offset, sampling_topk, sampling_topp, sampling_temperature, seed,
                repetition_penalty, no_repeat_ngram_size, return_scores, max_batch_size, batch_type,
                max_input_length, truncate_input, use_vocabulary_map);
            if (target_prefix) o.target_prefix_tokens = *target_prefix;
            py::gil_scoped_release release;
            return t.translate_tokens(pieces, o);
          },
          py::arg("pieces"), TASKMOE_TRANSLATION_ARGS,
          "Translates SentencePiece ids (no tag, no </s>: what encode() returns).")
      .def(
          "score_batch",
          [](const taskmoe::translator& t, const py::object& sources_in, const py::object& targets_in,
             long long max_batch_size, const std::string& batch_type,
             long long max_input_length, bool truncate_input) {
            const auto o = make_scoring_options(max_batch_size, batch_type, max_input_length, truncate_input);
            const std::vector<std::string> sources = utf8_texts(sources_in, "sources");
            const std::vector<std::string> targets = utf8_texts(targets_in, "targets");
            py::gil_scoped_release release;
            return t.score_batch(sources, targets, o);
          },
          py::arg("sources"), py::arg("targets"), py::kw_only(), py::arg("max_batch_size") = 0,
          py::arg("batch_type") = "examples", py::arg("max_input_length") = 0, py::arg("truncate_input") = true,
          "Log-probabilities of targets[i] as the translation of sources[i] (forced decoding).")
      .def(
          "score_batch_tokens",
          [](const taskmoe::translator& t, const std::vector<std::vector<int>>& sources,
             const std::vector<std::vector<int>>& targets, long long max_batch_size, const std::string& batch_type,
             long long max_input_length, bool truncate_input) {
            const auto o = make_scoring_options(max_batch_size, batch_type, max_input_length, truncate_input);
            py::gil_scoped_release release;
            return t.score_tokens(sources, targets, o);
          },
          py::arg("sources"), py::arg("targets"), py::kw_only(), py::arg("max_batch_size") = 0,
          py::arg("batch_type") = "examples", py::arg("max_input_length") = 0, py::arg("truncate_input") = true,
          "score_batch on SentencePiece ids (no tag/BOS/EOS on either side).")
      .def(
          "encode",
          [](const taskmoe::translator& t, const std::string& text) {
            py::gil_scoped_release release;
            return t.encode(text);
          },
          py::arg("text"), "SentencePiece ids of a text (no tag, no </s>).")
      .def(
          "max_input_length", [](const taskmoe::translator& t) { return t.max_input_length(); },
          "Source pieces an input may have before it is truncated (the model's limit).")
      .def("__repr__", [](const taskmoe::translator& t) {
        return "Translator(task='" + t.task().name + "', " + t.task().source + " -> " + t.task().target + ")";
      });

  m.def(
      "list_tasks",
      [](const py::object& checkpoint_in) {
        const std::string checkpoint = fspath(checkpoint_in);
        py::gil_scoped_release release;
        taskmoe::checkpoint_options copts;
        copts.check_finite = false;  // listing reads no weights
        const taskmoe::checkpoint ck(checkpoint, copts);
        return ck.tasks();
      },
      py::arg("checkpoint"), "The tasks of a full multi-task checkpoint directory.");

  m.def(
      "convert",
      [](const py::object& checkpoint_in, const std::string& task, const py::object& output_in,
         const std::string& quantization, const std::optional<std::string>& embeddings, bool overwrite,
         const std::optional<py::object>& vocabulary_map) {
        const std::string checkpoint = fspath(checkpoint_in), output = fspath(output_in);
        taskmoe::convert_options co;
        co.quantization = taskmoe::parse_quantization(quantization);
        if (embeddings) {
          if (co.quantization != taskmoe::quantization_scheme::int8)
            throw taskmoe::invalid_argument_error("embeddings applies to quantization='int8' only");
          co.embeddings = taskmoe::parse_embedding_precision(*embeddings);
        }
        co.overwrite = overwrite;
        if (vocabulary_map) co.vocabulary_map = fspath(*vocabulary_map);
        // Ctrl-C abandons the conversion between tensors (nothing is left behind): the progress
        // callback checks for signals with the GIL held and throws out of convert_task.
        struct interrupted {};
        co.progress = [](const taskmoe::convert_progress&) {
          py::gil_scoped_acquire acquire;
          if (PyErr_CheckSignals() != 0) throw interrupted{};
        };
        py::dict info;
        try {
          taskmoe::convert_result r;
          {
            py::gil_scoped_release release;
            taskmoe::checkpoint_options copts;
            copts.check_finite = false;  // the converter checks every value it reads, naming the tensor
            const taskmoe::checkpoint ck(checkpoint, copts);
            r = taskmoe::convert_task(ck, task, co, output);
          }
          info["path"] = r.path.string();
          info["file_size"] = r.file_size;
          info["tensor_count"] = r.tensor_count;
          info["seconds"] = r.seconds;
        } catch (const interrupted&) {
          throw py::error_already_set();  // the KeyboardInterrupt PyErr_CheckSignals set
        }
        return info;
      },
      py::arg("checkpoint"), py::arg("task"), py::arg("output"), py::kw_only(), py::arg("quantization") = "int8",
      py::arg("embeddings") = py::none(), py::arg("overwrite") = false, py::arg("vocabulary_map") = py::none(),
      "Extracts one task of a checkpoint into a .tmoe file (as taskmoe-convert --task). "
      "embeddings (int8 only): 'float16' (default), 'int8' or 'float32' token embeddings. "
      "vocabulary_map: a target shortlist (vmap.txt) to embed in the file. Returns "
      "{'path', 'file_size', 'tensor_count', 'seconds'}.");

  m.def(
      "verify",
      [](const py::object& checkpoint_in, const std::string& task, const py::object& tmoe_in, int probes,
         std::optional<std::vector<std::string>> texts, int max_steps) {
        const std::string checkpoint = fspath(checkpoint_in), tmoe = fspath(tmoe_in);
        taskmoe::verify_options vo;
        vo.probes = probes;
        if (texts) vo.texts = *texts;
        vo.max_steps = max_steps;
        taskmoe::verify_result r;
        {
          py::gil_scoped_release release;
          r = taskmoe::verify_task(checkpoint, task, tmoe, vo);
        }
        py::dict info;
        info["probes"] = r.probes;
        info["identical"] = r.identical;
        info["max_abs_logit_diff"] = r.max_abs_logit_diff;
        return info;
      },
      py::arg("checkpoint"), py::arg("task"), py::arg("tmoe"), py::kw_only(), py::arg("probes") = 16,
      py::arg("texts") = py::none(), py::arg("max_steps") = 48,
      "taskmoe-convert --verify: the extracted file against the full checkpoint on probe sentences "
      "(generated, or `texts`). Returns {'probes', 'identical', 'max_abs_logit_diff'}; a float32 "
      "extraction has identical == probes.");
}
