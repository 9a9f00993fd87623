#include "cache/store.h"

#include "cache/schema.h"
#include "cache/sqlite.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>

#include <fmt/format.h>

namespace attnjit::cache {

using detail::Connection;
using detail::SqliteError;
using detail::Statement;

namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// SQL. Every statement is a constant; values are bound.

// The metadata columns of binaries, in the order read_binary_meta expects (18 columns).
#define ATTNJIT_BINARY_COLUMNS                                                                     \
  "b.key, b.spec, b.tile, b.arch, b.codegen_version, b.nvrtc_version, b.compile_options, "         \
  "b.compile_log, b.registers, b.shared_bytes, b.spill_bytes, b.compile_ms, b.tool_version, "      \
  "b.created_unix, b.cubin_size, b.cubin_xxh3, b.ptx_size, b.ptx_xxh3"
constexpr int kBinaryColumns = 18;

constexpr const char kSelectBinary[] =
    "SELECT " ATTNJIT_BINARY_COLUMNS ", bl.key IS NOT NULL, bl.cubin, bl.ptx "
    "FROM binaries AS b LEFT JOIN binary_blobs AS bl ON bl.key = b.key WHERE b.key = ?1";
constexpr const char kListBinaries[] =
    "SELECT " ATTNJIT_BINARY_COLUMNS " FROM binaries AS b ORDER BY b.key";
constexpr const char kListBinariesWithBlobs[] =
    "SELECT " ATTNJIT_BINARY_COLUMNS ", bl.key IS NOT NULL, bl.cubin, bl.ptx "
    "FROM binaries AS b LEFT JOIN binary_blobs AS bl ON bl.key = b.key ORDER BY b.key";
#undef ATTNJIT_BINARY_COLUMNS

constexpr const char kInsertBinary[] =
    "INSERT OR REPLACE INTO binaries (key, spec, tile, arch, codegen_version, nvrtc_version, "
    "compile_options, compile_log, registers, shared_bytes, spill_bytes, compile_ms, "
    "tool_version, created_unix, cubin_size, cubin_xxh3, ptx_size, ptx_xxh3) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";
constexpr const char kInsertBlob[] =
    "INSERT OR REPLACE INTO binary_blobs (key, cubin, ptx) VALUES (?1, ?2, ?3)";
constexpr const char kDeleteBinary[] = "DELETE FROM binaries WHERE key = ?1";
constexpr const char kDeleteBlob[] = "DELETE FROM binary_blobs WHERE key = ?1";

#define ATTNJIT_BINARY_FILTER                                                                      \
  "(?1 IS NULL OR arch = ?1) AND (?2 IS NULL OR tool_version = ?2) AND "                           \
  "(?3 IS NULL OR codegen_version = ?3) AND (?4 IS NULL OR created_unix < ?4)"
constexpr const char kEraseBlobsByFilter[] =
    "DELETE FROM binary_blobs WHERE key IN (SELECT key FROM binaries WHERE " ATTNJIT_BINARY_FILTER
    ")";
constexpr const char kEraseBinariesByFilter[] = "DELETE FROM binaries WHERE " ATTNJIT_BINARY_FILTER;
#undef ATTNJIT_BINARY_FILTER

constexpr const char kOrphanBlobs[] =
    "SELECT key FROM binary_blobs WHERE key NOT IN (SELECT key FROM binaries) ORDER BY key";

constexpr const char kInsertCandidate[] =
    "INSERT OR REPLACE INTO tuning_candidates (tuning_key, tile, spec, median_us, status, "
    "device_name, arch, sm_count, bucket, tool_version, created_unix) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
constexpr const char kSelectCandidates[] =
    "SELECT tuning_key, tile, spec, median_us, status, device_name, arch, sm_count, bucket, "
    "tool_version, created_unix FROM tuning_candidates WHERE tuning_key = ?1 ORDER BY tile";
constexpr const char kInsertWinner[] =
    "INSERT OR REPLACE INTO tuning_winners (tuning_key, tile, spec, median_us, device_name, arch, "
    "sm_count, bucket, tool_version, created_unix) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
#define ATTNJIT_WINNER_COLUMNS                                                                     \
  "tuning_key, tile, spec, median_us, device_name, arch, sm_count, bucket, tool_version, "         \
  "created_unix"
constexpr const char kSelectWinner[] =
    "SELECT " ATTNJIT_WINNER_COLUMNS " FROM tuning_winners WHERE tuning_key = ?1";
constexpr const char kListWinners[] =
    "SELECT " ATTNJIT_WINNER_COLUMNS " FROM tuning_winners ORDER BY tuning_key";
#undef ATTNJIT_WINNER_COLUMNS

#define ATTNJIT_TUNING_FILTER                                                                      \
  "(?1 IS NULL OR tuning_key = ?1) AND (?2 IS NULL OR arch = ?2) AND "                             \
  "(?3 IS NULL OR device_name = ?3) AND (?4 IS NULL OR tool_version = ?4) AND "                    \
  "(?5 IS NULL OR created_unix < ?5)"
constexpr const char kEraseCandidates[] =
    "DELETE FROM tuning_candidates WHERE " ATTNJIT_TUNING_FILTER;
constexpr const char kEraseWinners[] = "DELETE FROM tuning_winners WHERE " ATTNJIT_TUNING_FILTER;
#undef ATTNJIT_TUNING_FILTER

constexpr const char kCountBinaries[] = "SELECT count(*) FROM binaries";
constexpr const char kSumCubin[] = "SELECT coalesce(sum(cubin_size), 0) FROM binaries";
constexpr const char kSumPtx[] = "SELECT coalesce(sum(ptx_size), 0) FROM binaries";
constexpr const char kCountCandidates[] = "SELECT count(*) FROM tuning_candidates";
constexpr const char kCountWinners[] = "SELECT count(*) FROM tuning_winners";

constexpr const char kApplicationIdQuery[] = "PRAGMA application_id";
constexpr const char kUserVersionQuery[] = "PRAGMA user_version";
constexpr const char kCountSchemaObjects[] = "SELECT count(*) FROM sqlite_master";
constexpr const char kHasTable[] =
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1";
constexpr const char kQuickCheck[] = "PRAGMA quick_check";
constexpr const char kJournalWal[] = "PRAGMA journal_mode = WAL";
constexpr const char kJournalDelete[] = "PRAGMA journal_mode = DELETE";
constexpr const char kSynchronousNormal[] = "PRAGMA synchronous = NORMAL";
constexpr const char kJournalSizeLimit[] = "PRAGMA journal_size_limit = 67108864";
constexpr const char kBegin[] = "BEGIN IMMEDIATE";
constexpr const char kBeginRead[] = "BEGIN";
constexpr const char kCommit[] = "COMMIT";
constexpr const char kVacuum[] = "VACUUM";
constexpr const char kCheckpointTruncate[] = "PRAGMA wal_checkpoint(TRUNCATE)";
constexpr const char kVacuumInto[] = "VACUUM INTO ?1";

// ---------------------------------------------------------------------------------------------
// Helpers.

std::string xxh3_raw(std::string_view bytes) {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  return std::string(reinterpret_cast<const char*>(c.digest), sizeof(c.digest));
}

std::string to_hex(std::string_view raw) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

int64_t now_unix() { return static_cast<int64_t>(std::time(nullptr)); }

bool path_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

void default_warn(std::string_view message) {
  std::fprintf(stderr, "attnjit cache: %.*s\n", static_cast<int>(message.size()), message.data());
}

// Sleeps a little longer on each attempt (1 ms doubling to 100 ms), with jitter so that
// processes that collided do not collide again in lockstep.
void backoff(int attempt) {
  thread_local std::minstd_rand rng(static_cast<unsigned>(
      ::getpid() ^ std::hash<std::thread::id>()(std::this_thread::get_id()) ^
      static_cast<unsigned>(Clock::now().time_since_epoch().count())));
  int base = std::min(100, 1 << std::min(attempt, 7));
  std::uniform_int_distribution<int> jitter(base / 2, base + base / 2 + 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
}

// "file:" URI for sqlite3_open_v2 with SQLITE_OPEN_URI: everything but unreserved characters
// and '/' percent-encoded, so that '?', '#' and '%' in a path stay part of the path.
std::string file_uri(const std::string& path, bool immutable) {
  std::string out = "file:";
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  out += immutable ? "?mode=ro&immutable=1" : "?mode=ro";
  return out;
}

// What a file turned out to be on open.
enum class Kind { fresh, ours, newer, bad };
struct Classified {
  Kind kind = Kind::bad;
  int64_t user_version = 0;
  std::string reason; // for bad
};

// Decides whether the file behind `c` is an attnjit cache. Damage is a verdict; lock contention
// and other failures are thrown (SqliteError).
Classified classify(Connection& c, bool quick_check) {
  // One read transaction, so that every answer comes from the same snapshot (a file being
  // created by another process must not look half made).
  struct EndRead {
    Connection& c;
    ~EndRead() { c.rollback_quietly(); }
  };
  Classified out;
  try {
    c.exec(kBeginRead);
    EndRead end{c};
    int64_t app = c.query_int(kApplicationIdQuery);
    out.user_version = c.query_int(kUserVersionQuery);
    int64_t objects = c.query_int(kCountSchemaObjects);
    if (app != kApplicationId) {
      if (app == 0 && objects == 0) {
        out.kind = Kind::fresh;
        return out;
      }
      out.reason = fmt::format("not an attnjit cache: application_id 0x{:08x}, {} schema objects",
                               static_cast<uint32_t>(app), objects);
      return out;
    }
    if (out.user_version > kSchemaVersion) {
      out.kind = Kind::newer;
      return out;
    }
    if (out.user_version == kSchemaVersion) {
      for (std::string_view table : detail::required_tables()) {
        Statement s = c.prepare(kHasTable);
        s.bind_text(1, table);
        if (!s.step() || s.integer(0) != 1) {
          out.reason = fmt::format("schema version {} without table {}", out.user_version, table);
          return out;
        }
      }
    }
    if (quick_check) {
      Statement s = c.prepare(kQuickCheck);
      std::string problems;
      int n = 0;
      while (s.step()) {
        std::string row = s.text(0);
        if (row == "ok") continue;
        if (n++ < 3) problems += (problems.empty() ? "" : "; ") + row;
      }
      if (n > 0) {
        out.reason = fmt::format("quick_check found {} problem(s): {}", n, problems);
        return out;
      }
    }
    out.kind = Kind::ours;
    return out;
  } catch (const SqliteError& e) {
    if (!e.corrupt()) throw;
    out.kind = Kind::bad;
    out.reason = e.what();
    return out;
  }
}

// Reads the 18 metadata columns (see ATTNJIT_BINARY_COLUMNS). Returns the stored ptx checksum.
std::string read_binary_meta(const Statement& s, BinaryRecord& r) {
  r.key = s.text(0);
  r.spec = s.text(1);
  r.tile = s.text(2);
  r.arch = s.text(3);
  r.codegen_version = s.text(4);
  r.nvrtc_version = s.text(5);
  r.compile_options = s.text(6);
  r.compile_log = s.text(7);
  r.registers = static_cast<int>(s.integer(8));
  r.shared_bytes = static_cast<int>(s.integer(9));
  r.spill_bytes = static_cast<int>(s.integer(10));
  r.compile_ms = s.real(11);
  r.tool_version = s.text(12);
  r.created_unix = s.integer(13);
  r.cubin_size = s.integer(14);
  r.cubin_xxh3 = to_hex(s.blob(15));
  r.ptx_size = s.integer(16);
  return to_hex(s.blob(17));
}

// Reads metadata and blobs (21 columns) and checks them. Returns the problem, empty if none.
std::string read_binary_full(const Statement& s, BinaryRecord& r) {
  std::string ptx_xxh3 = read_binary_meta(s, r);
  if (s.integer(kBinaryColumns) == 0) return "metadata without blob row";
  r.cubin = s.blob(kBinaryColumns + 1);
  r.ptx = s.blob(kBinaryColumns + 2);
  if (static_cast<int64_t>(r.cubin.size()) != r.cubin_size)
    return fmt::format("cubin is {} bytes, metadata says {}", r.cubin.size(), r.cubin_size);
  if (to_hex(xxh3_raw(r.cubin)) != r.cubin_xxh3) return "cubin checksum mismatch";
  if (static_cast<int64_t>(r.ptx.size()) != r.ptx_size)
    return fmt::format("ptx is {} bytes, metadata says {}", r.ptx.size(), r.ptx_size);
  if (to_hex(xxh3_raw(r.ptx)) != ptx_xxh3) return "ptx checksum mismatch";
  return {};
}

void bind_median(Statement& s, int index, double median_us) {
  if (std::isfinite(median_us)) {
    s.bind_real(index, median_us);
  } else {
    s.bind_null(index);
  }
}

double read_median(const Statement& s, int col) {
  return s.is_null(col) ? std::nan("") : s.real(col);
}

TuningRecord read_candidate(const Statement& s) {
  TuningRecord r;
  r.tuning_key = s.text(0);
  r.tile = s.text(1);
  r.spec = s.text(2);
  r.median_us = read_median(s, 3);
  r.status = s.text(4);
  r.device_name = s.text(5);
  r.arch = s.text(6);
  r.sm_count = static_cast<int>(s.integer(7));
  r.bucket = s.text(8);
  r.tool_version = s.text(9);
  r.created_unix = s.integer(10);
  return r;
}

WinnerRecord read_winner(const Statement& s) {
  WinnerRecord r;
  r.tuning_key = s.text(0);
  r.tile = s.text(1);
  r.spec = s.text(2);
  r.median_us = read_median(s, 3);
  r.device_name = s.text(4);
  r.arch = s.text(5);
  r.sm_count = static_cast<int>(s.integer(6));
  r.bucket = s.text(7);
  r.tool_version = s.text(8);
  r.created_unix = s.integer(9);
  return r;
}

// Runs every pending migration inside one BEGIN IMMEDIATE transaction. Another process may have
// migrated (or created) the file since it was classified: the state is read again under the lock.
void migrate(Connection& c) {
  c.exec(kBegin);
  try {
    int64_t app = c.query_int(kApplicationIdQuery);
    int64_t version = c.query_int(kUserVersionQuery);
    int64_t objects = c.query_int(kCountSchemaObjects);
    if (app == kApplicationId && version >= kSchemaVersion) {
      c.exec(kCommit);
      return;
    }
    if (app != kApplicationId && !(app == 0 && objects == 0)) {
      // Replaced under us by something that is not ours: let the caller classify it again.
      throw SqliteError(SQLITE_BUSY, "the file changed while it was being opened");
    }
    int64_t from = app == kApplicationId ? version : 0;
    for (const detail::Migration& m : detail::migrations()) {
      if (m.from_version < from) continue;
      for (const char* sql : m.statements) c.exec(sql);
    }
    c.exec(kCommit);
  } catch (...) {
    c.rollback_quietly();
    throw;
  }
}

} // namespace

std::string checksum_hex(std::string_view bytes) { return to_hex(xxh3_raw(bytes)); }

// ---------------------------------------------------------------------------------------------
// Store::Impl. Every member function expects `mu` to be held by the caller.

struct Store::Impl {
  std::string path;
  OpenOptions opts;
  std::mutex mu;
  std::unique_ptr<Connection> conn; // null: closed for a fork, or nothing to read
  pid_t pid = 0;                    // the process that opened conn
  dev_t dev = 0;                    // the file conn was opened on
  ino_t ino = 0;
  StoreState state = StoreState::ready;
  std::string moved_aside;
  std::unordered_set<std::string> reported; // damaged keys already reported (read-only stores)

  void warn(const std::string& message) {
    if (opts.warn) {
      opts.warn(message);
    } else {
      default_warn(message);
    }
  }

  // --- opening ---

  void open_connection(bool first) {
    if (opts.read_only) {
      open_read_only(first);
    } else {
      open_writable(first);
    }
  }

  void open_writable(bool first) {
    std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(parent, ec);
      if (ec) {
        throw Error(fmt::format("cannot create the cache directory {}: {}", parent.string(),
                                ec.message()));
      }
    }
    const auto deadline = Clock::now() + std::chrono::milliseconds(opts.write_timeout_ms);
    int moves = 0, cantopen = 0;
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<Connection> c;
      // Every way out of this iteration but success closes without a checkpoint: the connection
      // may be to a damaged file, or to one renamed aside since, whose checkpoint would write
      // into the wrong file (SQLite finds the -wal and -shm by name).
      struct CloseQuietly {
        std::unique_ptr<Connection>& c;
        ~CloseQuietly() {
          if (c) c->close_without_checkpoint();
        }
      } close_quietly{c};
      try {
        // The file's identity before and after: SQLite opened the file seen in both.
        struct stat before;
        if (::stat(path.c_str(), &before) != 0) {
          if (errno != ENOENT) {
            throw Error(fmt::format("cannot open cache {}: {}", path, std::strerror(errno)));
          }
          // Create it empty (schema version 0), then open what is there.
          Connection::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
          continue;
        }
        c = Connection::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
        c->busy_timeout(opts.busy_timeout_ms);
        Classified k = classify(*c, first && opts.verify_on_open);
        if (!same_identity(before)) {
          backoff(0);
          continue; // replaced while we looked: look again
        }
        if (k.kind == Kind::bad) {
          c->close_without_checkpoint(); // the file goes aside as it was found
          c.reset();
          if (moves++ >= 3) {
            throw Error(fmt::format("cannot open cache {}: {}", path, k.reason));
          }
          move_aside(k.reason);
          continue;
        }
        if (k.kind == Kind::newer) {
          state = StoreState::newer;
          warn(fmt::format("{} has schema version {}, newer than this build's {}: it is left "
                           "untouched, every lookup misses and nothing is written to it",
                           path, k.user_version, kSchemaVersion));
          return;
        }
        {
          Statement s = c->prepare(kJournalWal);
          std::string mode = s.step() ? s.text(0) : std::string();
          if (mode != "wal" && first) {
            warn(fmt::format("{}: WAL journal mode unavailable (mode is '{}'); concurrent "
                             "writers will wait longer",
                             path, mode));
          }
        }
        c->exec(kSynchronousNormal);
        c->exec(kJournalSizeLimit);
        if (k.kind == Kind::fresh || k.user_version < kSchemaVersion) migrate(*c);
        if (!same_identity(before)) continue;
        conn = std::move(c);
        pid = ::getpid();
        dev = before.st_dev;
        ino = before.st_ino;
        state = StoreState::ready;
        return;
      } catch (const SqliteError& e) {
        // Busy, or the file was moved aside (and perhaps already replaced) between the stat and
        // the open: try again. A lasting CANTOPEN (permissions) fails after a few tries.
        bool vanished = e.primary() == SQLITE_CANTOPEN && ++cantopen < 10;
        if ((e.busy() || vanished) && Clock::now() < deadline) {
          backoff(attempt);
          continue;
        }
        if (e.corrupt() && moves++ < 3) {
          if (c) c->close_without_checkpoint();
          c.reset();
          move_aside(e.what());
          continue;
        }
        throw Error(fmt::format("cannot open cache {}: {}", path, e.what()));
      }
    }
  }

  // Whether `path` still names the file `before` describes.
  bool same_identity(const struct stat& before) const {
    struct stat now;
    return ::stat(path.c_str(), &now) == 0 && now.st_dev == before.st_dev &&
           now.st_ino == before.st_ino;
  }

  // Whether `path` still names the file the connection was opened on.
  bool connection_file_current() const {
    struct stat now;
    return ::stat(path.c_str(), &now) == 0 && now.st_dev == dev && now.st_ino == ino;
  }

  // Closes the connection: abandoned if it came from another process, closed without a
  // checkpoint if its file has been renamed or replaced (its checkpoint would take the new
  // file's -wal), closed normally otherwise.
  void drop_connection() noexcept {
    if (!conn) return;
    if (pid != ::getpid()) {
      conn->abandon();
    } else if (opts.read_only || !connection_file_current()) {
      conn->close_without_checkpoint();
    }
    conn.reset();
  }

  void open_read_only(bool first) {
    drop_connection();
    if (!path_exists(path)) {
      state = StoreState::unavailable;
      if (first) warn(fmt::format("{} does not exist; read-only cache treated as empty", path));
      return;
    }
    for (bool immutable : {false, true}) {
      try {
        auto c = Connection::open(file_uri(path, immutable),
                                  SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX);
        c->busy_timeout(opts.busy_timeout_ms);
        Classified k = classify(*c, first && opts.verify_on_open);
        switch (k.kind) {
        case Kind::bad:
          state = StoreState::unavailable;
          warn(fmt::format("{} is not a usable attnjit cache ({}); read-only, so it is left as "
                           "it is and treated as empty",
                           path, k.reason));
          return;
        case Kind::newer:
          state = StoreState::newer;
          warn(fmt::format("{} has schema version {}, newer than this build's {}: every lookup "
                           "in it misses",
                           path, k.user_version, kSchemaVersion));
          return;
        case Kind::fresh:
          state = StoreState::unavailable;
          if (first) warn(fmt::format("{} is empty; read-only cache treated as empty", path));
          return;
        case Kind::ours:
          if (k.user_version < kSchemaVersion) {
            state = StoreState::unavailable;
            warn(fmt::format("{} has the older schema version {} and is read-only, so it cannot "
                             "be migrated; treated as empty",
                             path, k.user_version));
            return;
          }
          {
            struct stat st;
            if (::stat(path.c_str(), &st) == 0) {
              dev = st.st_dev;
              ino = st.st_ino;
            }
          }
          conn = std::move(c);
          pid = ::getpid();
          state = StoreState::ready;
          return;
        }
      } catch (const SqliteError& e) {
        // A WAL file in a directory we cannot write has no -shm to share: read it as immutable,
        // which is exact as long as there is no -wal holding committed pages.
        bool cannot_share = e.primary() == SQLITE_CANTOPEN || e.primary() == SQLITE_READONLY;
        if (!immutable && cannot_share && !path_exists(path + "-wal")) continue;
        state = StoreState::unavailable;
        warn(fmt::format("cannot read {}: {}; read-only cache treated as empty", path, e.what()));
        return;
      }
    }
  }

  // Renames a damaged or foreign file (and its -wal/-shm/-journal) aside. Processes that find the
  // same bad file at once take turns through a lock file; each looks again under the lock and
  // renames only what is still bad, so a fresh cache that another process just made is kept.
  void move_aside(const std::string& reason) {
    std::string lock_path = path + ".recovery-lock";
    int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      while (::flock(fd, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
    struct Unlock {
      int fd;
      ~Unlock() {
        if (fd >= 0) ::close(fd);
      }
    } unlock{fd};

    std::string why = reason;
    bool bad = false;
    if (path_exists(path)) {
      std::unique_ptr<Connection> c;
      try {
        c = Connection::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
        c->busy_timeout(opts.busy_timeout_ms);
        Classified k = classify(*c, true);
        bad = k.kind == Kind::bad;
        if (bad) why = k.reason;
      } catch (const SqliteError& e) {
        bad = e.corrupt();
        if (bad) why = e.what();
      }
      if (c) c->close_without_checkpoint();
    }
    if (!bad) return;

    std::string aside = fmt::format("{}.corrupt-{}-{}", path, now_unix(), ::getpid());
    for (int n = 1; path_exists(aside); ++n) {
      aside = fmt::format("{}.corrupt-{}-{}.{}", path, now_unix(), ::getpid(), n);
    }
    // The companions first: while the damaged file is still in place, a -wal or -shm next to it
    // can only be its own; once it is gone, a new cache may create new ones at once.
    for (const char* suffix : {"-wal", "-shm", "-journal"}) {
      std::string from = path + suffix;
      if (path_exists(from)) std::rename(from.c_str(), (aside + suffix).c_str());
    }
    if (std::rename(path.c_str(), aside.c_str()) != 0) {
      throw Error(fmt::format("{} is not a usable attnjit cache ({}) and could not be moved "
                              "aside: {}",
                              path, why, std::strerror(errno)));
    }
    moved_aside = aside;
    warn(fmt::format("{} is not a usable attnjit cache ({}); moved it aside to {} and started a "
                     "fresh cache",
                     path, why, aside));
  }

  // Closes (or, if it came from another process, abandons) the connection before a fork.
  void close_for_fork() noexcept {
    if (!conn) return;
    if (pid == ::getpid()) {
      conn->close_without_checkpoint();
    } else {
      conn->abandon();
    }
    conn.reset();
  }

  // Makes sure the connection belongs to this process and to the file now at `path` (another
  // process may have moved a damaged file aside), and is open when the state wants one.
  void ensure_connection() {
    if (conn && (pid != ::getpid() || !connection_file_current())) drop_connection();
    if (!conn && state == StoreState::ready) open_connection(false);
  }

  // After SQLite reported corruption during use.
  void recover_from_corruption(const std::string& what) {
    if (conn && pid == ::getpid()) conn->close_without_checkpoint();
    drop_connection();
    if (opts.read_only) {
      state = StoreState::unavailable;
      warn(fmt::format("{}: {}; read-only cache treated as empty from now on", path, what));
      return;
    }
    move_aside(what);
    open_writable(false);
  }

  // --- reads ---

  // Runs `fn(conn)` and returns its value, or `miss` (after reporting) on any failure.
  template <class T, class F>
  T read(const char* what, T miss, F&& fn) {
    try {
      ensure_connection();
    } catch (const Error& e) {
      warn(fmt::format("{}: {}: {}", path, what, e.what()));
      return miss;
    }
    if (state != StoreState::ready || !conn) return miss;
    for (int attempt = 0;; ++attempt) {
      try {
        return fn(*conn);
      } catch (const SqliteError& e) {
        if (e.busy() && attempt < 5) {
          backoff(attempt);
          continue;
        }
        warn(fmt::format("{}: {} failed: {}", path, what, e.what()));
        if (e.corrupt()) {
          try {
            recover_from_corruption(e.what());
          } catch (const Error& e2) {
            warn(e2.what());
          }
        }
        return miss;
      }
    }
  }

  // --- writes ---

  void check_writable(const char* what) {
    if (opts.read_only) throw Error(fmt::format("{}: {}: the store is read-only", path, what));
    if (state == StoreState::newer) {
      throw Error(fmt::format("{}: {}: the file has a newer schema than this build's {}", path,
                              what, kSchemaVersion));
    }
  }

  // Runs `fn(conn)` inside BEGIN IMMEDIATE ... COMMIT (or bare, for statements that cannot run in
  // a transaction), retrying with backoff while the file is locked, until write_timeout_ms.
  template <class F>
  void write(const char* what, F&& fn, bool transaction = true) {
    check_writable(what);
    const auto deadline = Clock::now() + std::chrono::milliseconds(opts.write_timeout_ms);
    bool recovered = false;
    for (int attempt = 0;; ++attempt) {
      try {
        ensure_connection();
        if (state != StoreState::ready || !conn) check_writable(what);
        if (!transaction) {
          fn(*conn);
          return;
        }
        conn->exec(kBegin);
        try {
          fn(*conn);
          conn->exec(kCommit);
        } catch (...) {
          conn->rollback_quietly();
          throw;
        }
        return;
      } catch (const SqliteError& e) {
        if (e.busy() && Clock::now() < deadline) {
          backoff(attempt);
          continue;
        }
        if (e.corrupt() && !recovered) {
          recovered = true;
          warn(fmt::format("{}: {} failed: {}", path, what, e.what()));
          recover_from_corruption(e.what());
          continue;
        }
        throw Error(fmt::format("{}: {} failed: {}", path, what, e.what()));
      }
    }
  }

  // Reports a damaged binary; in a writable store deletes it if it is still damaged.
  void handle_damaged(const std::string& key, const std::string& problem) {
    if (opts.read_only) {
      if (reported.insert(key).second) {
        warn(fmt::format("{}: binary {} is damaged ({}); treated as a miss", path, key, problem));
      }
      return;
    }
    warn(fmt::format("{}: binary {} is damaged ({}); treated as a miss and deleted", path, key,
                     problem));
    try {
      write("delete damaged binary", [&](Connection& c) {
        bool still_bad = false;
        {
          Statement s = c.prepare(kSelectBinary);
          s.bind_text(1, key);
          if (s.step()) {
            BinaryRecord r;
            still_bad = !read_binary_full(s, r).empty();
          }
        }
        if (still_bad) {
          c.prepare(kDeleteBlob).bind_text(1, key).run();
          c.prepare(kDeleteBinary).bind_text(1, key).run();
        }
      });
    } catch (const Error& e) {
      warn(e.what());
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Fork handling: every live store closes its connection before fork() and reopens lazily after.

namespace {

std::mutex& registry_mutex() {
  static auto* m = new std::mutex; // never destroyed: stores may outlive static destruction
  return *m;
}

std::vector<Store::Impl*>& registry() {
  static auto* r = new std::vector<Store::Impl*>;
  return *r;
}

void before_fork() {
  registry_mutex().lock();
  for (Store::Impl* s : registry()) {
    s->mu.lock();
    s->close_for_fork();
  }
}

void after_fork() {
  for (Store::Impl* s : registry()) s->mu.unlock();
  registry_mutex().unlock();
}

void register_store(Store::Impl* s) {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(before_fork, after_fork, after_fork); });
  std::lock_guard lock(registry_mutex());
  registry().push_back(s);
}

void unregister_store(Store::Impl* s) {
  std::lock_guard lock(registry_mutex());
  auto& r = registry();
  r.erase(std::remove(r.begin(), r.end(), s), r.end());
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Store.

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { register_store(impl_.get()); }

Store::~Store() {
  unregister_store(impl_.get());
  std::lock_guard lock(impl_->mu);
  impl_->drop_connection();
}

std::unique_ptr<Store> Store::open(const std::string& path, OpenOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->opts = std::move(options);
  {
    std::lock_guard lock(impl->mu);
    impl->open_connection(true);
  }
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

const std::string& Store::path() const { return impl_->path; }

bool Store::read_only() const { return impl_->opts.read_only; }

StoreState Store::state() const {
  std::lock_guard lock(impl_->mu);
  return impl_->state;
}

std::string Store::moved_aside_to() const {
  std::lock_guard lock(impl_->mu);
  return impl_->moved_aside;
}

std::optional<BinaryRecord> Store::get_binary(std::string_view key) {
  std::lock_guard lock(impl_->mu);
  std::string problem;
  auto out = impl_->read("get_binary", std::optional<BinaryRecord>(),
                         [&](Connection& c) -> std::optional<BinaryRecord> {
                           problem.clear();
                           Statement s = c.prepare(kSelectBinary);
                           s.bind_text(1, key);
                           if (!s.step()) return std::nullopt;
                           BinaryRecord r;
                           problem = read_binary_full(s, r);
                           if (!problem.empty()) return std::nullopt;
                           return r;
                         });
  if (!problem.empty()) impl_->handle_damaged(std::string(key), problem);
  return out;
}

void Store::put_binary(const BinaryRecord& r) {
  if (r.key.empty()) throw Error("put_binary: empty key");
  const std::string cubin_sum = xxh3_raw(r.cubin);
  const std::string ptx_sum = xxh3_raw(r.ptx);
  const int64_t created = r.created_unix != 0 ? r.created_unix : now_unix();
  std::lock_guard lock(impl_->mu);
  impl_->write("put_binary", [&](Connection& c) {
    Statement s = c.prepare(kInsertBinary);
    s.bind_text(1, r.key)
        .bind_text(2, r.spec)
        .bind_text(3, r.tile)
        .bind_text(4, r.arch)
        .bind_text(5, r.codegen_version)
        .bind_text(6, r.nvrtc_version)
        .bind_text(7, r.compile_options)
        .bind_text(8, r.compile_log)
        .bind_int(9, r.registers)
        .bind_int(10, r.shared_bytes)
        .bind_int(11, r.spill_bytes)
        .bind_real(12, r.compile_ms)
        .bind_text(13, r.tool_version)
        .bind_int(14, created)
        .bind_int(15, static_cast<int64_t>(r.cubin.size()))
        .bind_blob(16, cubin_sum)
        .bind_int(17, static_cast<int64_t>(r.ptx.size()))
        .bind_blob(18, ptx_sum);
    s.run();
    c.prepare(kInsertBlob).bind_text(1, r.key).bind_blob(2, r.cubin).bind_blob(3, r.ptx).run();
  });
}

std::vector<BinaryRecord> Store::list_binaries(bool with_blobs) {
  std::lock_guard lock(impl_->mu);
  std::vector<std::pair<std::string, std::string>> damaged;
  auto out = impl_->read("list_binaries", std::vector<BinaryRecord>(), [&](Connection& c) {
    damaged.clear();
    std::vector<BinaryRecord> rows;
    Statement s = c.prepare(with_blobs ? kListBinariesWithBlobs : kListBinaries);
    while (s.step()) {
      BinaryRecord r;
      if (!with_blobs) {
        read_binary_meta(s, r);
      } else if (std::string problem = read_binary_full(s, r); !problem.empty()) {
        damaged.emplace_back(r.key, std::move(problem));
        continue;
      }
      rows.push_back(std::move(r));
    }
    return rows;
  });
  for (const auto& [key, problem] : damaged) impl_->handle_damaged(key, problem);
  return out;
}

size_t Store::erase_binaries(const BinaryFilter& f) {
  std::lock_guard lock(impl_->mu);
  size_t erased = 0;
  impl_->write("erase_binaries", [&](Connection& c) {
    for (const char* sql : {kEraseBlobsByFilter, kEraseBinariesByFilter}) {
      Statement s = c.prepare(sql);
      s.bind_optional_text(1, f.arch)
          .bind_optional_text(2, f.tool_version)
          .bind_optional_text(3, f.codegen_version)
          .bind_optional_int(4, f.created_before_unix);
      s.run();
    }
    erased = static_cast<size_t>(c.changes());
  });
  return erased;
}

size_t Store::erase_binaries(const std::function<bool(const BinaryRecord&)>& pred) {
  std::lock_guard lock(impl_->mu);
  size_t erased = 0;
  impl_->write("erase_binaries", [&](Connection& c) {
    std::vector<std::string> keys;
    {
      Statement s = c.prepare(kListBinaries);
      while (s.step()) {
        BinaryRecord r;
        read_binary_meta(s, r);
        if (pred(r)) keys.push_back(std::move(r.key));
      }
    }
    for (const std::string& key : keys) {
      c.prepare(kDeleteBlob).bind_text(1, key).run();
      c.prepare(kDeleteBinary).bind_text(1, key).run();
    }
    erased = keys.size();
  });
  return erased;
}

void Store::put_candidate(const TuningRecord& r) {
  if (r.tuning_key.empty() || r.tile.empty()) {
    throw Error("put_candidate: empty tuning key or tile");
  }
  const int64_t created = r.created_unix != 0 ? r.created_unix : now_unix();
  std::lock_guard lock(impl_->mu);
  impl_->write("put_candidate", [&](Connection& c) {
    Statement s = c.prepare(kInsertCandidate);
    s.bind_text(1, r.tuning_key).bind_text(2, r.tile).bind_text(3, r.spec);
    bind_median(s, 4, r.median_us);
    s.bind_text(5, r.status)
        .bind_text(6, r.device_name)
        .bind_text(7, r.arch)
        .bind_int(8, r.sm_count)
        .bind_text(9, r.bucket)
        .bind_text(10, r.tool_version)
        .bind_int(11, created);
    s.run();
  });
}

std::vector<TuningRecord> Store::candidates(std::string_view tuning_key) {
  std::lock_guard lock(impl_->mu);
  return impl_->read("candidates", std::vector<TuningRecord>(), [&](Connection& c) {
    std::vector<TuningRecord> rows;
    Statement s = c.prepare(kSelectCandidates);
    s.bind_text(1, tuning_key);
    while (s.step()) rows.push_back(read_candidate(s));
    return rows;
  });
}

void Store::put_winner(const WinnerRecord& r) {
  if (r.tuning_key.empty() || r.tile.empty()) throw Error("put_winner: empty tuning key or tile");
  const int64_t created = r.created_unix != 0 ? r.created_unix : now_unix();
  std::lock_guard lock(impl_->mu);
  impl_->write("put_winner", [&](Connection& c) {
    Statement s = c.prepare(kInsertWinner);
    s.bind_text(1, r.tuning_key).bind_text(2, r.tile).bind_text(3, r.spec);
    bind_median(s, 4, r.median_us);
    s.bind_text(5, r.device_name)
        .bind_text(6, r.arch)
        .bind_int(7, r.sm_count)
        .bind_text(8, r.bucket)
        .bind_text(9, r.tool_version)
        .bind_int(10, created);
    s.run();
  });
}

std::optional<WinnerRecord> Store::winner(std::string_view tuning_key) {
  std::lock_guard lock(impl_->mu);
  return impl_->read("winner", std::optional<WinnerRecord>(),
                     [&](Connection& c) -> std::optional<WinnerRecord> {
                       Statement s = c.prepare(kSelectWinner);
                       s.bind_text(1, tuning_key);
                       if (!s.step()) return std::nullopt;
                       return read_winner(s);
                     });
}

std::vector<WinnerRecord> Store::list_winners() {
  std::lock_guard lock(impl_->mu);
  return impl_->read("list_winners", std::vector<WinnerRecord>(), [&](Connection& c) {
    std::vector<WinnerRecord> rows;
    Statement s = c.prepare(kListWinners);
    while (s.step()) rows.push_back(read_winner(s));
    return rows;
  });
}

size_t Store::erase_tuning(const TuningFilter& f) {
  std::lock_guard lock(impl_->mu);
  size_t erased = 0;
  impl_->write("erase_tuning", [&](Connection& c) {
    erased = 0;
    for (const char* sql : {kEraseCandidates, kEraseWinners}) {
      Statement s = c.prepare(sql);
      s.bind_optional_text(1, f.tuning_key)
          .bind_optional_text(2, f.arch)
          .bind_optional_text(3, f.device_name)
          .bind_optional_text(4, f.tool_version)
          .bind_optional_int(5, f.created_before_unix);
      s.run();
      erased += static_cast<size_t>(c.changes());
    }
  });
  return erased;
}

std::vector<std::string> Store::integrity_check(bool repair) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  std::vector<std::string> problems;
  try {
    m.ensure_connection();
  } catch (const Error& e) {
    problems.push_back(e.what());
    return problems;
  }
  if (m.state == StoreState::newer) {
    problems.push_back(fmt::format("schema newer than {}: not checked", kSchemaVersion));
    return problems;
  }
  if (m.state != StoreState::ready || !m.conn) {
    problems.push_back("the store is unavailable (see the warnings given when it was opened)");
    return problems;
  }
  std::vector<std::string> damaged_keys, orphan_keys;
  try {
    Connection& c = *m.conn;
    if (c.query_int(kApplicationIdQuery) != kApplicationId) {
      problems.push_back("application_id is not attnjit's");
    }
    if (int64_t v = c.query_int(kUserVersionQuery); v != kSchemaVersion) {
      problems.push_back(fmt::format("user_version is {}, expected {}", v, kSchemaVersion));
    }
    {
      Statement s = c.prepare(kQuickCheck);
      while (s.step()) {
        if (std::string row = s.text(0); row != "ok") problems.push_back("quick_check: " + row);
      }
    }
    {
      Statement s = c.prepare(kListBinariesWithBlobs);
      while (s.step()) {
        BinaryRecord r;
        if (std::string problem = read_binary_full(s, r); !problem.empty()) {
          problems.push_back(fmt::format("binary {}: {}", r.key, problem));
          damaged_keys.push_back(r.key);
        }
      }
    }
    {
      Statement s = c.prepare(kOrphanBlobs);
      while (s.step()) {
        orphan_keys.push_back(s.text(0));
        problems.push_back(fmt::format("blob {} has no metadata row", orphan_keys.back()));
      }
    }
  } catch (const SqliteError& e) {
    problems.push_back(fmt::format("sqlite: {}", e.what()));
    return problems;
  }
  if (repair && !m.opts.read_only && (!damaged_keys.empty() || !orphan_keys.empty())) {
    try {
      m.write("integrity_check repair", [&](Connection& c) {
        for (const auto* keys : {&damaged_keys, &orphan_keys}) {
          for (const std::string& key : *keys) {
            c.prepare(kDeleteBlob).bind_text(1, key).run();
            c.prepare(kDeleteBinary).bind_text(1, key).run();
          }
        }
      });
    } catch (const Error& e) {
      problems.push_back(fmt::format("repair failed: {}", e.what()));
    }
  }
  return problems;
}

StoreStats Store::stats() {
  std::lock_guard lock(impl_->mu);
  StoreStats st = impl_->read("stats", StoreStats(), [&](Connection& c) {
    StoreStats s;
    s.binaries = c.query_int(kCountBinaries);
    s.cubin_bytes = c.query_int(kSumCubin);
    s.ptx_bytes = c.query_int(kSumPtx);
    s.candidates = c.query_int(kCountCandidates);
    s.winners = c.query_int(kCountWinners);
    return s;
  });
  struct stat fs;
  if (::stat(impl_->path.c_str(), &fs) == 0) st.file_bytes = static_cast<int64_t>(fs.st_size);
  return st;
}

void Store::vacuum() {
  std::lock_guard lock(impl_->mu);
  impl_->write(
      "vacuum",
      [](Connection& c) {
        c.exec(kVacuum);
        // In WAL mode the smaller file exists only once the WAL is copied back and truncated.
        c.exec(kCheckpointTruncate);
      },
      /*transaction=*/false);
}

void Store::export_to(const std::string& dest_path) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  if (path_exists(dest_path)) throw Error(fmt::format("export: {} already exists", dest_path));
  m.ensure_connection();
  if (m.state != StoreState::ready || !m.conn) {
    throw Error(fmt::format("export: {} is not readable", m.path));
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(m.opts.write_timeout_ms);
  for (int attempt = 0;; ++attempt) {
    try {
      m.conn->prepare(kVacuumInto).bind_text(1, dest_path).run();
      auto out = Connection::open(dest_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
      Statement s = out->prepare(kJournalDelete);
      if (!s.step() || s.text(0) != "delete") {
        throw Error(fmt::format("export: could not set {} to rollback-journal mode", dest_path));
      }
      return;
    } catch (const SqliteError& e) {
      if (e.busy() && Clock::now() < deadline && !path_exists(dest_path)) {
        backoff(attempt);
        continue;
      }
      throw Error(fmt::format("export of {} to {} failed: {}", m.path, dest_path, e.what()));
    }
  }
}

} // namespace attnjit::cache
