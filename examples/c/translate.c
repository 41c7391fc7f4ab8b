/* The C API in a complete program: translate stdin line by line with a .tmoe model.
 *
 *   taskmoe-c-translate MODEL.tmoe [BEAM] < input.txt > output.txt
 *
 * One translation per input line, in order (lines are read in batches of 32). Errors go to
 * stderr with the library's message; the exit status is 1 then. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <taskmoe.h>

#define BATCH 32

static int flush_batch(const taskmoe_translator* t, const taskmoe_translation_options* o, char** lines,
                       size_t n) {
  taskmoe_result* results = NULL;
  size_t i;
  if (n == 0) return 0;
  if (taskmoe_translate_batch(t, (const char* const*)lines, n, o, &results) != TASKMOE_OK) {
    fprintf(stderr, "taskmoe-c-translate: error: %s\n", taskmoe_last_error());
    return 1;
  }
  for (i = 0; i < n; ++i) printf("%s\n", results[i].hypotheses[0].text);
  taskmoe_results_free(results, n);
  return 0;
}

int main(int argc, char** argv) {
  taskmoe_translator* t = NULL;
  taskmoe_translation_options o = taskmoe_translation_default_options();
  char* lines[BATCH];
  size_t n = 0, i;
  int failed = 0;
  char* buf = NULL;
  size_t cap = 0;
  ssize_t len;

  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s MODEL.tmoe [BEAM] < input.txt\n", argv[0]);
    return 2;
  }
  if (argc == 3) o.beam_size = atoi(argv[2]);
  if (taskmoe_translator_open(argv[1], NULL, &t) != TASKMOE_OK) {
    fprintf(stderr, "taskmoe-c-translate: error: %s\n", taskmoe_last_error());
    return 1;
  }
  fprintf(stderr, "taskmoe %s, task %s (%s -> %s)\n", taskmoe_version(), taskmoe_translator_task(t),
          taskmoe_translator_source_language(t), taskmoe_translator_target_language(t));
  while (!failed && (len = getline(&buf, &cap, stdin)) >= 0) {
    if (len > 0 && buf[len - 1] == '\n') buf[--len] = '\0';
    if (len > 0 && buf[len - 1] == '\r') buf[--len] = '\0';
    lines[n] = malloc((size_t)len + 1);
    if (!lines[n]) {
      fprintf(stderr, "taskmoe-c-translate: error: out of memory\n");
      failed = 1;
      break;
    }
    memcpy(lines[n], buf, (size_t)len + 1);
    if (++n == BATCH) {
      failed = flush_batch(t, &o, lines, n);
      for (i = 0; i < n; ++i) free(lines[i]);
      n = 0;
    }
  }
  if (!failed) failed = flush_batch(t, &o, lines, n);
  for (i = 0; i < n; ++i) free(lines[i]);
  free(buf);
  taskmoe_translator_close(t);
  return failed;
}
