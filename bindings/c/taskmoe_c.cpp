// The C API (include/taskmoe.h) over the C++ runtime. Every entry point catches everything: the
// library's exception classes become status codes, their what() the thread's last error.

#include <taskmoe.h>

#include <cstdlib>    // std::malloc, std::free
#include <cstring>    // std::memcpy
#include <exception>  // std::exception
#include <new>        // std::bad_alloc
#include <string>     // std::string
#include <vector>     // std::vector

#include <taskmoe/error.hpp>
#include <taskmoe/translator.hpp>
#include <taskmoe/version.hpp>

struct taskmoe_translator {
  taskmoe::translator impl;
};

namespace {

thread_local std::string last_error;

taskmoe_status fail(taskmoe_status s, const char* message) {
  try {
    last_error = message;
  } catch (...) {
    // No memory even for the message: the status still says what happened.
  }
  return s;
}

// Runs f, mapping every exception to a status (most specific class first).
template <class F>
taskmoe_status guarded(F&& f) noexcept {
  try {
    f();
    return TASKMOE_OK;
  } catch (const taskmoe::invalid_argument_error& e) {
    return fail(TASKMOE_ERROR_INVALID_ARGUMENT, e.what());
  } catch (const taskmoe::format_error& e) {
    return fail(TASKMOE_ERROR_FORMAT, e.what());
  } catch (const taskmoe::config_error& e) {
    return fail(TASKMOE_ERROR_FORMAT, e.what());
  } catch (const taskmoe::io_error& e) {
    return fail(TASKMOE_ERROR_IO, e.what());
  } catch (const std::bad_alloc&) {
    return fail(TASKMOE_ERROR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(TASKMOE_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(TASKMOE_ERROR_INTERNAL, "unknown exception");
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw taskmoe::invalid_argument_error(what);
}

taskmoe::translator_options to_cpp(const taskmoe_translator_options* o) {
  const taskmoe_translator_options d = o ? *o : taskmoe_translator_default_options();
  taskmoe::translator_options r;
  r.threads = d.threads;
  r.verify_checksums = d.verify_checksums != 0;
  if (d.expected_task) r.expected_task = d.expected_task;
  r.use_mmap = d.use_mmap != 0;
  if (d.vocabulary_map) r.vocabulary_map = d.vocabulary_map;
  return r;
}

taskmoe::translation_options to_cpp(const taskmoe_translation_options* o) {
  const taskmoe_translation_options d = o ? *o : taskmoe_translation_default_options();
  taskmoe::translation_options r;
  r.beam_size = d.beam_size;
  r.num_hypotheses = d.num_hypotheses;
  r.length_penalty = d.length_penalty;
  r.max_decoding_length = d.max_decoding_length;
  r.min_decoding_length = d.min_decoding_length;
  r.sampling_topk = d.sampling_topk;
  r.sampling_topp = d.sampling_topp;
  r.sampling_temperature = d.sampling_temperature;
  r.seed = d.seed;
  r.repetition_penalty = d.repetition_penalty;
  r.no_repeat_ngram_size = d.no_repeat_ngram_size;
  r.return_scores = d.return_scores != 0;
  if (d.target_prefix) r.target_prefix = d.target_prefix;
  r.max_batch_size = d.max_batch_size;
  r.max_input_length = d.max_input_length;
  r.truncate_input = d.truncate_input != 0;
  r.use_vocabulary_map = d.use_vocabulary_map != 0;
  return r;
}

// Results are malloc'ed plain C memory, so any C code can read them and taskmoe_results_free
// releases them without knowing C++ containers; calloc zeroes what is not filled yet, so a
// partial result after bad_alloc is freed safely.
void* checked_calloc(std::size_t n, std::size_t size) {
  if (n == 0) return nullptr;
  void* p = std::calloc(n, size);
  if (!p) throw std::bad_alloc();
  return p;
}

void fill(taskmoe_hypothesis& out, const taskmoe::translation_hypothesis& h) {
  out.text = static_cast<char*>(checked_calloc(h.text.size() + 1, 1));
  std::memcpy(out.text, h.text.data(), h.text.size());
  out.tokens = static_cast<int*>(checked_calloc(h.tokens.size(), sizeof(int)));
  if (!h.tokens.empty()) std::memcpy(out.tokens, h.tokens.data(), h.tokens.size() * sizeof(int));
  out.num_tokens = h.tokens.size();
  out.score = h.score;
  out.normalized_score = h.normalized_score;
}

// Copies C++ results into one malloc'ed array; on failure frees what was made and returns NULL
// through the status (the caller owns nothing then).
template <class Run>
taskmoe_status translate_into(taskmoe_result** results, size_t count, Run&& run) {
  if (results) *results = nullptr;
  taskmoe_result* out = nullptr;
  const taskmoe_status s = guarded([&] {
    require(results != nullptr, "taskmoe_translate: results is NULL");
    const std::vector<taskmoe::translation_result> r = run();
    out = static_cast<taskmoe_result*>(checked_calloc(count, sizeof(taskmoe_result)));
    for (size_t i = 0; i < count; ++i) {
      out[i].truncated = r[i].truncated ? 1 : 0;
      out[i].hypotheses =
          static_cast<taskmoe_hypothesis*>(checked_calloc(r[i].hypotheses.size(), sizeof(taskmoe_hypothesis)));
      out[i].num_hypotheses = r[i].hypotheses.size();
      for (size_t h = 0; h < r[i].hypotheses.size(); ++h) fill(out[i].hypotheses[h], r[i].hypotheses[h]);
    }
  });
  if (s != TASKMOE_OK) {
    taskmoe_results_free(out, out ? count : 0);
    return s;
  }
  *results = out;
  return s;
}

}  // namespace

extern "C" {

taskmoe_translator_options taskmoe_translator_default_options(void) {
  const taskmoe::translator_options d;
  taskmoe_translator_options o;
  o.threads = d.threads;
  o.verify_checksums = d.verify_checksums ? 1 : 0;
  o.expected_task = nullptr;
  o.use_mmap = d.use_mmap ? 1 : 0;
  o.vocabulary_map = nullptr;
  return o;
}

taskmoe_translation_options taskmoe_translation_default_options(void) {
  const taskmoe::translation_options d;  // one source of defaults: the C++ struct's
  taskmoe_translation_options o;
  o.beam_size = d.beam_size;
  o.num_hypotheses = d.num_hypotheses;
  o.length_penalty = d.length_penalty;
  o.max_decoding_length = d.max_decoding_length;
  o.min_decoding_length = d.min_decoding_length;
  o.sampling_topk = d.sampling_topk;
  o.sampling_topp = d.sampling_topp;
  o.sampling_temperature = d.sampling_temperature;
  o.seed = d.seed;
  o.repetition_penalty = d.repetition_penalty;
  o.no_repeat_ngram_size = d.no_repeat_ngram_size;
  o.return_scores = d.return_scores ? 1 : 0;
  o.target_prefix = nullptr;
  o.max_batch_size = d.max_batch_size;
  o.max_input_length = d.max_input_length;
  o.truncate_input = d.truncate_input ? 1 : 0;
  o.use_vocabulary_map = d.use_vocabulary_map ? 1 : 0;
  return o;
}

taskmoe_status taskmoe_translator_open(const char* path, const taskmoe_translator_options* options,
                                       taskmoe_translator** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(path != nullptr, "taskmoe_translator_open: path is NULL");
    require(out != nullptr, "taskmoe_translator_open: out is NULL");
    *out = new taskmoe_translator{taskmoe::translator(path, to_cpp(options))};
  });
}

taskmoe_status taskmoe_translator_open_checkpoint(const char* dir, const char* task,
                                                  const taskmoe_translator_options* options,
                                                  taskmoe_translator** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(dir != nullptr && task != nullptr, "taskmoe_translator_open_checkpoint: dir or task is NULL");
    require(out != nullptr, "taskmoe_translator_open_checkpoint: out is NULL");
    taskmoe::translator_options o = to_cpp(options);
    o.expected_task.clear();
    *out = new taskmoe_translator{taskmoe::translator::from_checkpoint(dir, task, o)};
  });
}

void taskmoe_translator_close(taskmoe_translator* translator) { delete translator; }

taskmoe_status taskmoe_translate_batch(const taskmoe_translator* translator, const char* const* texts,
                                       size_t count, const taskmoe_translation_options* options,
                                       taskmoe_result** results) {
  return translate_into(results, count, [&] {
    require(translator != nullptr, "taskmoe_translate_batch: translator is NULL");
    require(count == 0 || texts != nullptr, "taskmoe_translate_batch: texts is NULL");
    std::vector<std::string> in;
    in.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      if (!texts[i]) throw taskmoe::invalid_argument_error("taskmoe_translate_batch: texts[" + std::to_string(i) + "] is NULL");
      in.emplace_back(texts[i]);
    }
    return translator->impl.translate_batch(in, to_cpp(options));
  });
}

taskmoe_status taskmoe_translate_tokens(const taskmoe_translator* translator, const int* const* pieces,
                                        const size_t* lengths, size_t count,
                                        const taskmoe_translation_options* options, taskmoe_result** results) {
  return translate_into(results, count, [&] {
    require(translator != nullptr, "taskmoe_translate_tokens: translator is NULL");
    require(count == 0 || (pieces != nullptr && lengths != nullptr), "taskmoe_translate_tokens: pieces or lengths is NULL");
    std::vector<std::vector<int>> in(count);
    for (size_t i = 0; i < count; ++i) {
      if (lengths[i] > 0 && !pieces[i])
        throw taskmoe::invalid_argument_error("taskmoe_translate_tokens: pieces[" + std::to_string(i) + "] is NULL");
      if (lengths[i] > 0) in[i].assign(pieces[i], pieces[i] + lengths[i]);
    }
    taskmoe::translation_options o = to_cpp(options);
    o.target_prefix.clear();
    return translator->impl.translate_tokens(in, o);
  });
}

void taskmoe_results_free(taskmoe_result* results, size_t count) {
  if (!results) return;
  for (size_t i = 0; i < count; ++i) {
    for (size_t h = 0; h < results[i].num_hypotheses; ++h) {
      std::free(results[i].hypotheses[h].text);
      std::free(results[i].hypotheses[h].tokens);
    }
    std::free(results[i].hypotheses);
  }
  std::free(results);
}

const char* taskmoe_translator_task(const taskmoe_translator* translator) {
  return translator ? translator->impl.task().name.c_str() : nullptr;
}
const char* taskmoe_translator_source_language(const taskmoe_translator* translator) {
  return translator ? translator->impl.task().source.c_str() : nullptr;
}
const char* taskmoe_translator_target_language(const taskmoe_translator* translator) {
  return translator ? translator->impl.task().target.c_str() : nullptr;
}
int taskmoe_translator_has_vocabulary_map(const taskmoe_translator* translator) {
  return translator && translator->impl.has_vocabulary_map() ? 1 : 0;
}

const char* taskmoe_version(void) { return TASKMOE_VERSION_STRING; }
int taskmoe_version_major(void) { return TASKMOE_VERSION_MAJOR; }
int taskmoe_version_minor(void) { return TASKMOE_VERSION_MINOR; }
int taskmoe_version_patch(void) { return TASKMOE_VERSION_PATCH; }

const char* taskmoe_last_error(void) { return last_error.c_str(); }

const char* taskmoe_status_name(taskmoe_status status) {
  switch (status) {
    case TASKMOE_OK: return "TASKMOE_OK";
    case TASKMOE_ERROR_INVALID_ARGUMENT: return "TASKMOE_ERROR_INVALID_ARGUMENT";
    case TASKMOE_ERROR_FORMAT: return "TASKMOE_ERROR_FORMAT";
    case TASKMOE_ERROR_IO: return "TASKMOE_ERROR_IO";
    case TASKMOE_ERROR_OUT_OF_MEMORY: return "TASKMOE_ERROR_OUT_OF_MEMORY";
    case TASKMOE_ERROR_INTERNAL: return "TASKMOE_ERROR_INTERNAL";
  }
  return "TASKMOE_ERROR_UNKNOWN";
}

}  // extern "C"
