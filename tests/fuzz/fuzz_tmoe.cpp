// libFuzzer harness: the .tmoe reader (header, metadata JSON, tensor table, tensor checksums),
// then, when the bytes load as a model, the translator built on it and a few decoding steps.
//
// The header checksum covers the header, metadata and table, so almost every mutation would stop
// at "header checksum mismatch". Each input is therefore loaded twice: as given (the checksum
// path), and with the header CRC recomputed when the regions it covers lie inside the input (the
// parser behind it). Tensor CRCs are checked by an explicit verify_checksums() call, and the
// translator loads with verify_checksums = false, so a mutated weight still reaches decoding.

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t

#include "fuzz_support.hpp"

namespace {

using namespace taskmoe;

// Recomputes the header CRC of `b` in place; false when the covered regions are not inside `b`.
bool fix_header_crc(std::string& b) {
  if (b.size() < detail::tmoe_header_size) return false;
  const auto* base = reinterpret_cast<const std::byte*>(b.data());
  const detail::tmoe_header h = detail::tmoe_decode_header(base);
  if (!detail::range_within(h.metadata_offset, h.metadata_size, b.size()) ||
      !detail::range_within(h.table_offset, h.table_size, b.size()))
    return false;
  const std::uint32_t crc = detail::tmoe_header_crc(base, base + h.metadata_offset, h.metadata_size,
                                                    base + h.table_offset, h.table_size);
  taskmoe_fuzz::poke(b, detail::tmoe_header_crc_offset, crc);
  return true;
}

void decode_a_little(const std::string& path) {
  translator_options to;
  to.verify_checksums = false;
  const translator t(path, to);
  translation_options o;
  o.max_decoding_length = 3;
  o.beam_size = 1;
  const int v = t.config().vocab_size;
  const std::vector<std::vector<int>> pieces = {{4 % v, 5 % v, 6 % v}, {7 % v}};
  (void)t.translate_tokens(pieces, o);
  o.beam_size = 2;
  o.num_hypotheses = 2;
  (void)t.translate_tokens({{8 % v, 9 % v}}, o);
  if (tokenizer::sentencepiece::available) (void)t.translate("the cat", o);
  if (t.has_vocabulary_map()) {  // the embedded map, parsed now (format_error is a clean failure)
    o.use_vocabulary_map = true;
    (void)t.translate_tokens(pieces, o);
  }
}

void load(const std::string& path) {
  tmoe_load_options lo;
  lo.verify_checksums = false;
  const tmoe_file f(path, lo);
  (void)f.sentencepiece_model();
  for (const auto& name : f.tensor_names()) (void)f.require(name);
  try {
    f.verify_checksums();
  } catch (const format_error&) {
  }
  decode_a_little(path);
}

void write_seeds(const std::string& dir) {
  using namespace taskmoe_fuzz;
  const std::string ck = make_temp_dir();
  write_tiny_checkpoint(ck);
  const std::string f32 = convert_to_bytes(ck, "en-de", quantization_scheme::float32);
  const std::string i8 = convert_to_bytes(ck, "de-en", quantization_scheme::int8);
  // An int8 file embedding a vocabulary map: always the tiny vocabulary's pieces 4-9, and a rule.
  std::string map = "\t", first;
  tokenizer::for_each_piece(checkpoint(ck).sentencepiece_model(), [&](int id, std::string_view p) {
    if (id == 10) first = std::string(p);
    if (id >= 4 && id < 10) map += std::string(id > 4 ? " " : "") + std::string(p);
    return id >= 10;
  });
  map += "\n" + first + "\t" + first + "\n";
  const std::string map_path = ck + "/vmap.txt";
  write_file(map_path, map);
  const std::string with_map = convert_to_bytes(ck, "en-de", quantization_scheme::int8, map_path);
  remove_tree(ck);
  write_seed(dir, "tiny-f32.tmoe", f32);
  write_seed(dir, "tiny-int8.tmoe", i8);
  write_seed(dir, "tiny-int8-vocabulary-map.tmoe", with_map);
  // The corruptions test_tmoe.cpp makes by hand.
  write_seed(dir, "truncated-header", f32.substr(0, 40));
  write_seed(dir, "header-only", f32.substr(0, 64));
  // The header corruptions test_tmoe.cpp makes by hand (bad magic, major version, flags,
  // overflowing offsets, misaligned data) are a byte or a field away from these two files, and
  // the harness fixes the header CRC, so libFuzzer finds them in seconds: committing them would
  // only add 26 KB each.
}

}  // namespace

TASKMOE_FUZZ_SEEDS(write_seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static taskmoe_fuzz::memory_file file;
  std::string bytes = taskmoe_fuzz::bytes_of(data, size);
  try {  // as given: every checksum checked
    const tmoe_file f(file.set(bytes));
  } catch (const taskmoe::error&) {
  }
  if (fix_header_crc(bytes)) {
    try {
      load(file.set(bytes));
    } catch (const taskmoe::error&) {
    }
  }
  return 0;
}
