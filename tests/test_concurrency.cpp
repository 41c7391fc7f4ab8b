// Concurrency: many threads on one translator with mixed decoding options, several translators on
// one file, translators opened and closed while others translate. Every result must equal the
// serial run. scripts/test.sh runs this file under ThreadSanitizer as well (the tsan leg).

#include <atomic>
#include <string>
#include <thread>
#include <vector>


#include "test_model_support.hpp"

using namespace taskmoe;
using taskmoe_test::fixture_dir;

namespace {

constexpr int n_threads = 10;  // the issue asks for 8+

// One job: a batch and the options to translate it with.
struct job {
  std::vector<std::vector<int>> sources;
  translation_options options;
};

std::vector<job> mixed_jobs() {
  const std::vector<std::vector<int>> srcs = {{7, 89, 19, 18, 178}, {40, 41}, {116, 7, 116}, {5, 6, 7, 8, 9}};
  std::vector<job> jobs;
  translation_options greedy;
  greedy.beam_size = 1;
  greedy.max_decoding_length = 10;
  jobs.push_back({srcs, greedy});
  translation_options beam = greedy;
  beam.beam_size = 4;
  beam.num_hypotheses = 2;
  jobs.push_back({srcs, beam});
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    translation_options s = greedy;
    s.sampling_topk = 0;
    s.sampling_temperature = 1.5f;
    s.seed = seed;
    jobs.push_back({srcs, s});
  }
  translation_options topp = greedy;
  topp.sampling_topk = 20;
  topp.sampling_topp = 0.9f;
  topp.seed = 7;
  jobs.push_back({srcs, topp});
  translation_options constrained = beam;
  constrained.no_repeat_ngram_size = 2;
  constrained.min_decoding_length = 3;
  constrained.max_batch_size = 2;
  jobs.push_back({srcs, constrained});
  return jobs;
}

bool same(const std::vector<translation_result>& a, const std::vector<translation_result>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].hypotheses.size() != b[i].hypotheses.size()) return false;
    for (std::size_t h = 0; h < a[i].hypotheses.size(); ++h) {
      const auto& x = a[i].hypotheses[h];
      const auto& y = b[i].hypotheses[h];
      // Bit-equal: the split into threads never changes a result (docs/runtime.md).
      if (x.tokens != y.tokens || x.score != y.score || x.normalized_score != y.normalized_score) return false;
    }
  }
  return true;
}

std::vector<std::vector<translation_result>> serial(const translator& t, const std::vector<job>& jobs) {
  std::vector<std::vector<translation_result>> r;
  for (const auto& j : jobs) r.push_back(t.translate_tokens(j.sources, j.options));
  return r;
}

// Runs `body(thread, round)` on n_threads threads; returns the number of mismatches they counted.
template <class Body>
int run_threads(int rounds, Body body) {
  std::atomic<int> mismatches{0};
  std::vector<std::thread> pool;
  for (int th = 0; th < n_threads; ++th)
    pool.emplace_back([&, th] {
      for (int r = 0; r < rounds; ++r)
        if (!body(th, r)) mismatches.fetch_add(1);
    });
  for (auto& p : pool) p.join();
  return mismatches.load();
}

// A .tmoe of the task_target fixture's en-de task.
std::string extracted(const taskmoe_test::temp_dir& dir, quantization_scheme q) {
  const checkpoint ck(fixture_dir("task_target"));
  convert_options o;
  o.quantization = q;
  o.created = "2025-01-31T12:00:00Z";
  o.overwrite = true;
  const std::string path = dir.file(std::string(quantization_name(q)) + ".tmoe");
  convert_task(ck, "en-de", o, path);
  return path;
}

}  // namespace

TEST_CASE("many threads on one translator with mixed options equal the serial run") {
  const taskmoe_test::temp_dir dir;
  const std::vector<job> jobs = mixed_jobs();
  for (quantization_scheme q : {quantization_scheme::float32, quantization_scheme::int8}) {
    for (int threads : {1, 2}) {  // 2: sub-batches in parallel and the GEMM pool inside each call
      CAPTURE(quantization_name(q));
      CAPTURE(threads);
      translator_options to;
      to.threads = threads;
      const translator t(extracted(dir, q), to);
      const auto expected = serial(t, jobs);
      // Sampling must really sample: the seeds give different outputs somewhere.
      CHECK_FALSE((same(expected[2], expected[3]) && same(expected[3], expected[4])));
      const int bad = run_threads(3, [&](int th, int r) {
        const std::size_t j = static_cast<std::size_t>(th + r) % jobs.size();  // threads mix jobs
        return same(t.translate_tokens(jobs[j].sources, jobs[j].options), expected[j]);
      });
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("several translators share one file; others open and close while they translate") {
  const taskmoe_test::temp_dir dir;
  const std::string path = extracted(dir, quantization_scheme::int8);
  const std::vector<job> jobs = mixed_jobs();
  const translator reference(path);
  const auto expected = serial(reference, jobs);

  std::vector<std::unique_ptr<translator>> shared;
  for (int i = 0; i < 3; ++i) shared.push_back(std::make_unique<translator>(path));
  const int bad = run_threads(3, [&](int th, int r) {
    const std::size_t j = static_cast<std::size_t>(th * 3 + r) % jobs.size();
    if (th % 3 == 0) {  // a short-lived translator of its own: open, translate, close
      translator_options to;
      to.threads = 1 + r % 2;
      const translator mine(path, to);
      return same(mine.translate_tokens(jobs[j].sources, jobs[j].options), expected[j]);
    }
    const translator& t = *shared[static_cast<std::size_t>(th) % shared.size()];
    return same(t.translate_tokens(jobs[j].sources, jobs[j].options), expected[j]);
  });
  CHECK(bad == 0);
}

// Reported as skipped (not passed) in builds without SentencePiece.
TEST_CASE("text API from many threads equals the serial run" *
          doctest::skip(!tokenizer::sentencepiece::available)) {
  const translator t = translator::from_checkpoint(fixture_dir("task_target"), "en-de");
  const std::vector<std::string> texts = {"Open the file.", "", "Save the document before closing.",
                                          "a b c d e f g", "Привет, мир! 😀"};
  translation_options o;
  o.max_decoding_length = 12;
  const auto expected = t.translate_batch(texts, o);
  const int bad = run_threads(4, [&](int, int) { return same(t.translate_batch(texts, o), expected); });
  CHECK(bad == 0);
}
