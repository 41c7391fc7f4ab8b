/* taskmoe.h: the C API of taskmoe (docs/c-api.md).
 *
 * For applications in C and for other languages' foreign-function interfaces. Implemented by a
 * small compiled shim over the C++ runtime (bindings/c/taskmoe_c.cpp, library taskmoe_c): C
 * cannot compile the header-only C++ library, so the C entry points live in one C++ translation
 * unit. No C++ exception crosses this boundary; every fallible call returns a taskmoe_status
 * and leaves a message for taskmoe_last_error().
 *
 *   taskmoe_translator* t = NULL;
 *   if (taskmoe_translator_open("en-de.tmoe", NULL, &t) != TASKMOE_OK) {
 *     fprintf(stderr, "%s\n", taskmoe_last_error());
 *     return 1;
 *   }
 *   const char* texts[] = {"Open the file."};
 *   taskmoe_result* results = NULL;
 *   if (taskmoe_translate_batch(t, texts, 1, NULL, &results) == TASKMOE_OK) {
 *     printf("%s\n", results[0].hypotheses[0].text);
 *     taskmoe_results_free(results, 1);
 *   }
 *   taskmoe_translator_close(t);
 *
 * Strings are UTF-8 and NUL-terminated. Threads: a translator may be used by any number of
 * threads at once (it is immutable); taskmoe_last_error() is per thread. ABI: the option structs
 * are passed by pointer and filled by the *_default_options() functions; their layout may change
 * between minor versions (the library's SameMinorVersion rule), so rebuild against the header.
 */
#ifndef TASKMOE_H
#define TASKMOE_H

#include <stddef.h> /* size_t */
#include <stdint.h> /* uint64_t */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TASKMOE_C_API __attribute__((visibility("default")))
#else
#define TASKMOE_C_API
#endif

/* Status codes: 0 success, each C++ exception class of the library one code. */
typedef enum taskmoe_status {
  TASKMOE_OK = 0,
  TASKMOE_ERROR_INVALID_ARGUMENT = 1, /* bad option, invalid UTF-8, unknown task, NULL pointer */
  TASKMOE_ERROR_FORMAT = 2,           /* malformed model file (.tmoe, checkpoint, config) */
  TASKMOE_ERROR_IO = 3,               /* the OS refused a file operation (missing file, ...) */
  TASKMOE_ERROR_OUT_OF_MEMORY = 4,
  TASKMOE_ERROR_INTERNAL = 5          /* any other failure (a bug: please report it) */
} taskmoe_status;

/* Opaque handle: one model for one task. */
typedef struct taskmoe_translator taskmoe_translator;

/* translator_options of the C++ API. */
typedef struct taskmoe_translator_options {
  int threads;                /* worker threads per call (default 1) */
  int verify_checksums;       /* nonzero: check every tensor's CRC when opening (default 1) */
  const char* expected_task;  /* non-NULL: fail unless the file holds this task (default NULL) */
  int use_mmap;               /* nonzero: map the file (default 1); 0: read it into memory */
  const char* vocabulary_map; /* a shortlist file (CTranslate2's vmap.txt format), or NULL (default):
                                 the file's embedded map, if any */
} taskmoe_translator_options;

/* translation_options of the C++ API (CTranslate2's names). */
typedef struct taskmoe_translation_options {
  int beam_size;              /* default 2; 1 = greedy */
  int num_hypotheses;         /* default 1, at most beam_size */
  float length_penalty;       /* default 1 */
  int max_decoding_length;    /* default 256 */
  int min_decoding_length;    /* default 0 */
  int sampling_topk;          /* default 1 (no sampling); 0 = whole distribution; needs beam 1 */
  float sampling_topp;        /* default 1 */
  float sampling_temperature; /* default 1 */
  uint64_t seed;              /* default 0 = random */
  float repetition_penalty;   /* default 1 */
  int no_repeat_ngram_size;   /* default 0 */
  int return_scores;          /* default 1 */
  const char* target_prefix;  /* forced start of every translation, or NULL (default) */
  size_t max_batch_size;      /* examples per sub-batch, 0 = no limit (default) */
  size_t max_input_length;    /* source pieces kept, 0 = what the model allows (default) */
  int truncate_input;         /* default 1; 0: longer inputs are an error */
  int use_vocabulary_map;     /* default 0; nonzero: score only the shortlist's candidates
                                 (needs a map: taskmoe_translator_has_vocabulary_map) */
} taskmoe_translation_options;

typedef struct taskmoe_hypothesis {
  char* text;              /* UTF-8, NUL-terminated */
  int* tokens;             /* target piece ids, EOS removed */
  size_t num_tokens;
  float score;             /* sum of log-probabilities */
  float normalized_score;  /* score / (tokens + EOS)^length_penalty */
} taskmoe_hypothesis;

typedef struct taskmoe_result {
  taskmoe_hypothesis* hypotheses; /* best first */
  size_t num_hypotheses;
  int truncated;                  /* the input was cut to max_input_length pieces */
} taskmoe_result;

TASKMOE_C_API taskmoe_translator_options taskmoe_translator_default_options(void);
TASKMOE_C_API taskmoe_translation_options taskmoe_translation_default_options(void);

/* Opens a .tmoe file. options may be NULL (defaults). On success *out is a new handle; on
 * failure *out is set to NULL. */
TASKMOE_C_API taskmoe_status taskmoe_translator_open(const char* path, const taskmoe_translator_options* options,
                                                     taskmoe_translator** out);
/* One task of a full multi-task checkpoint directory. expected_task of options is ignored. */
TASKMOE_C_API taskmoe_status taskmoe_translator_open_checkpoint(const char* dir, const char* task,
                                                                const taskmoe_translator_options* options,
                                                                taskmoe_translator** out);
/* Frees the handle; NULL is allowed. No call on it may be running. */
TASKMOE_C_API void taskmoe_translator_close(taskmoe_translator* translator);

/* Translates texts[0..count). options may be NULL (defaults). On success *results is an array of
 * count results (free it with taskmoe_results_free); on failure it is NULL and nothing needs
 * freeing. count 0 succeeds with *results NULL. */
TASKMOE_C_API taskmoe_status taskmoe_translate_batch(const taskmoe_translator* translator, const char* const* texts,
                                                     size_t count, const taskmoe_translation_options* options,
                                                     taskmoe_result** results);
/* Token API: pieces[i] holds lengths[i] SentencePiece ids of input i (no tag, no </s>), as the
 * C++ translate_tokens. Works without SentencePiece (then hypothesis texts are empty);
 * options->target_prefix is ignored here. */
TASKMOE_C_API taskmoe_status taskmoe_translate_tokens(const taskmoe_translator* translator, const int* const* pieces,
                                                      const size_t* lengths, size_t count,
                                                      const taskmoe_translation_options* options,
                                                      taskmoe_result** results);
TASKMOE_C_API void taskmoe_results_free(taskmoe_result* results, size_t count);

/* Task of the translator: name ("en-de"), source and target language. The strings belong to the
 * translator and live as long as it. NULL if translator is NULL. */
TASKMOE_C_API const char* taskmoe_translator_task(const taskmoe_translator* translator);
TASKMOE_C_API const char* taskmoe_translator_source_language(const taskmoe_translator* translator);
TASKMOE_C_API const char* taskmoe_translator_target_language(const taskmoe_translator* translator);
/* 1 when the translator has a vocabulary map (options->vocabulary_map, or one embedded in the
 * file), 0 otherwise or for NULL. */
TASKMOE_C_API int taskmoe_translator_has_vocabulary_map(const taskmoe_translator* translator);

/* The library's version ("0.1.0") and its parts (from include/taskmoe/version.hpp). */
TASKMOE_C_API const char* taskmoe_version(void);
TASKMOE_C_API int taskmoe_version_major(void);
TASKMOE_C_API int taskmoe_version_minor(void);
TASKMOE_C_API int taskmoe_version_patch(void);

/* The message of the last failed call in this thread ("" if none); valid until the next failing
 * call in the same thread. */
TASKMOE_C_API const char* taskmoe_last_error(void);
/* A constant name for a status code ("TASKMOE_ERROR_IO"). */
TASKMOE_C_API const char* taskmoe_status_name(taskmoe_status status);

#ifdef __cplusplus
}
#endif

#endif /* TASKMOE_H */
