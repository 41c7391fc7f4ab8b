// libFuzzer harness: translate_batch on arbitrary bytes as input text, against a tiny valid model
// (the task_target fixture of tests/data/fixtures, converted to float32 and int8 .tmoe files at
// start). The first input byte picks the model and the options (beam 1 or 2, a short
// max_decoding_length, max_input_length and truncate_input, sampling, a target prefix); the rest
// is split at '\n' into up to 4 inputs, as the CLI splits lines. Invalid UTF-8 must give
// invalid_argument_error; anything but a taskmoe::error escaping is a finding.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t
#include <memory>   // std::unique_ptr

#include "fuzz_support.hpp"

namespace {

using namespace taskmoe;

struct models {
  std::string dir = taskmoe_fuzz::make_temp_dir();
  std::unique_ptr<translator> f32, i8;
  models() {
    const std::string fixture = TASKMOE_TEST_DATA_DIR "/fixtures/task_target";
    const checkpoint ck(fixture);
    convert_options o;
    o.created = "2026-01-01T00:00:00Z";
    o.quantization = quantization_scheme::float32;
    convert_task(ck, "en-de", o, dir + "/f32.tmoe");
    o.quantization = quantization_scheme::int8;
    convert_task(ck, "en-de", o, dir + "/i8.tmoe");
    f32 = std::make_unique<translator>(dir + "/f32.tmoe");
    i8 = std::make_unique<translator>(dir + "/i8.tmoe");
  }
  ~models() { taskmoe_fuzz::remove_tree(dir); }
};

void write_seeds(const std::string& dir) {
  using taskmoe_fuzz::write_seed;
  // First byte: options (see LLVMFuzzerTestOneInput); then the text.
  write_seed(dir, "plain", std::string("\x00", 1) + "Hello world.");
  write_seed(dir, "beam-lines", "\x01" "the cat sat on the mat\nOpen the file.\n\n   ");
  write_seed(dir, "invalid-utf8", "\x00" "abc\xff\xfe" "def");
  write_seed(dir, "overlong", "\x02" "\xc0\xaf and \xed\xa0\x80 surrogate");
  write_seed(dir, "nul-bytes", std::string("\x04" "a\0b\0\0c", 7));
  write_seed(dir, "crlf", "\x08" "line one\r\nline two\r\n");
  write_seed(dir, "scripts", "\x10" "Grüße 世界 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xf0\x9f\x98\x80 \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");
  write_seed(dir, "controls", "\x20" "\x01\x02\x1b[31m\x7f\tx\v\f");
  write_seed(dir, "repeated", "\x41" + std::string(300, 'a'));
  write_seed(dir, "prefix", "\x80" "Guten Morgen\nGood");
}

}  // namespace

TASKMOE_FUZZ_SEEDS(write_seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const models m;
  if (size == 0) return 0;
  const std::uint8_t sel = data[0];
  std::string text = taskmoe_fuzz::bytes_of(data + 1, size - 1);
  if (text.size() > 4096) text.resize(4096);  // long lines: hostile-input tests cover them
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (lines.size() < 4) {
    const std::size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  translation_options o;
  o.beam_size = (sel & 1) ? 2 : 1;
  o.num_hypotheses = o.beam_size;
  o.max_decoding_length = 1 + ((sel >> 1) & 3);
  o.max_input_length = (sel & 8) ? 5 : 0;
  o.truncate_input = !(sel & 16);
  if (sel & 32) {  // sampling needs beam 1
    o.beam_size = 1;
    o.num_hypotheses = 1;
    o.sampling_topk = 0;
    o.seed = 7;
  }
  if ((sel & 128) && lines.size() > 1) {
    o.target_prefix = lines.back();
    lines.pop_back();
  }
  const translator& t = (sel & 64) ? *m.i8 : *m.f32;
  try {
    const auto results = t.translate_batch(lines, o);
    if (results.size() != lines.size()) std::abort();  // output must stay aligned with input
  } catch (const taskmoe::error&) {
  }
  return 0;
}
