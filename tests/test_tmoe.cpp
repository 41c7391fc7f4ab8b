#include "test_helpers.hpp"

#include <sys/stat.h>

using namespace taskmoe;
using namespace taskmoe_test;

namespace {

tmoe_metadata tiny_metadata() {
  tmoe_metadata m;
  m.model = tiny_config(routing::task_target, routing::token);
  m.task = tiny_tasks()[1];
  m.task_id = 1;
  m.encoder_moe_layers = {{1, routing::task_target, {2, 0}, {0.7f, 0.3f}}};
  m.decoder_moe_layers = {{1, routing::token, {0, 1, 2, 3}, {}}};
  m.quantization.scheme = quantization_scheme::int8;
  m.quantization.tensors = {"w.i8"};
  m.source_hash = "0123456789abcdef";
  m.source_name = "tiny";
  m.created = "2024-01-01T00:00:00Z";
  return m;
}

const std::vector<float> f32_data = random_floats(12, 3);
const std::uint16_t f16_data[4] = {0x3C00, 0x4000, 0xC000, 0x7BFF};
const std::int8_t i8_data[6] = {-128, -1, 0, 1, 2, 127};
const float i8_scales[2] = {0.25f, 4.0f};
const std::string spm = "sentencepiece bytes";

// A valid file with one tensor of every dtype.
void write_tiny(const std::string& path, tmoe_write_options opts = {}) {
  tmoe_writer w(path, opts);
  w.set_metadata(tiny_metadata());
  w.add_tensor("w.f32", dtype::f32, {3, 4}, f32_data.data(), 48);
  w.add_tensor("w.f16", dtype::f16, {4}, f16_data, 8);
  w.add_tensor("w.bf", dtype::bf16, {2, 2}, f16_data, 8);
  w.add_tensor("w.i8", dtype::i8, {2, 3}, i8_data, 6, i8_scales, 2);
  w.add_sentencepiece(spm);
  w.finish();
}

struct fixture {
  temp_dir dir;
  std::string good_path = dir.file("good.tmoe");
  std::string bytes;
  fixture() {
    write_tiny(good_path);
    bytes = read_file(good_path);
  }
  detail::tmoe_header header() const {
    return detail::tmoe_decode_header(reinterpret_cast<const std::byte*>(bytes.data()));
  }
  // Byte offset, inside the file, of the table record of tensor `index` and of its fields.
  struct record_pos {
    std::size_t name, dtype, ndim, data_offset, data_size, scales_offset, crc;
  };
  record_pos record(std::size_t index) const {
    std::size_t p = static_cast<std::size_t>(header().table_offset);
    for (std::size_t i = 0;; ++i) {
      record_pos r{};
      const auto len = peek<std::uint16_t>(bytes, p);
      r.name = p + 2;
      r.dtype = r.name + len;
      r.ndim = r.dtype + 1;
      const auto ndim = static_cast<std::uint8_t>(bytes[r.ndim]);
      r.data_offset = r.ndim + 1 + 8u * ndim;
      r.data_size = r.data_offset + 8;
      r.scales_offset = r.data_size + 8;
      r.crc = r.scales_offset + 16;
      if (i == index) return r;
      p = r.crc + 4;
    }
  }
  void fix_header_crc(std::string& b) const {
    const auto h = detail::tmoe_decode_header(reinterpret_cast<const std::byte*>(b.data()));
    const std::uint32_t crc = detail::tmoe_header_crc(
        reinterpret_cast<const std::byte*>(b.data()), b.data() + h.metadata_offset,
        static_cast<std::size_t>(h.metadata_size), b.data() + h.table_offset,
        static_cast<std::size_t>(h.table_size));
    poke<std::uint32_t>(b, 60, crc);
  }
  // Replaces the metadata JSON (the writer puts it right before the table, at the end).
  std::string with_metadata(const nlohmann::json& j) const {
    const auto h = header();
    const std::string meta = j.dump();
    std::string b = bytes.substr(0, static_cast<std::size_t>(h.metadata_offset)) + meta +
                    bytes.substr(static_cast<std::size_t>(h.table_offset));
    poke<std::uint64_t>(b, 24, meta.size());
    poke<std::uint64_t>(b, 32, h.metadata_offset + meta.size());
    fix_header_crc(b);
    return b;
  }
  // Loads `b` and checks the error names the file and contains `message`.
  void expect_error(const std::string& b, const std::string& message, bool verify = true) {
    const std::string path = dir.file("bad.tmoe");
    write_file(path, b);
    tmoe_load_options o;
    o.verify_checksums = verify;
    expect_format_error([&] { tmoe_file f(path, o); }, path, message);
  }
};

}  // namespace

TEST_CASE("tmoe round-trips every dtype, metadata and the tokenizer, in place and aligned") {
  fixture fx;
  const tmoe_file f(fx.good_path);
  CHECK(f.version_major() == 1);
  CHECK(f.version_minor() == tmoe_version_minor);
  CHECK(f.tensor_names() ==
        std::vector<std::string>{"w.f32", "w.f16", "w.bf", "w.i8", "tokenizer.sentencepiece"});
  CHECK(to_f32(f.require("w.f32", dtype::f32, {3, 4})) == f32_data);
  CHECK(to_f32(f.require("w.f16")) == std::vector<float>{1.0f, 2.0f, -2.0f, 65504.0f});
  CHECK(std::memcmp(f.require("w.bf", dtype::bf16, {2, 2}).data, f16_data, 8) == 0);
  const tensor_view& q = f.require("w.i8", dtype::i8, {2, 3});
  CHECK(std::memcmp(q.data, i8_data, 6) == 0);
  REQUIRE(q.scale_count == 2);
  CHECK(q.scales[1] == 4.0f);
  CHECK(to_f32(q) == std::vector<float>{-32.0f, -0.25f, 0.0f, 4.0f, 8.0f, 508.0f});
  CHECK(f.sentencepiece_model() == spm);
  for (const auto& n : f.tensor_names()) {
    CHECK(reinterpret_cast<std::uintptr_t>(f.require(n).data) % 64 == 0);
  }
  CHECK(reinterpret_cast<std::uintptr_t>(q.scales) % 64 == 0);
  const tmoe_metadata& m = f.metadata();
  CHECK(nlohmann::json(m) == nlohmann::json(tiny_metadata()));
  CHECK(m.encoder_moe_layers[0].experts == std::vector<int>{2, 0});
  CHECK(m.task.target_tag == "<2en>");
  CHECK(f.metadata_json()["converter"]["version"] == TASKMOE_VERSION_STRING);
}

TEST_CASE("tmoe: an optional embedded vocabulary map, byte for byte; a wrong kind is rejected") {
  temp_dir dir;
  CHECK(tmoe_file(fixture().good_path).vocabulary_map_text().empty());
  const std::string text = "\ta b\nc\td\r\n";
  const auto write = [&](const std::string& path, auto&& add_map) {
    tmoe_writer w(path);
    w.set_metadata(tiny_metadata());
    w.add_tensor("w.i8", dtype::i8, {2, 3}, i8_data, 6, i8_scales, 2);
    w.add_sentencepiece(spm);
    add_map(w);
    w.finish();
  };
  write(dir.file("map.tmoe"), [&](tmoe_writer& w) { w.add_vocabulary_map(text); });
  const tmoe_file f(dir.file("map.tmoe"));
  CHECK(f.vocabulary_map_text() == text);
  CHECK(reinterpret_cast<std::uintptr_t>(f.vocabulary_map_text().data()) % 64 == 0);
  {
    tmoe_writer w(dir.file("empty.tmoe"));
    CHECK_THROWS_WITH_AS(w.add_vocabulary_map(""), taskmoe_test::contains("the vocabulary map is empty"),
                         invalid_argument_error);
  }
  const std::string msg = "tensor 'tokenizer.vocabulary_map' must be a non-empty 1-D u8 tensor";
  write(dir.file("f32.tmoe"), [&](tmoe_writer& w) {
    w.add_tensor(tmoe_vocabulary_map_tensor, dtype::f32, {3}, f32_data.data(), 12);
  });
  expect_format_error([&] { tmoe_file g(dir.file("f32.tmoe")); }, dir.file("f32.tmoe"), msg);
  write(dir.file("2d.tmoe"), [&](tmoe_writer& w) {
    w.add_tensor(tmoe_vocabulary_map_tensor, dtype::u8, {2, 2}, text.data(), 4);
  });
  expect_format_error([&] { tmoe_file g(dir.file("2d.tmoe")); }, dir.file("2d.tmoe"), msg);
  write(dir.file("0.tmoe"), [&](tmoe_writer& w) {
    w.add_tensor(tmoe_vocabulary_map_tensor, dtype::u8, tensor_shape{0}, text.data(), 0);
  });
  expect_format_error([&] { tmoe_file g(dir.file("0.tmoe")); }, dir.file("0.tmoe"), msg);
}

TEST_CASE("tmoe_writer refuses to overwrite unless asked and never leaves partial files") {
  temp_dir dir;
  const std::string path = dir.file("a.tmoe");
  write_tiny(path);
  CHECK_THROWS_WITH_AS(write_tiny(path), taskmoe_test::contains("file exists"), io_error);
  tmoe_write_options o;
  o.overwrite = true;
  CHECK_NOTHROW(write_tiny(path, o));
  {
    tmoe_writer w(dir.file("b.tmoe"));
    w.add_tensor("x", dtype::f32, {3}, f32_data.data(), 12);
    // destroyed without finish()
  }
  {
    tmoe_writer w(dir.file("c.tmoe"));
    w.add_tensor("x", dtype::f32, {3}, f32_data.data(), 12);
    CHECK_THROWS_WITH_AS(w.finish(), taskmoe_test::contains("set_metadata() was not called"),
                         invalid_argument_error);
    CHECK_THROWS_AS(w.add_tensor("x", dtype::f32, {3}, f32_data.data(), 12), invalid_argument_error);
  }
  struct stat st {};
  CHECK(::stat(dir.file("b.tmoe").c_str(), &st) != 0);
  CHECK(::stat(dir.file("c.tmoe").c_str(), &st) != 0);
  CHECK(read_file(dir.file("a.tmoe")).size() > 0);
  std::string listing;
  CHECK(std::system(("test $(ls '" + dir.path() + "' | wc -l) -eq 1").c_str()) == 0);
}

TEST_CASE("tmoe_writer validates its input") {
  temp_dir dir;
  tmoe_writer w(dir.file("a.tmoe"));
  CHECK_THROWS_WITH_AS(w.add_tensor("x", dtype::f32, {4}, f32_data.data(), 12),
                       taskmoe_test::contains("does not match shape"), invalid_argument_error);
  CHECK_THROWS_WITH_AS(w.add_tensor("q", dtype::i8, {2, 3}, i8_data, 6, i8_scales, 1),
                       taskmoe_test::contains("needs 2 scales"), invalid_argument_error);
  auto m = tiny_metadata();
  m.encoder_moe_layers[0].gates.pop_back();
  CHECK_THROWS_WITH_AS(w.set_metadata(m), taskmoe_test::contains("moe_layers.encoder[0].gates"),
                       invalid_argument_error);
}

TEST_CASE("tmoe load option verify_checksums = false skips data CRCs only") {
  fixture fx;
  std::string b = fx.bytes;
  b[static_cast<std::size_t>(fx.header().data_offset)] ^= 0x01;  // first byte of w.f32
  fx.expect_error(b, "tensor 'w.f32': checksum mismatch");
  write_file(fx.dir.file("lazy.tmoe"), b);
  tmoe_load_options o;
  o.verify_checksums = false;
  const tmoe_file f(fx.dir.file("lazy.tmoe"), o);
  CHECK_THROWS_WITH_AS(f.verify_checksums(), taskmoe_test::contains("checksum mismatch"), format_error);
  // The header CRC is still checked.
  b = fx.bytes;
  b[static_cast<std::size_t>(fx.header().metadata_offset) + 3] ^= 0x01;
  fx.expect_error(b, "header checksum mismatch", false);
}

TEST_CASE("tmoe checksums on several threads: every tensor checked, the first bad one in table order reported") {
  // Six 1 MiB tensors (above the 4 MiB a second thread needs), each starting with a marker.
  temp_dir dir;
  const std::string path = dir.file("big.tmoe");
  {
    tmoe_writer w(path);
    w.set_metadata(tiny_metadata());
    std::vector<std::uint8_t> data(std::size_t{1} << 20);
    for (int t = 0; t < 6; ++t) {
      for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 + t);
      std::memcpy(data.data(), ("<big" + std::to_string(t) + ">").data(), 6);
      w.add_tensor("big" + std::to_string(t), dtype::u8, tensor_shape{data.size()}, data.data(), data.size());
    }
    w.add_tensor("w.i8", dtype::i8, {2, 3}, i8_data, 6, i8_scales, 2);
    w.add_sentencepiece(spm);
    w.finish();
  }
  const std::string good = read_file(path);
  const auto flip = [&](std::string& b, int t) { b[b.find("<big" + std::to_string(t) + ">") + 100] ^= 0x10; };
  for (int threads : {0, 1, 2, 3, 8}) {
    CAPTURE(threads);
    tmoe_load_options o;
    o.verify_threads = threads;
    CHECK_NOTHROW(tmoe_file(path, o));
    for (const std::vector<int>& bad : std::vector<std::vector<int>>{{5}, {0}, {2, 4}, {3, 5}}) {
      std::string b = good;
      for (int t : bad) flip(b, t);
      const std::string bad_path = dir.file("bad.tmoe");
      write_file(bad_path, b);
      expect_format_error([&] { tmoe_file f(bad_path, o); }, bad_path,
                          "tensor 'big" + std::to_string(bad.front()) + "': checksum mismatch");
      o.verify_checksums = false;
      const tmoe_file lazy(bad_path, o);
      CHECK_THROWS_WITH_AS(lazy.verify_checksums(threads), taskmoe_test::contains("'big" + std::to_string(bad.front()) + "'"),
                           format_error);
      // One tensor at a time, and the rest less those already checked (the translator's order).
      for (int t = 0; t < 6; ++t) {
        const bool is_bad = std::find(bad.begin(), bad.end(), t) != bad.end();
        if (is_bad) {
          CHECK_THROWS_WITH_AS(lazy.verify_tensor("big" + std::to_string(t)),
                               taskmoe_test::contains("'big" + std::to_string(t) + "': checksum mismatch"), format_error);
        } else {
          CHECK_NOTHROW(lazy.verify_tensor("big" + std::to_string(t)));
        }
      }
      const auto named = [](std::vector<int> ts) {
        return [ts](const std::string& n) {
          for (int t : ts)
            if (n == "big" + std::to_string(t)) return true;
          return false;
        };
      };
      CHECK_NOTHROW(lazy.verify_checksums(threads, named(bad)));  // every bad one skipped
      if (bad.size() == 2)  // the first skipped: the second is reported
        CHECK_THROWS_WITH_AS(lazy.verify_checksums(threads, named({bad.front()})),
                             taskmoe_test::contains("'big" + std::to_string(bad.back()) + "'"), format_error);
      o.verify_checksums = true;
    }
  }
}

TEST_CASE("tmoe verify_tensor: an unknown name is a clear error") {
  fixture fx;
  const tmoe_file f(fx.good_path);
  CHECK_NOTHROW(f.verify_tensor("w.i8"));
  CHECK_THROWS_WITH_AS(f.verify_tensor("nope"), taskmoe_test::contains("missing required tensor 'nope'"), format_error);
}

TEST_CASE("corrupt tmoe: wrong magic") {
  fixture fx;
  std::string b = fx.bytes;
  b[0] = 'X';
  fx.expect_error(b, "wrong magic: not a .tmoe file");
}

TEST_CASE("corrupt tmoe: unsupported major version; a newer minor loads") {
  fixture fx;
  std::string b = fx.bytes;
  poke<std::uint16_t>(b, 8, 2);
  fx.fix_header_crc(b);
  fx.expect_error(b, "unsupported major version 2 (this reader supports 1)");
  b = fx.bytes;
  poke<std::uint16_t>(b, 10, 7);
  fx.fix_header_crc(b);
  write_file(fx.dir.file("minor.tmoe"), b);
  CHECK(tmoe_file(fx.dir.file("minor.tmoe")).version_minor() == 7);
  b = fx.bytes;
  poke<std::uint32_t>(b, 12, 1);
  fx.fix_header_crc(b);
  fx.expect_error(b, "unsupported required flags 0x1");
}

TEST_CASE("corrupt tmoe: truncated file") {
  fixture fx;
  fx.expect_error(fx.bytes.substr(0, 40), "truncated file: 40 bytes, smaller than the 64-byte header");
  fx.expect_error(fx.bytes.substr(0, fx.bytes.size() - 10), "truncated file: tensor table ends at byte");
  fx.expect_error("", "truncated file: 0 bytes");
}

TEST_CASE("corrupt tmoe: offsets and sizes outside the file") {
  fixture fx;
  std::string b = fx.bytes;
  poke<std::uint64_t>(b, fx.record(1).data_offset, 1ull << 40);
  fx.fix_header_crc(b);
  fx.expect_error(b, "tensor 'w.f16': data [1099511627840, 1099511627848) is outside the file");
  b = fx.bytes;
  poke<std::uint64_t>(b, 16, fx.bytes.size() + 64);
  fx.expect_error(b, "truncated file: metadata ends at byte");
}

TEST_CASE("corrupt tmoe: integer overflow in sizes") {
  fixture fx;
  std::string b = fx.bytes;
  poke<std::uint64_t>(b, 24, ~0ull - 8);
  fx.expect_error(b, "integer overflow: metadata offset");
  b = fx.bytes;
  poke<std::uint64_t>(b, fx.record(0).data_offset, ~0ull - 63);
  fx.fix_header_crc(b);
  fx.expect_error(b, "tensor 'w.f32': data: integer overflow in offset");
  // A shape whose byte size overflows u64: 2^32 x 2^32 x 4 bytes.
  b = fx.bytes;
  const auto r = fx.record(0);
  poke<std::uint64_t>(b, r.ndim + 1, 1ull << 32);
  poke<std::uint64_t>(b, r.ndim + 9, 1ull << 32);
  fx.fix_header_crc(b);
  fx.expect_error(b, "tensor 'w.f32': integer overflow in the byte size of shape");
}

TEST_CASE("corrupt tmoe: overlapping tensors") {
  fixture fx;
  std::string b = fx.bytes;
  poke<std::uint64_t>(b, fx.record(1).data_offset, peek<std::uint64_t>(b, fx.record(0).data_offset));
  fx.fix_header_crc(b);
  fx.expect_error(b, "overlapping data: tensor 'w.f");
  // Data pointing into the tensor table is an overlap too.
  b = fx.bytes;
  const auto h = fx.header();
  poke<std::uint64_t>(b, fx.record(1).data_offset, (h.table_offset - h.data_offset) & ~63ull);
  fx.fix_header_crc(b);
  fx.expect_error(b, "overlapping data:");
}

TEST_CASE("corrupt tmoe: misaligned data") {
  fixture fx;
  std::string b = fx.bytes;
  poke<std::uint64_t>(b, fx.record(2).data_offset, peek<std::uint64_t>(b, fx.record(2).data_offset) + 4);
  fx.fix_header_crc(b);
  fx.expect_error(b, "tensor 'w.bf': data offset 132 is misaligned (not a multiple of 64)");
  b = fx.bytes;
  poke<std::uint64_t>(b, 48, 72);
  fx.fix_header_crc(b);
  fx.expect_error(b, "misaligned data section: data_offset 72");
}

TEST_CASE("corrupt tmoe: shape / byte-size mismatch") {
  fixture fx;
  std::string b = fx.bytes;
  poke<std::uint64_t>(b, fx.record(0).data_size, 44);
  fx.fix_header_crc(b);
  fx.expect_error(b, "tensor 'w.f32': byte size 44 does not match shape [3, 4] of f32 (48 bytes)");
  b = fx.bytes;
  poke<std::uint64_t>(b, fx.record(3).scales_offset + 8, 4);
  fx.fix_header_crc(b);
  fx.expect_error(b, "tensor 'w.i8': scales byte size 4 does not match 2 rows of f32");
}

TEST_CASE("corrupt tmoe: header checksum mismatch") {
  fixture fx;
  std::string b = fx.bytes;
  b[static_cast<std::size_t>(fx.header().table_offset) + 2] ^= 0x20;  // a tensor name byte
  fx.expect_error(b, "header checksum mismatch (stored 0x");
}

TEST_CASE("corrupt tmoe: tensor checksum mismatch (data and scales)") {
  fixture fx;
  std::string b = fx.bytes;
  b[static_cast<std::size_t>(fx.header().data_offset + peek<std::uint64_t>(b, fx.record(3).scales_offset))] ^= 1;
  fx.expect_error(b, "tensor 'w.i8': checksum mismatch");
}

TEST_CASE("corrupt tmoe: missing required metadata key or wrong type") {
  fixture fx;
  auto j = nlohmann::json(tiny_metadata());
  j["task"].erase("id");
  fx.expect_error(fx.with_metadata(j), "metadata: task.id: required key is missing");
  j = nlohmann::json(tiny_metadata());
  j["task"]["id"] = "1";
  fx.expect_error(fx.with_metadata(j), "metadata: task.id: must be an integer");
  j = nlohmann::json(tiny_metadata());
  j.erase("source_checkpoint");
  fx.expect_error(fx.with_metadata(j), "metadata: source_checkpoint: required key is missing");
  j = nlohmann::json(tiny_metadata());
  j["model"]["d_model"] = 8.5;
  fx.expect_error(fx.with_metadata(j), "metadata: model.d_model: must be an integer");
  j = nlohmann::json(tiny_metadata());
  j["moe_layers"]["decoder"] = nlohmann::json::array();
  fx.expect_error(fx.with_metadata(j), "metadata: moe_layers.decoder: must have one entry per MoE layer");
  fx.expect_error(fx.with_metadata("not an object"), "metadata: (root): must be a JSON object");
  std::string b = fx.with_metadata(tiny_metadata());
  CHECK_NOTHROW((write_file(fx.dir.file("same.tmoe"), b), tmoe_file(fx.dir.file("same.tmoe"))));
}

TEST_CASE("corrupt tmoe: duplicate tensor names") {
  fixture fx;
  std::string b = fx.bytes;
  b[fx.record(1).name + 3] = '3';  // "w.f16" -> "w.f36"
  b[fx.record(1).name + 4] = '2';  // -> "w.f32"
  fx.fix_header_crc(b);
  fx.expect_error(b, "duplicate tensor name 'w.f32'");
}

TEST_CASE("corrupt tmoe: missing required tensor") {
  fixture fx;
  const tmoe_file f(fx.good_path);
  CHECK_THROWS_WITH_AS(f.require("decoder.layers.0.ffn.fc1.weight"),
                       taskmoe_test::contains(fx.good_path + ": missing required tensor "
                                         "'decoder.layers.0.ffn.fc1.weight'"),
                       format_error);
  CHECK_THROWS_WITH_AS(f.require("w.f32", dtype::f16, {3, 4}), taskmoe_test::contains("has dtype f32, expected f16"),
                       format_error);
  CHECK_THROWS_WITH_AS(f.require("w.f32", dtype::f32, {4, 3}),
                       taskmoe_test::contains("has shape [3, 4], expected [4, 3]"), format_error);
  CHECK(f.find("nope") == nullptr);
  // A file without the embedded tokenizer is rejected on load.
  std::string b = fx.bytes;
  b[fx.record(4).name] = 'T';  // "tokenizer..." -> "Tokenizer..."
  fx.fix_header_crc(b);
  fx.expect_error(b, "missing required tensor 'tokenizer.sentencepiece'");
}

TEST_CASE("corrupt tmoe: bad table records") {
  fixture fx;
  std::string b = fx.bytes;
  b[fx.record(0).dtype] = 9;
  fx.fix_header_crc(b);
  fx.expect_error(b, "tensor 'w.f32': unknown dtype code 9");
  b = fx.bytes;
  poke<std::uint32_t>(b, 56, 6);  // one more record than the table holds
  fx.fix_header_crc(b);
  fx.expect_error(b, "truncated tensor table: record 5");
  b = fx.bytes;
  poke<std::uint32_t>(b, 56, 4);
  fx.fix_header_crc(b);
  fx.expect_error(b, "trailing bytes after 4 records");
}
