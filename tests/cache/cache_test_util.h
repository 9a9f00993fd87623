// Helpers shared by the cache tests: scratch directories, deterministic records, raw SQLite
// access to damage files behind the store's back, and a warning collector.
#pragma once

#include "cache/store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace attnjit::cache::testing {

// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string base = std::filesystem::temp_directory_path().string() + "/attnjit-cache-XXXXXX";
    std::vector<char> buf(base.begin(), base.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Concatenates strings and integers: cat("k", 3, "-", 4) == "k3-4".
inline void append_part(std::string& out, std::string_view s) { out.append(s); }
inline void append_part(std::string& out, long long v) { out.append(std::to_string(v)); }
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::string out;
  (append_part(out, parts), ...);
  return out;
}

// Collects the store's diagnostics.
class Warnings {
 public:
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view m) {
      std::lock_guard lock(mu_);
      list_.emplace_back(m);
    };
  }
  std::vector<std::string> list() const {
    std::lock_guard lock(mu_);
    return list_;
  }
  size_t size() const { return list().size(); }
  bool contains(std::string_view needle) const {
    for (const std::string& w : list()) {
      if (w.find(needle) != std::string::npos) return true;
    }
    return false;
  }
  std::string joined() const {
    std::string out;
    for (const std::string& w : list()) out += w + "\n";
    return out;
  }
  void clear() {
    std::lock_guard lock(mu_);
    list_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> list_;
};

inline OpenOptions options(Warnings& w, bool read_only = false) {
  OpenOptions o;
  o.read_only = read_only;
  o.warn = w.sink();
  return o;
}

// splitmix64: deterministic bytes from a seed, so a checker can regenerate what a writer wrote.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline std::string bytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t state = seed;
  for (size_t i = 0; i < n; i += 8) {
    state = mix(state);
    for (size_t j = 0; j < 8 && i + j < n; ++j) out[i + j] = static_cast<char>(state >> (8 * j));
  }
  return out;
}

// A binary whose every field derives from (key, size, seed).
inline BinaryRecord make_binary(const std::string& key, size_t cubin_size, uint64_t seed) {
  BinaryRecord r;
  r.key = key;
  r.spec = "attn;fam=prefill;q=bf16;kv=bf16;dqk=128;dv=128;kv_storage=paged;page=16;causal=1";
  r.tile = "bn64.wm4.wn1.st2.sp1";
  r.arch = "sm_90a";
  r.codegen_version = "cg-" + std::to_string(seed % 7);
  r.nvrtc_version = "12.4";
  r.compile_options = "--gpu-architecture=sm_90a -std=c++17";
  r.cubin = bytes(cubin_size, seed);
  r.ptx = (seed % 3 == 0) ? std::string() : bytes(cubin_size / 4 + 1, seed ^ 0x5555);
  r.compile_log = "log of " + key;
  r.registers = static_cast<int>(seed % 255);
  r.shared_bytes = static_cast<int>(seed % 100000);
  r.spill_bytes = static_cast<int>(seed % 17);
  r.compile_ms = static_cast<double>(seed % 1000) / 8.0;
  r.tool_version = "attnjit 0.1.0";
  r.created_unix = 1700000000 + static_cast<int64_t>(seed % 1000);
  return r;
}

inline TuningRecord make_candidate(const std::string& tuning_key, const std::string& tile,
                                   double median_us) {
  TuningRecord r;
  r.tuning_key = tuning_key;
  r.tile = tile;
  r.spec = "attn;fam=decode;q=bf16;kv=bf16;dqk=128;dv=128;kv_storage=paged;page=16;causal=1";
  r.median_us = median_us;
  r.status = "ok";
  r.device_name = "NVIDIA H100 80GB HBM3";
  r.arch = "sm_90a";
  r.sm_count = 132;
  r.bucket = "decode:b8:kv4096";
  r.tool_version = "attnjit 0.1.0";
  r.created_unix = 1700000123;
  return r;
}

inline WinnerRecord make_winner(const std::string& tuning_key, const std::string& tile,
                                double median_us) {
  WinnerRecord r;
  r.tuning_key = tuning_key;
  r.tile = tile;
  r.spec = "attn;fam=decode;q=bf16;kv=bf16;dqk=128;dv=128;kv_storage=paged;page=16;causal=1";
  r.median_us = median_us;
  r.device_name = "NVIDIA H100 80GB HBM3";
  r.arch = "sm_90a";
  r.sm_count = 132;
  r.bucket = "decode:b8:kv4096";
  r.tool_version = "attnjit 0.1.0";
  r.created_unix = 1700000456;
  return r;
}

// Every field a put stores, compared (the read-only derived fields are checked separately).
inline bool same_binary(const BinaryRecord& a, const BinaryRecord& b) {
  return a.key == b.key && a.spec == b.spec && a.tile == b.tile && a.arch == b.arch &&
         a.codegen_version == b.codegen_version && a.nvrtc_version == b.nvrtc_version &&
         a.compile_options == b.compile_options && a.cubin == b.cubin && a.ptx == b.ptx &&
         a.compile_log == b.compile_log && a.registers == b.registers &&
         a.shared_bytes == b.shared_bytes && a.spill_bytes == b.spill_bytes &&
         a.compile_ms == b.compile_ms && a.tool_version == b.tool_version &&
         a.created_unix == b.created_unix;
}

// --- raw SQLite, behind the store's back ---

class RawDb {
 public:
  explicit RawDb(const std::string& path, int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
      std::string m = sqlite3_errmsg(db_);
      sqlite3_close(db_);
      throw std::runtime_error("raw open: " + m);
    }
    sqlite3_busy_timeout(db_, 10000);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err != nullptr ? err : "?";
      sqlite3_free(err);
      throw std::runtime_error(std::string("raw exec: ") + sql + ": " + m);
    }
  }
  // First column of the first row, as an integer; `text` is bound to ?1 if given.
  int64_t integer(const char* sql, const std::string* text = nullptr) {
    sqlite3_stmt* s = prepare(sql);
    if (text != nullptr) sqlite3_bind_text(s, 1, text->data(), (int)text->size(), SQLITE_TRANSIENT);
    int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return v;
  }
  std::string blob(const char* sql, const std::string& key) {
    sqlite3_stmt* s = prepare(sql);
    sqlite3_bind_text(s, 1, key.data(), (int)key.size(), SQLITE_TRANSIENT);
    std::string out;
    if (sqlite3_step(s) == SQLITE_ROW) {
      const char* p = static_cast<const char*>(sqlite3_column_blob(s, 0));
      out.assign(p != nullptr ? p : "", (size_t)sqlite3_column_bytes(s, 0));
    }
    sqlite3_finalize(s);
    return out;
  }
  // Runs `sql` with ?1 = blob, ?2 = text.
  void update_blob(const char* sql, const std::string& value, const std::string& key) {
    sqlite3_stmt* s = prepare(sql);
    sqlite3_bind_blob(s, 1, value.data(), (int)value.size(), SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, key.data(), (int)key.size(), SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) throw std::runtime_error(std::string("raw update: ") + sql);
  }

 private:
  sqlite3_stmt* prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK) {
      throw std::runtime_error(std::string("raw prepare: ") + sql + ": " + sqlite3_errmsg(db_));
    }
    return s;
  }
  sqlite3* db_ = nullptr;
};

// --- files ---

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

inline bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Names in a directory, sorted.
inline std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Files in `dir` whose name starts with `prefix`.
inline std::vector<std::string> with_prefix(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const std::string& n : list_dir(dir)) {
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  return out;
}

} // namespace attnjit::cache::testing
