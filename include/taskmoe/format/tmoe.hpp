#pragma once
// The per-task .tmoe file, format v1 (docs/format.md): reader (tmoe_file, memory-mapped, weights
// used in place) and writer (tmoe_writer, streaming, atomic). The reader validates every byte it
// will touch before handing out a pointer, and reports problems as format_error naming the file.

#include <algorithm>  // std::sort
#include <cerrno>     // errno
#include <cstddef>    // std::byte, std::size_t
#include <cstdint>    // fixed-width integers
#include <cstdio>     // std::snprintf
#include <cstring>    // std::memcpy, std::memcmp, std::strerror
#include <map>        // std::map
#include <set>        // std::set
#include <string>     // std::string
#include <string_view>
#include <thread>     // std::thread (checksums on several cores)
#include <utility>    // std::pair
#include <vector>     // std::vector

#include <nlohmann/json.hpp>

#include <taskmoe/detail/atomic_file.hpp>
#include <taskmoe/detail/checked_math.hpp>
#include <taskmoe/detail/crc32c.hpp>
#include <taskmoe/detail/mmap.hpp>
#include <taskmoe/error.hpp>
#include <taskmoe/format/tmoe_metadata.hpp>
#include <taskmoe/tensor/dtype.hpp>
#include <taskmoe/tensor/tensor_view.hpp>

namespace taskmoe {

inline constexpr std::uint16_t tmoe_version_major = 1;
// Minor 1 added the optional tokenizer.vocabulary_map (older readers ignore it).
inline constexpr std::uint16_t tmoe_version_minor = 1;
inline constexpr std::uint64_t tmoe_alignment = 64;
inline constexpr const char* tmoe_tokenizer_tensor = "tokenizer.sentencepiece";
// Optional: a target-vocabulary shortlist in CTranslate2's vmap.txt format, byte for byte.
inline constexpr const char* tmoe_vocabulary_map_tensor = "tokenizer.vocabulary_map";

namespace detail {

inline constexpr char tmoe_magic[8] = {'T', 'A', 'S', 'K', 'M', 'O', 'E', '\0'};
inline constexpr std::size_t tmoe_header_size = 64;
inline constexpr std::size_t tmoe_header_crc_offset = 60;
// Flag bits 0..15 are "must understand": a reader rejects any it does not know (none in v1).
// Bits 16..31 are informative and ignored.
inline constexpr std::uint32_t tmoe_required_flags_mask = 0x0000FFFFu;

// The fixed 64-byte header, little-endian, fields at the offsets in docs/format.md.
struct tmoe_header {
  std::uint16_t major = tmoe_version_major;    // @8
  std::uint16_t minor = tmoe_version_minor;    // @10
  std::uint32_t flags = 0;                     // @12
  std::uint64_t metadata_offset = 0;           // @16
  std::uint64_t metadata_size = 0;             // @24
  std::uint64_t table_offset = 0;              // @32
  std::uint64_t table_size = 0;                // @40
  std::uint64_t data_offset = 0;               // @48
  std::uint32_t tensor_count = 0;              // @56
  std::uint32_t header_crc = 0;                // @60
};

inline void tmoe_encode_header(const tmoe_header& h, std::byte* out) {
  std::memset(out, 0, tmoe_header_size);
  std::memcpy(out, tmoe_magic, 8);
  std::memcpy(out + 8, &h.major, 2);
  std::memcpy(out + 10, &h.minor, 2);
  std::memcpy(out + 12, &h.flags, 4);
  std::memcpy(out + 16, &h.metadata_offset, 8);
  std::memcpy(out + 24, &h.metadata_size, 8);
  std::memcpy(out + 32, &h.table_offset, 8);
  std::memcpy(out + 40, &h.table_size, 8);
  std::memcpy(out + 48, &h.data_offset, 8);
  std::memcpy(out + 56, &h.tensor_count, 4);
  std::memcpy(out + 60, &h.header_crc, 4);
}

inline tmoe_header tmoe_decode_header(const std::byte* in) {
  tmoe_header h;
  std::memcpy(&h.major, in + 8, 2);
  std::memcpy(&h.minor, in + 10, 2);
  std::memcpy(&h.flags, in + 12, 4);
  std::memcpy(&h.metadata_offset, in + 16, 8);
  std::memcpy(&h.metadata_size, in + 24, 8);
  std::memcpy(&h.table_offset, in + 32, 8);
  std::memcpy(&h.table_size, in + 40, 8);
  std::memcpy(&h.data_offset, in + 48, 8);
  std::memcpy(&h.tensor_count, in + 56, 4);
  std::memcpy(&h.header_crc, in + 60, 4);
  return h;
}

// CRC32C over header bytes [0, 60) + metadata + table. The caller has bounds-checked the regions.
inline std::uint32_t tmoe_header_crc(const std::byte* header60, const void* metadata,
                                     std::size_t metadata_size, const void* table,
                                     std::size_t table_size) {
  std::uint32_t c = crc32c(header60, tmoe_header_crc_offset);
  c = crc32c_extend(c, metadata, metadata_size);
  return crc32c_extend(c, table, table_size);
}

template <typename T>
inline void append_le(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

// One tensor-table record (docs/format.md, "Tensor table").
struct tmoe_record {
  std::string name;
  dtype type = dtype::f32;
  tensor_shape shape;
  std::uint64_t data_offset = 0;  // relative to header.data_offset
  std::uint64_t data_size = 0;
  std::uint64_t scales_offset = 0;  // relative to header.data_offset; i8 only
  std::uint64_t scales_size = 0;
  std::uint32_t crc = 0;  // CRC32C of data bytes then scales bytes
};

inline void tmoe_encode_record(const tmoe_record& r, std::string& out) {
  append_le(out, static_cast<std::uint16_t>(r.name.size()));
  out += r.name;
  append_le(out, static_cast<std::uint8_t>(r.type));
  append_le(out, static_cast<std::uint8_t>(r.shape.ndim()));
  for (std::size_t i = 0; i < r.shape.ndim(); ++i) append_le(out, r.shape[i]);
  append_le(out, r.data_offset);
  append_le(out, r.data_size);
  append_le(out, r.scales_offset);
  append_le(out, r.scales_size);
  append_le(out, r.crc);
}

}  // namespace detail

struct tmoe_load_options {
  // Verify each tensor's CRC32C on load (reads every byte once). false skips it for a faster
  // start; the header CRC (header + metadata + table) is always checked.
  bool verify_checksums = true;
  // Threads that verify them: 0 one per core (at most 8). A model's checksum was about a fifth of
  // its load on one core (Zen 1: 11 of ~50 ms); tensors are split by bytes, and a mismatch is reported for the first bad
  // tensor in table order whatever the thread count.
  int verify_threads = 0;
  // Map the file (weights used in place, pages shared between processes) or read it into memory
  // (a private copy, immune to the file being rewritten or truncated later: detail/mmap.hpp).
  bool use_mmap = true;
};

class tmoe_file {
 public:
  explicit tmoe_file(const std::string& path, tmoe_load_options opts = {})
      : file_(path, opts.use_mmap) {
    parse(opts);
  }

  const std::string& path() const noexcept { return file_.path(); }
  std::uint16_t version_major() const noexcept { return header_.major; }
  std::uint16_t version_minor() const noexcept { return header_.minor; }
  const tmoe_metadata& metadata() const noexcept { return metadata_; }
  const nlohmann::json& metadata_json() const noexcept { return metadata_json_; }

  // Names in table order.
  const std::vector<std::string>& tensor_names() const noexcept { return names_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // nullptr when absent.
  const tensor_view* find(const std::string& name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  // Throws format_error "missing required tensor '<name>'" when absent.
  const tensor_view& require(const std::string& name) const {
    const tensor_view* v = find(name);
    if (v == nullptr) fail("missing required tensor '" + name + "'");
    return *v;
  }
  // As above, and also checks dtype and shape.
  const tensor_view& require(const std::string& name, dtype type, const tensor_shape& shape) const {
    const tensor_view& v = require(name);
    if (v.type != type)
      fail("tensor '" + name + "' has dtype " + std::string(dtype_name(v.type)) + ", expected " +
           std::string(dtype_name(type)));
    if (v.shape != shape)
      fail("tensor '" + name + "' has shape " + v.shape.to_string() + ", expected " +
           shape.to_string());
    return v;
  }
  // The embedded SentencePiece model bytes (points into the mapping).
  std::string_view sentencepiece_model() const {
    const tensor_view& v = require(tmoe_tokenizer_tensor);
    return {reinterpret_cast<const char*>(v.data), static_cast<std::size_t>(v.byte_size)};
  }
  // The embedded vocabulary map's text (points into the mapping); empty when the file has none.
  std::string_view vocabulary_map_text() const {
    const tensor_view* v = find(tmoe_vocabulary_map_tensor);
    if (v == nullptr) return {};
    return {reinterpret_cast<const char*>(v->data), static_cast<std::size_t>(v->byte_size)};
  }
  // Throws io_error when a mapped file was modified since it was opened (one fstat).
  void check_unchanged() const { file_.check_unchanged(); }
  // Verify every tensor's CRC now (for files loaded with verify_checksums = false) on `threads`
  // threads (0: one per core, at most 8), except those for which skip(name) is true (already
  // verified one by one with verify_tensor).
  template <class Skip>
  void verify_checksums(int threads, const Skip& skip) const {
    const std::size_t n = records_.size();
    std::vector<std::uint32_t> computed(n);
    std::vector<bool> skipped(n);
    for (std::size_t i = 0; i < n; ++i) skipped[i] = skip(records_[i].name);
    const auto run = [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i)
        if (!skipped[i]) computed[i] = record_crc(records_[i]);
    };
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (!skipped[i]) total += records_[i].data_size + records_[i].scales_size;
    if (threads <= 0) threads = static_cast<int>(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
    // Small files are not worth a thread's start (tens of microseconds).
    if (total < (std::uint64_t{4} << 20)) threads = 1;
    // Contiguous runs of records of about total / threads bytes each; this thread takes the last.
    std::vector<std::thread> pool;
    std::size_t begin = 0;
    std::uint64_t done = 0;
    try {
      for (int t = 1; t < threads && begin < n; ++t) {
        std::size_t end = begin;
        const std::uint64_t target = total / static_cast<std::uint64_t>(threads) * static_cast<std::uint64_t>(t);
        for (; end < n && done < target; ++end)
          if (!skipped[end]) done += records_[end].data_size + records_[end].scales_size;
        pool.emplace_back(run, begin, end);
        begin = end;
      }
    } catch (...) {  // no thread to be had: finish on this one
    }
    run(begin, n);
    for (auto& t : pool) t.join();
    for (std::size_t i = 0; i < n; ++i)
      if (!skipped[i]) check_crc(records_[i], computed[i]);
  }
  void verify_checksums(int threads = 0) const {
    verify_checksums(threads, [](const std::string&) { return false; });
  }
  // Verify one tensor's CRC now (format_error naming it on a mismatch). A loader that checks each
  // tensor right before it packs it reads it from DRAM once instead of twice.
  void verify_tensor(const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) fail("missing required tensor '" + name + "'");
    const detail::tmoe_record& r = records_[it->second];
    check_crc(r, record_crc(r));
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw format_error(path(), problem); }

  static std::string hex(std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
  }

  // Checks [offset, offset + size) lies in the file; returns its end.
  std::uint64_t region(const char* what, std::uint64_t offset, std::uint64_t size) const {
    std::uint64_t end = 0;
    if (!detail::checked_add(offset, size, &end))
      fail(std::string("integer overflow: ") + what + " offset " + std::to_string(offset) +
           " + size " + std::to_string(size));
    if (end > file_.size())
      fail(std::string("truncated file: ") + what + " ends at byte " + std::to_string(end) +
           " but the file has " + std::to_string(file_.size()) + " bytes");
    return end;
  }

  void parse(const tmoe_load_options& opts) {
    const std::uint64_t size = file_.size();
    const std::byte* base = file_.data();
    if (size < detail::tmoe_header_size)
      fail("truncated file: " + std::to_string(size) + " bytes, smaller than the 64-byte header");
    if (std::memcmp(base, detail::tmoe_magic, 8) != 0) fail("wrong magic: not a .tmoe file");
    header_ = detail::tmoe_decode_header(base);
    if (header_.major != tmoe_version_major)
      fail("unsupported major version " + std::to_string(header_.major) +
           " (this reader supports " + std::to_string(tmoe_version_major) + ")");
    if ((header_.flags & detail::tmoe_required_flags_mask) != 0)
      fail("unsupported required flags " + hex(header_.flags & detail::tmoe_required_flags_mask));
    const std::uint64_t meta_end = region("metadata", header_.metadata_offset, header_.metadata_size);
    const std::uint64_t table_end = region("tensor table", header_.table_offset, header_.table_size);
    if (header_.metadata_offset < detail::tmoe_header_size ||
        header_.table_offset < detail::tmoe_header_size)
      fail("metadata or tensor table overlaps the header");
    if (header_.metadata_offset < table_end && header_.table_offset < meta_end)
      fail("metadata and tensor table overlap");
    if (header_.data_offset % tmoe_alignment != 0)
      fail("misaligned data section: data_offset " + std::to_string(header_.data_offset) +
           " is not a multiple of 64");
    if (header_.data_offset > size) region("data section", header_.data_offset, 0);
    const std::byte* meta = base + header_.metadata_offset;
    const std::byte* table = base + header_.table_offset;
    const std::uint32_t crc = detail::tmoe_header_crc(base, meta, header_.metadata_size, table,
                                                      header_.table_size);
    if (crc != header_.header_crc)
      fail("header checksum mismatch (stored " + hex(header_.header_crc) + ", computed " +
           hex(crc) + ")");
    parse_metadata(meta);
    parse_table(table);
    check_layout(meta_end, table_end);
    check_required();
    if (opts.verify_checksums) verify_checksums(opts.verify_threads);
  }

  void parse_metadata(const std::byte* meta) {
    const char* p = reinterpret_cast<const char*>(meta);
    metadata_json_ = nlohmann::json::parse(p, p + header_.metadata_size, nullptr, false);
    if (metadata_json_.is_discarded()) fail("metadata is not valid JSON");
    try {
      metadata_ = metadata_json_.get<tmoe_metadata>();
    } catch (const config_error& e) {
      fail(std::string("metadata: ") + e.what());
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("metadata: ") + e.what());
    }
  }

  void parse_table(const std::byte* table) {
    std::uint64_t pos = 0;
    const std::uint64_t n = header_.table_size;
    const auto take = [&](void* out, std::uint64_t bytes, std::uint32_t index) {
      if (bytes > n - pos)
        fail("truncated tensor table: record " + std::to_string(index) + " runs past its end");
      std::memcpy(out, table + pos, bytes);
      pos += bytes;
    };
    for (std::uint32_t i = 0; i < header_.tensor_count; ++i) {
      detail::tmoe_record r;
      std::uint16_t name_len = 0;
      take(&name_len, 2, i);
      if (name_len == 0) fail("tensor table: record " + std::to_string(i) + " has an empty name");
      r.name.resize(name_len);
      take(&r.name[0], name_len, i);
      std::uint8_t type = 0, ndim = 0;
      take(&type, 1, i);
      take(&ndim, 1, i);
      const std::string where = "tensor '" + r.name + "': ";
      if (!is_valid_dtype_code(type)) fail(where + "unknown dtype code " + std::to_string(type));
      if (ndim > tensor_shape::max_dims) fail(where + "more than 4 dimensions");
      r.type = static_cast<dtype>(type);
      std::uint64_t dims[tensor_shape::max_dims] = {};
      take(dims, 8u * ndim, i);
      r.shape = tensor_shape::from(dims, ndim);
      take(&r.data_offset, 8, i);
      take(&r.data_size, 8, i);
      take(&r.scales_offset, 8, i);
      take(&r.scales_size, 8, i);
      take(&r.crc, 4, i);
      check_record(r, where);
      if (tensors_.count(r.name)) fail("duplicate tensor name '" + r.name + "'");
      tensors_.emplace(r.name, make_view(r));
      index_.emplace(r.name, records_.size());
      names_.push_back(r.name);
      records_.push_back(std::move(r));
    }
    if (pos != n)
      fail("tensor table has " + std::to_string(n - pos) + " trailing bytes after " +
           std::to_string(header_.tensor_count) + " records");
  }

  void check_record(const detail::tmoe_record& r, const std::string& where) const {
    std::uint64_t expected = 0;
    if (!detail::checked_byte_size(r.shape.data(), r.shape.ndim(), dtype_size(r.type), &expected))
      fail(where + "integer overflow in the byte size of shape " + r.shape.to_string());
    if (expected != r.data_size)
      fail(where + "byte size " + std::to_string(r.data_size) + " does not match shape " +
           r.shape.to_string() + " of " + std::string(dtype_name(r.type)) + " (" +
           std::to_string(expected) + " bytes)");
    check_blob(where + "data", r.data_offset, r.data_size);
    if (r.type == dtype::i8) {
      if (r.shape.ndim() == 0) fail(where + "an i8 tensor needs at least one dimension");
      const std::uint64_t last = r.shape[r.shape.ndim() - 1];
      const std::uint64_t rows = last == 0 ? 0 : expected / last;
      std::uint64_t scale_bytes = 0;
      if (!detail::checked_mul<std::uint64_t>(rows, 4, &scale_bytes) || scale_bytes != r.scales_size)
        fail(where + "scales byte size " + std::to_string(r.scales_size) + " does not match " +
             std::to_string(rows) + " rows of f32");
      check_blob(where + "scales", r.scales_offset, r.scales_size);
    } else if (r.scales_offset != 0 || r.scales_size != 0) {
      fail(where + "only i8 tensors have scales");
    }
  }

  void check_blob(const std::string& what, std::uint64_t rel, std::uint64_t size) const {
    if (rel % tmoe_alignment != 0)
      fail(what + " offset " + std::to_string(rel) + " is misaligned (not a multiple of 64)");
    std::uint64_t abs = 0, end = 0;
    if (!detail::checked_add(header_.data_offset, rel, &abs) ||
        !detail::checked_add(abs, size, &end))
      fail(what + ": integer overflow in offset " + std::to_string(rel) + " + size " +
           std::to_string(size));
    if (end > file_.size())
      fail(what + " [" + std::to_string(abs) + ", " + std::to_string(end) +
           ") is outside the file (" + std::to_string(file_.size()) + " bytes)");
  }

  tensor_view make_view(const detail::tmoe_record& r) const {
    tensor_view v;
    v.type = r.type;
    v.shape = r.shape;
    v.data = file_.data() + header_.data_offset + r.data_offset;
    v.byte_size = r.data_size;
    if (r.type == dtype::i8) {
      // 64-aligned offset into a page-aligned mapping: a valid float pointer.
      v.scales = reinterpret_cast<const float*>(file_.data() + header_.data_offset + r.scales_offset);
      v.scale_count = r.scales_size / 4;
    }
    return v;
  }

  // No two byte ranges (blobs, metadata, table) may share a byte.
  void check_layout(std::uint64_t meta_end, std::uint64_t table_end) const {
    struct range {
      std::uint64_t begin, end;
      std::string what;
    };
    std::vector<range> rs;
    rs.push_back({header_.metadata_offset, meta_end, "the metadata"});
    rs.push_back({header_.table_offset, table_end, "the tensor table"});
    for (const auto& r : records_) {
      const std::uint64_t d = header_.data_offset + r.data_offset;  // checked in check_blob
      if (r.data_size) rs.push_back({d, d + r.data_size, "tensor '" + r.name + "'"});
      const std::uint64_t s = header_.data_offset + r.scales_offset;
      if (r.scales_size) rs.push_back({s, s + r.scales_size, "the scales of '" + r.name + "'"});
    }
    std::sort(rs.begin(), rs.end(), [](const range& a, const range& b) { return a.begin < b.begin; });
    for (std::size_t i = 1; i < rs.size(); ++i)
      if (rs[i].begin < rs[i - 1].end && rs[i].begin != rs[i].end && rs[i - 1].begin != rs[i - 1].end)
        fail("overlapping data: " + rs[i].what + " overlaps " + rs[i - 1].what);
  }

  void check_required() const {
    // One file is all a user needs: the tokenizer must be embedded.
    const tensor_view& spm = require(tmoe_tokenizer_tensor);
    if (spm.type != dtype::u8 || spm.shape.ndim() != 1)
      fail(std::string("tensor '") + tmoe_tokenizer_tensor + "' must be a 1-D u8 tensor");
    if (const tensor_view* vmap = find(tmoe_vocabulary_map_tensor);
        vmap != nullptr && (vmap->type != dtype::u8 || vmap->shape.ndim() != 1 || vmap->byte_size == 0))
      fail(std::string("tensor '") + tmoe_vocabulary_map_tensor + "' must be a non-empty 1-D u8 tensor");
    for (const auto& q : metadata_.quantization.tensors) {
      const tensor_view& v = require(q);
      if (v.type != dtype::i8)
        fail("tensor '" + q + "' is listed in quantization.tensors but is not i8");
    }
  }

  void check_crc(const detail::tmoe_record& r, std::uint32_t computed) const {
    if (computed != r.crc)
      fail("tensor '" + r.name + "': checksum mismatch (stored " + hex(r.crc) + ", computed " + hex(computed) + ")");
  }

  std::uint32_t record_crc(const detail::tmoe_record& r) const {
    const tensor_view& v = tensors_.at(r.name);
    std::uint32_t c = detail::crc32c(v.data, v.byte_size);
    if (r.scales_size) c = detail::crc32c_extend(c, v.scales, r.scales_size);
    return c;
  }

  detail::mapped_file file_;
  detail::tmoe_header header_;
  nlohmann::json metadata_json_;
  tmoe_metadata metadata_;
  std::vector<detail::tmoe_record> records_;
  std::vector<std::string> names_;
  std::map<std::string, tensor_view> tensors_;
  std::map<std::string, std::size_t> index_;  // name -> records_
};

struct tmoe_write_options {
  bool overwrite = false;  // replace an existing file (atomically); otherwise refuse
};

// Streams tensors to a temporary file beside the destination (detail/atomic_file.hpp: unnamed
// where the system allows, so even SIGKILL leaves nothing); finish() appends metadata and the
// table, writes the header, fsyncs and renames. A writer destroyed before finish() (or one whose
// finish() threw) drops the temporary: the destination is never left partial.
class tmoe_writer {
 public:
  explicit tmoe_writer(std::string path, tmoe_write_options opts = {})
      : path_(std::move(path)), out_(path_, opts.overwrite) {
    const std::byte zeros[detail::tmoe_header_size] = {};
    write_all(zeros, sizeof zeros);  // placeholder, rewritten by finish()
  }
  tmoe_writer(const tmoe_writer&) = delete;
  tmoe_writer& operator=(const tmoe_writer&) = delete;

  void set_metadata(const tmoe_metadata& m) {
    try {
      m.validate();
    } catch (const config_error& e) {
      throw invalid_argument_error(std::string("tmoe_writer: invalid metadata: ") + e.what());
    }
    metadata_ = m;
    has_metadata_ = true;
  }

  // Writes the tensor's bytes now. i8 tensors need one f32 scale per row (rows = numel / last dim).
  void add_tensor(const std::string& name, dtype type, const tensor_shape& shape, const void* data,
                  std::size_t bytes, const float* scales = nullptr, std::size_t scale_count = 0) {
    check_open();
    if (name.empty() || name.size() > 0xFFFF)
      throw invalid_argument_error("tmoe_writer: tensor name must have 1..65535 bytes");
    if (names_.count(name)) throw invalid_argument_error("tmoe_writer: duplicate tensor '" + name + "'");
    std::uint64_t expected = 0;
    if (!detail::checked_byte_size(shape.data(), shape.ndim(), dtype_size(type), &expected) ||
        expected != bytes)
      throw invalid_argument_error("tmoe_writer: '" + name + "' byte size " + std::to_string(bytes) +
                                   " does not match shape " + shape.to_string());
    detail::tmoe_record r;
    r.name = name;
    r.type = type;
    r.shape = shape;
    r.data_size = bytes;
    r.data_offset = append_blob(data, bytes);
    r.crc = detail::crc32c(data, bytes);
    if (type == dtype::i8) {
      const std::uint64_t last = shape.ndim() ? shape[shape.ndim() - 1] : 0;
      const std::uint64_t rows = last ? expected / last : 0;
      if (shape.ndim() == 0 || scales == nullptr || scale_count != rows)
        throw invalid_argument_error("tmoe_writer: i8 tensor '" + name + "' needs " +
                                     std::to_string(rows) + " scales");
      r.scales_size = rows * 4;
      r.scales_offset = append_blob(scales, r.scales_size);
      r.crc = detail::crc32c_extend(r.crc, scales, r.scales_size);
    } else if (scales != nullptr || scale_count != 0) {
      throw invalid_argument_error("tmoe_writer: only i8 tensors take scales");
    }
    names_.insert(name);
    records_.push_back(std::move(r));
  }

  void add_tensor(const std::string& name, const tensor_view& v) {
    add_tensor(name, v.type, v.shape, v.data, static_cast<std::size_t>(v.byte_size), v.scales,
               static_cast<std::size_t>(v.scale_count));
  }

  // Embeds the tokenizer as the u8 tensor "tokenizer.sentencepiece".
  void add_sentencepiece(std::string_view model_bytes) {
    add_tensor(tmoe_tokenizer_tensor, dtype::u8, tensor_shape{model_bytes.size()},
               model_bytes.data(), model_bytes.size());
  }

  // Embeds a target-vocabulary shortlist (vmap.txt text) as the u8 tensor "tokenizer.vocabulary_map".
  void add_vocabulary_map(std::string_view text) {
    if (text.empty()) throw invalid_argument_error("tmoe_writer: the vocabulary map is empty");
    add_tensor(tmoe_vocabulary_map_tensor, dtype::u8, tensor_shape{text.size()}, text.data(), text.size());
  }

  void finish() {
    check_open();
    if (!has_metadata_) throw invalid_argument_error("tmoe_writer: set_metadata() was not called");
    if (!names_.count(tmoe_tokenizer_tensor))
      throw invalid_argument_error("tmoe_writer: add_sentencepiece() was not called");
    for (const auto& q : metadata_.quantization.tensors) {
      auto it = std::find_if(records_.begin(), records_.end(),
                             [&q](const detail::tmoe_record& r) { return r.name == q; });
      if (it == records_.end() || it->type != dtype::i8)
        throw invalid_argument_error("tmoe_writer: quantized tensor '" + q + "' is not an i8 tensor");
    }
    const std::string meta = nlohmann::json(metadata_).dump();
    std::string table;
    for (const auto& r : records_) detail::tmoe_encode_record(r, table);
    detail::tmoe_header h;
    h.data_offset = detail::tmoe_header_size;
    h.metadata_offset = out_.size();
    h.metadata_size = meta.size();
    write_all(meta.data(), meta.size());
    h.table_offset = out_.size();
    h.table_size = table.size();
    write_all(table.data(), table.size());
    h.tensor_count = static_cast<std::uint32_t>(records_.size());
    std::byte hb[detail::tmoe_header_size];
    detail::tmoe_encode_header(h, hb);
    h.header_crc = detail::tmoe_header_crc(hb, meta.data(), meta.size(), table.data(), table.size());
    detail::tmoe_encode_header(h, hb);
    out_.write_at(0, hb, sizeof hb);
    out_.commit();
  }

 private:
  void check_open() const {
    if (!out_.is_open()) throw invalid_argument_error("tmoe_writer: already finished or failed");
  }

  void write_all(const void* data, std::size_t n) { out_.write(data, n); }

  // Pads to 64 and writes; returns the offset relative to the data section (which starts at 64).
  std::uint64_t append_blob(const void* data, std::size_t n) {
    static const char zeros[tmoe_alignment] = {};
    const std::uint64_t pad = (tmoe_alignment - out_.size() % tmoe_alignment) % tmoe_alignment;
    write_all(zeros, static_cast<std::size_t>(pad));
    const std::uint64_t rel = out_.size() - detail::tmoe_header_size;
    if (n) write_all(data, n);
    return rel;
  }

  std::string path_;
  detail::atomic_output_file out_;
  tmoe_metadata metadata_;
  bool has_metadata_ = false;
  std::vector<detail::tmoe_record> records_;
  std::set<std::string> names_;
};

}  // namespace taskmoe
