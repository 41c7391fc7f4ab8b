/* The C API, compiled by a C compiler: defaults, results, errors and their codes, threads.
 * usage: test_c_api FIXTURE_CHECKPOINT_DIR  (tests/data/fixtures/task_target)
 * Exit status 0 when every check passed; each failure is printed with its line. */
#define _POSIX_C_SOURCE 200809L
#include <taskmoe.h> /* first: the header compiles on its own in C */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                             \
    }                                                                         \
  } while (0)

static const char* const TEXTS[] = {"Open file", "Save the current document under a new name", "", "Error",
                                    "Die Datei konnte nicht geöffnet werden."};
#define NTEXTS (sizeof TEXTS / sizeof TEXTS[0])

static int same_results(const taskmoe_result* a, const taskmoe_result* b, size_t n) {
  size_t i, h;
  for (i = 0; i < n; ++i) {
    if (a[i].num_hypotheses != b[i].num_hypotheses) return 0;
    for (h = 0; h < a[i].num_hypotheses; ++h) {
      const taskmoe_hypothesis* x = &a[i].hypotheses[h];
      const taskmoe_hypothesis* y = &b[i].hypotheses[h];
      if (strcmp(x->text, y->text) != 0 || x->num_tokens != y->num_tokens) return 0;
      if (x->num_tokens && memcmp(x->tokens, y->tokens, x->num_tokens * sizeof(int)) != 0) return 0;
      if (x->score != y->score) return 0;
    }
  }
  return 1;
}

struct job {
  const taskmoe_translator* t;
  taskmoe_result* results;
  taskmoe_status status;
};

static void* run_job(void* arg) {
  struct job* j = (struct job*)arg;
  taskmoe_translation_options o = taskmoe_translation_default_options();
  o.beam_size = 3;
  o.max_decoding_length = 12;
  j->status = taskmoe_translate_batch(j->t, TEXTS, NTEXTS, &o, &j->results);
  return NULL;
}

static void* fail_in_thread(void* arg) {
  taskmoe_translator* t = NULL;
  (void)arg;
  taskmoe_translator_open("/nonexistent/other-thread.tmoe", NULL, &t);
  return NULL;
}

int main(int argc, char** argv) {
  taskmoe_translator* t = NULL;
  taskmoe_translation_options o = taskmoe_translation_default_options();
  taskmoe_translator_options to = taskmoe_translator_default_options();
  taskmoe_result* r = NULL;
  taskmoe_result* again = NULL;
  char version[64];
  size_t i, h;

  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURE_CHECKPOINT_DIR\n", argv[0]);
    return 2;
  }

  /* Defaults are the C++ structs' (docs/runtime.md). */
  CHECK(o.beam_size == 2 && o.num_hypotheses == 1 && o.length_penalty == 1.0f);
  CHECK(o.max_decoding_length == 256 && o.sampling_topk == 1 && o.return_scores == 1);
  CHECK(o.target_prefix == NULL && o.max_batch_size == 0 && o.truncate_input == 1);
  CHECK(to.threads == 1 && to.verify_checksums == 1 && to.use_mmap == 1 && to.expected_task == NULL);
  CHECK(to.vocabulary_map == NULL && o.use_vocabulary_map == 0);
  snprintf(version, sizeof version, "%d.%d.%d", taskmoe_version_major(), taskmoe_version_minor(),
           taskmoe_version_patch());
  CHECK(strcmp(version, taskmoe_version()) == 0);
  CHECK(strcmp(taskmoe_last_error(), "") == 0);

  /* Errors: codes and the library's messages; *out is NULL after a failure. */
  t = (taskmoe_translator*)&o; /* garbage that must be overwritten */
  CHECK(taskmoe_translator_open("/nonexistent/model.tmoe", NULL, &t) == TASKMOE_ERROR_IO);
  CHECK(t == NULL);
  CHECK(strstr(taskmoe_last_error(), "/nonexistent/model.tmoe") != NULL);
  CHECK(taskmoe_translator_open(NULL, NULL, &t) == TASKMOE_ERROR_INVALID_ARGUMENT);
  CHECK(taskmoe_translator_open_checkpoint(argv[1], "xx-yy", NULL, &t) != TASKMOE_OK);
  CHECK(strstr(taskmoe_last_error(), "xx-yy") != NULL);
  CHECK(taskmoe_translator_open_checkpoint(argv[1], NULL, NULL, &t) == TASKMOE_ERROR_INVALID_ARGUMENT);
  CHECK(taskmoe_translator_open_checkpoint(argv[0], "en-de", NULL, &t) == TASKMOE_ERROR_FORMAT);
  to.threads = 0;
  CHECK(taskmoe_translator_open_checkpoint(argv[1], "en-de", &to, &t) == TASKMOE_ERROR_INVALID_ARGUMENT);
  CHECK(strcmp(taskmoe_last_error(), "translator_options.threads must be >= 1") == 0);
  CHECK(strcmp(taskmoe_status_name(TASKMOE_ERROR_IO), "TASKMOE_ERROR_IO") == 0);

  to.threads = 2;
  if (taskmoe_translator_open_checkpoint(argv[1], "en-de", &to, &t) != TASKMOE_OK) {
    fprintf(stderr, "cannot open the fixture: %s\n", taskmoe_last_error());
    return 1;
  }
  CHECK(strcmp(taskmoe_translator_task(t), "en-de") == 0);
  CHECK(strcmp(taskmoe_translator_source_language(t), "en") == 0);
  CHECK(strcmp(taskmoe_translator_target_language(t), "de") == 0);
  CHECK(taskmoe_translator_task(NULL) == NULL);

  /* Results: n-best sorted by normalized score, consistent with the score; blank input empty. */
  o.beam_size = 4;
  o.num_hypotheses = 3;
  o.max_decoding_length = 12;
  CHECK(taskmoe_translate_batch(t, TEXTS, NTEXTS, &o, &r) == TASKMOE_OK);
  CHECK(r != NULL);
  for (i = 0; r && i < NTEXTS; ++i) {
    if (TEXTS[i][0] == '\0') {
      CHECK(r[i].num_hypotheses == 1 && r[i].hypotheses[0].num_tokens == 0 && r[i].hypotheses[0].text[0] == 0);
      continue;
    }
    CHECK(r[i].num_hypotheses == 3);
    CHECK(!r[i].truncated);
    for (h = 0; h < r[i].num_hypotheses; ++h) {
      const taskmoe_hypothesis* x = &r[i].hypotheses[h];
      CHECK(x->num_tokens > 0 && x->num_tokens <= 12);
      CHECK(x->score < 0);
      if (h > 0) CHECK(x->normalized_score <= r[i].hypotheses[h - 1].normalized_score);
    }
  }
  /* The token API gives the same hypotheses as the text API for the same pieces. */
  {
    const int* pieces[NTEXTS];
    size_t lengths[NTEXTS];
    taskmoe_result* by_tokens = NULL;
    for (i = 0; i < NTEXTS; ++i) {
      /* The greedy output of input i, fed back as a source: pieces we have without a tokenizer. */
      pieces[i] = r[i].hypotheses[0].tokens;
      lengths[i] = r[i].hypotheses[0].num_tokens;
    }
    CHECK(taskmoe_translate_tokens(t, pieces, lengths, NTEXTS, &o, &by_tokens) == TASKMOE_OK);
    CHECK(by_tokens != NULL && by_tokens[2].hypotheses[0].num_tokens == 0);
    taskmoe_results_free(by_tokens, NTEXTS);
    lengths[0] = 1;
    {
      const int bad = 1 << 30;
      pieces[0] = &bad;
      CHECK(taskmoe_translate_tokens(t, pieces, lengths, 1, &o, &by_tokens) == TASKMOE_ERROR_INVALID_ARGUMENT);
      CHECK(by_tokens == NULL && strstr(taskmoe_last_error(), "outside the vocabulary") != NULL);
    }
  }

  /* Bad options and input: error codes, library messages, no results to free. */
  o.beam_size = 0;
  CHECK(taskmoe_translate_batch(t, TEXTS, NTEXTS, &o, &again) == TASKMOE_ERROR_INVALID_ARGUMENT);
  CHECK(again == NULL);
  CHECK(strcmp(taskmoe_last_error(), "beam_size must be >= 1, got 0") == 0);
  {
    const char* bad_utf8[] = {"fine", "\xff\xfe"};
    CHECK(taskmoe_translate_batch(t, bad_utf8, 2, NULL, &again) == TASKMOE_ERROR_INVALID_ARGUMENT);
    CHECK(strcmp(taskmoe_last_error(), "input 1: invalid UTF-8 at byte 0") == 0);
    bad_utf8[1] = NULL;
    CHECK(taskmoe_translate_batch(t, bad_utf8, 2, NULL, &again) == TASKMOE_ERROR_INVALID_ARGUMENT);
  }
  CHECK(taskmoe_translate_batch(NULL, TEXTS, NTEXTS, NULL, &again) == TASKMOE_ERROR_INVALID_ARGUMENT);
  CHECK(taskmoe_translate_batch(t, NULL, 0, NULL, &again) == TASKMOE_OK && again == NULL);

  /* A vocabulary map: refused without one; with a map whose pieces are all unknown only the
   * specials remain candidates (<unk> = 1, <s> = 2; </s> is removed from the tokens). */
  CHECK(taskmoe_translator_has_vocabulary_map(t) == 0 && taskmoe_translator_has_vocabulary_map(NULL) == 0);
  o = taskmoe_translation_default_options();
  o.max_decoding_length = 12;
  o.use_vocabulary_map = 1;
  CHECK(taskmoe_translate_batch(t, TEXTS, NTEXTS, &o, &again) == TASKMOE_ERROR_INVALID_ARGUMENT);
  CHECK(again == NULL && strstr(taskmoe_last_error(), "no vocabulary map") != NULL);
  {
    char path[] = "/tmp/taskmoe-c-vmap-XXXXXX";
    const int fd = mkstemp(path);
    FILE* f = fd >= 0 ? fdopen(fd, "w") : NULL;
    taskmoe_translator* shortlisted = NULL;
    taskmoe_translator_options mo = taskmoe_translator_default_options();
    CHECK(f != NULL);
    if (f) {
      fputs("\tno_such_piece\n", f);
      fclose(f);
      mo.vocabulary_map = "/nonexistent/map.txt";
      CHECK(taskmoe_translator_open_checkpoint(argv[1], "en-de", &mo, &shortlisted) == TASKMOE_ERROR_IO);
      mo.vocabulary_map = path;
      CHECK(taskmoe_translator_open_checkpoint(argv[1], "en-de", &mo, &shortlisted) == TASKMOE_OK);
      CHECK(taskmoe_translator_has_vocabulary_map(shortlisted) == 1);
      CHECK(taskmoe_translate_batch(shortlisted, TEXTS, NTEXTS, &o, &again) == TASKMOE_OK);
      for (i = 0; again && i < NTEXTS; ++i)
        for (h = 0; h < again[i].hypotheses[0].num_tokens; ++h)
          CHECK(again[i].hypotheses[0].tokens[h] == 1 || again[i].hypotheses[0].tokens[h] == 2);
      taskmoe_results_free(again, NTEXTS);
      again = NULL;
      taskmoe_translator_close(shortlisted);
      remove(path);
    }
  }

  /* Last error is per thread: a failure elsewhere does not overwrite ours. */
  {
    pthread_t th;
    pthread_create(&th, NULL, fail_in_thread, NULL);
    pthread_join(th, NULL);
    CHECK(strstr(taskmoe_last_error(), "other-thread") == NULL);
  }

  /* Two threads on one translator at once get what one thread gets. */
  {
    struct job a = {t, NULL, TASKMOE_OK}, b = {t, NULL, TASKMOE_OK}, alone = {t, NULL, TASKMOE_OK};
    pthread_t ta, tb;
    run_job(&alone);
    pthread_create(&ta, NULL, run_job, &a);
    pthread_create(&tb, NULL, run_job, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(alone.status == TASKMOE_OK && a.status == TASKMOE_OK && b.status == TASKMOE_OK);
    CHECK(same_results(alone.results, a.results, NTEXTS) && same_results(alone.results, b.results, NTEXTS));
    taskmoe_results_free(alone.results, NTEXTS);
    taskmoe_results_free(a.results, NTEXTS);
    taskmoe_results_free(b.results, NTEXTS);
  }

  taskmoe_results_free(r, NTEXTS);
  taskmoe_results_free(NULL, 3);
  taskmoe_translator_close(t);
  taskmoe_translator_close(NULL);
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  else printf("test_c_api: all checks passed\n");
  return failures ? 1 : 0;
}
