#pragma once
// safetensors reader (single file or sharded index) and a small writer. The reader maps the file
// and hands out tensor_views into it; every offset is bounds- and overflow-checked first, as
// docs/checkpoint-format.md ("safetensors, as read here") requires.

#include <algorithm>  // std::sort
#include <cstddef>    // std::byte, std::size_t
#include <cstdint>    // std::uint64_t
#include <cstring>    // std::memcpy
#include <map>        // std::map
#include <memory>     // std::unique_ptr
#include <string>     // std::string
#include <utility>    // std::pair
#include <vector>     // std::vector

#include <nlohmann/json.hpp>

#include <taskmoe/detail/checked_math.hpp>
#include <taskmoe/detail/atomic_file.hpp>
#include <taskmoe/detail/mmap.hpp>
#include <taskmoe/error.hpp>
#include <taskmoe/tensor/dtype.hpp>
#include <taskmoe/tensor/tensor_view.hpp>

namespace taskmoe {

// One mapped .safetensors file.
class safetensors_file {
 public:
  static constexpr std::uint64_t max_header_size = 100u * 1000u * 1000u;  // 100 MB, as documented

  explicit safetensors_file(const std::string& path) : file_(path) { parse(); }

  const std::string& path() const noexcept { return file_.path(); }
  // Throws io_error when the file was modified since it was mapped (detail/mmap.hpp).
  void check_unchanged() const { file_.check_unchanged(); }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws format_error naming the file when the tensor is absent.
  const tensor_view& tensor(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw format_error(path(), "no tensor named '" + name + "'");
    return it->second;
  }
  const std::map<std::string, tensor_view>& tensors() const noexcept { return tensors_; }
  // The "__metadata__" object (string to string), or an empty object.
  const nlohmann::json& metadata() const noexcept { return metadata_; }

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw format_error(path(), problem); }

  void parse() {
    const std::uint64_t size = file_.size();
    if (size < 8) fail("truncated file: " + std::to_string(size) + " bytes, need at least 8");
    std::uint64_t n = 0;
    std::memcpy(&n, file_.data(), 8);
    if (n > max_header_size) fail("header size " + std::to_string(n) + " exceeds 100 MB");
    if (n > size - 8) fail("header size " + std::to_string(n) + " exceeds the file size");
    const char* h = reinterpret_cast<const char*>(file_.data() + 8);
    nlohmann::json j = nlohmann::json::parse(h, h + n, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) fail("header is not valid JSON");
    if (!j.is_object()) fail("header is not a JSON object");
    const std::byte* data = file_.data() + 8 + n;
    const std::uint64_t data_size = size - 8 - n;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& name = it.key();
      if (name == "__metadata__") {
        if (!it->is_object()) fail("__metadata__ is not an object");
        metadata_ = *it;
        continue;
      }
      const auto& e = *it;
      const std::string where = "tensor '" + name + "': ";
      if (!e.is_object()) fail(where + "entry is not an object");
      auto dt = e.find("dtype");
      auto sh = e.find("shape");
      auto off = e.find("data_offsets");
      if (dt == e.end() || !dt->is_string()) fail(where + "missing or non-string dtype");
      if (sh == e.end() || !sh->is_array()) fail(where + "missing or non-array shape");
      if (off == e.end() || !off->is_array() || off->size() != 2)
        fail(where + "data_offsets must be an array of two integers");
      const auto type = dtype_from_safetensors_name(dt->get<std::string>());
      if (!type) fail(where + "unsupported dtype '" + dt->get<std::string>() + "'");
      if (sh->size() > tensor_shape::max_dims)
        fail(where + "more than " + std::to_string(tensor_shape::max_dims) + " dimensions");
      std::uint64_t dims[tensor_shape::max_dims] = {};
      for (std::size_t i = 0; i < sh->size(); ++i) {
        if (!(*sh)[i].is_number_unsigned() && !((*sh)[i].is_number_integer() && (*sh)[i] >= 0))
          fail(where + "shape entries must be non-negative integers");
        dims[i] = (*sh)[i].get<std::uint64_t>();
      }
      for (const auto& o : *off)
        if (!o.is_number_unsigned() && !(o.is_number_integer() && o >= 0))
          fail(where + "data_offsets must be non-negative integers");
      const std::uint64_t begin = (*off)[0].get<std::uint64_t>();
      const std::uint64_t end = (*off)[1].get<std::uint64_t>();
      if (begin > end) fail(where + "data_offsets begin > end");
      if (end > data_size)
        fail(where + "data_offsets end " + std::to_string(end) + " is past the data size " +
             std::to_string(data_size));
      std::uint64_t expected = 0;
      if (!detail::checked_byte_size(dims, sh->size(), dtype_size(*type), &expected))
        fail(where + "integer overflow computing the byte size of the shape");
      if (expected != end - begin)
        fail(where + "byte size " + std::to_string(end - begin) + " does not match shape (" +
             std::to_string(expected) + " bytes expected)");
      tensor_view v;
      v.type = *type;
      v.shape = tensor_shape::from(dims, sh->size());
      v.data = data + begin;
      v.byte_size = end - begin;
      tensors_.emplace(name, v);
      if (end > begin) ranges.emplace_back(begin, end);
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].first < ranges[i - 1].second)
        fail("tensor data overlaps at byte " + std::to_string(ranges[i].first));
    if (metadata_.is_null()) metadata_ = nlohmann::json::object();
  }

  detail::mapped_file file_;
  std::map<std::string, tensor_view> tensors_;
  nlohmann::json metadata_;
};

// A set of tensors read from one safetensors file or from a sharded
// `*.safetensors.index.json` (`{"weight_map": {"tensor": "shard file"}}`, shards beside it).
class safetensors_archive {
 public:
  static safetensors_archive open_file(const std::string& path) {
    safetensors_archive a;
    a.files_.push_back(std::make_unique<safetensors_file>(path));
    for (const auto& kv : a.files_.back()->tensors()) a.index_.emplace(kv.first, 0);
    return a;
  }

  static safetensors_archive open_index(const std::string& index_path) {
    const detail::mapped_file f(index_path);
    const char* p = reinterpret_cast<const char*>(f.data());
    nlohmann::json j = nlohmann::json::parse(p, p + f.size(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw format_error(index_path, "not a JSON object");
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object())
      throw format_error(index_path, "missing or non-object 'weight_map'");
    const std::string dir = parent_dir(index_path);
    safetensors_archive a;
    std::map<std::string, std::size_t> shard_ids;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string())
        throw format_error(index_path, "weight_map['" + it.key() + "'] is not a string");
      const std::string shard = it->get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..")
        throw format_error(index_path, "shard name '" + shard + "' must be a plain file name");
      auto sid = shard_ids.find(shard);
      if (sid == shard_ids.end()) {
        a.files_.push_back(std::make_unique<safetensors_file>(dir + shard));
        sid = shard_ids.emplace(shard, a.files_.size() - 1).first;
      }
      if (!a.files_[sid->second]->contains(it.key()))
        throw format_error(dir + shard, "tensor '" + it.key() + "' listed in " + index_path +
                                            " is not in this shard");
      a.index_.emplace(it.key(), sid->second);
    }
    return a;
  }

  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const tensor_view& tensor(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end())
      throw format_error(files_.empty() ? std::string("safetensors") : files_[0]->path(),
                         "no tensor named '" + name + "'");
    return files_[it->second]->tensor(name);
  }
  // File the tensor lives in (for messages).
  const std::string& file_of(const std::string& name) const {
    return files_.at(index_.at(name))->path();
  }
  void check_unchanged() const {
    for (const auto& f : files_) f->check_unchanged();
  }
  std::vector<std::string> names() const {
    std::vector<std::string> r;
    r.reserve(index_.size());
    for (const auto& kv : index_) r.push_back(kv.first);
    return r;  // sorted (std::map order)
  }

 private:
  static std::string parent_dir(const std::string& path) {
    const auto slash = path.rfind('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
  }

  std::vector<std::unique_ptr<safetensors_file>> files_;
  std::map<std::string, std::size_t> index_;
};

// Writes a safetensors file (tests, fixture generation). Tensors are copied when added.
class safetensors_writer {
 public:
  void add(const std::string& name, dtype type, const tensor_shape& shape, const void* data,
           std::size_t bytes) {
    std::uint64_t expected = 0;
    if (!detail::checked_byte_size(shape.data(), shape.ndim(), dtype_size(type), &expected) ||
        expected != bytes)
      throw invalid_argument_error("safetensors_writer: '" + name + "' byte size " +
                                   std::to_string(bytes) + " does not match shape " +
                                   shape.to_string());
    if (entries_.count(name)) throw invalid_argument_error("safetensors_writer: duplicate '" + name + "'");
    const auto* p = static_cast<const std::byte*>(data);
    entries_[name] = entry{type, shape, std::vector<std::byte>(p, p + bytes)};
  }
  void add_f32(const std::string& name, const tensor_shape& shape, const std::vector<float>& v) {
    add(name, dtype::f32, shape, v.data(), v.size() * sizeof(float));
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  // Serialised bytes; the header is padded with spaces to a multiple of 8 like the reference.
  std::vector<std::byte> bytes() const {
    nlohmann::json h = nlohmann::json::object();
    if (!metadata_.empty()) h["__metadata__"] = metadata_;
    std::uint64_t off = 0;
    for (const auto& kv : entries_) {
      std::vector<std::uint64_t> dims(kv.second.shape.data(),
                                      kv.second.shape.data() + kv.second.shape.ndim());
      const std::uint64_t n = kv.second.data.size();
      h[kv.first] = {{"dtype", std::string(safetensors_dtype_name(kv.second.type))},
                     {"shape", dims},
                     {"data_offsets", {off, off + n}}};
      off += n;
    }
    std::string hs = h.dump();
    while (hs.size() % 8 != 0) hs.push_back(' ');
    std::vector<std::byte> out(8 + hs.size());
    const std::uint64_t n = hs.size();
    std::memcpy(out.data(), &n, 8);
    std::memcpy(out.data() + 8, hs.data(), hs.size());
    for (const auto& kv : entries_) out.insert(out.end(), kv.second.data.begin(), kv.second.data.end());
    return out;
  }

  // Replaces `path` atomically (detail/atomic_file.hpp): complete or untouched.
  void write(const std::string& path) const {
    const auto b = bytes();
    detail::atomic_output_file out(path, /*overwrite=*/true);
    out.write(b.data(), b.size());
    out.commit();
  }

 private:
  struct entry {
    dtype type;
    tensor_shape shape;
    std::vector<std::byte> data;
  };
  std::map<std::string, entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace taskmoe
