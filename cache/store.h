// The on-disk kernel cache: compiled binaries and autotuning results in one SQLite file.
//
// Layout of a cache file (schema version kSchemaVersion, marked by PRAGMA application_id =
// kApplicationId and PRAGMA user_version = kSchemaVersion):
//   binaries           one row per compiled kernel: everything its key was made of, compile
//                      statistics, the tool version that produced it, sizes and XXH3-128
//                      checksums of the cubin and the PTX
//   binary_blobs       the cubin and PTX bytes of each binary, written in the same transaction
//   tuning_candidates  one row per (tuning key, tile): the median time or why the candidate failed
//   tuning_winners     one row per tuning key: the chosen tile
//
// Keys are computed by the callers (codegen for binaries, the tuner for tuning keys); the store
// treats them as opaque strings.
//
// Concurrency. Many processes may read and write one file at once (eight tensor-parallel ranks
// tuning into one cache): the file is in WAL mode, every write is one BEGIN IMMEDIATE transaction,
// and a write that finds the file locked keeps retrying with backoff until
// OpenOptions::write_timeout_ms has passed. Within a process, one Store may be used from any
// number of threads (calls are serialized by a mutex).
//
// Fork. No SQLite connection crosses a fork. A Store closes its connection just before fork()
// (pthread_atfork) and reopens it lazily in both the parent and the child at the next call, so a
// Store keeps working on both sides of a fork. If a process is created without the fork handlers
// running (a raw clone), the store notices at its next call that getpid() changed, abandons the
// inherited connection without touching it, and opens a new one.
//
// Identity. Before each call the store checks that `path` still names the file its connection
// was opened on; if the file was deleted, or replaced (moved aside by another process, or a
// deployed cache swapped in by rename), it closes the old connection and opens what is there now.
//
// Damage. Reads never throw for damaged or foreign data: a blob whose checksum does not match,
// a row without its blob, a SQLite corruption error, all are a miss plus a message through
// OpenOptions::warn (and the bad row is deleted when the store is writable). On open, a writable
// store that finds a file that is not an attnjit cache (foreign application_id, not a database,
// truncated, failing PRAGMA quick_check) renames it and its -wal/-shm files aside to
// "<path>.corrupt-<unix time>-<pid>" and starts a fresh cache; a read-only store never renames
// anything and treats a bad file as empty. A file written by a newer schema is left untouched:
// every read misses and every write is refused. Processes that find the same bad file at once
// take turns through "<path>.recovery-lock" (created when first needed, then left in place).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace attnjit::cache {

// 'ATJT': the PRAGMA application_id of every attnjit cache file.
inline constexpr int32_t kApplicationId = 0x41544A54;
// The PRAGMA user_version this build writes. Older files are migrated step by step on open.
inline constexpr int kSchemaVersion = 1;

// A write could not be committed (read-only store, newer schema, disk full, I/O error, the file
// stayed locked past write_timeout_ms), or the store could not be opened at all.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One compiled kernel. `key` is the binary key (hex) computed by the caller from the other
// identity fields; the store does not recompute it.
struct BinaryRecord {
  std::string key;
  std::string spec;            // canonical spec string
  std::string tile;            // canonical tile string
  std::string arch;            // exact arch, "sm_90a"
  std::string codegen_version; // hash of templates and emitter
  std::string nvrtc_version;   // "12.4"
  std::string compile_options; // the options string given to NVRTC
  std::string cubin;           // bytes
  std::string ptx;             // bytes; may be empty
  std::string compile_log;
  int registers = 0;
  int shared_bytes = 0;
  int spill_bytes = 0;
  double compile_ms = 0.0;
  std::string tool_version;
  int64_t created_unix = 0; // 0 on put: the store writes the current time

  // Filled on reads, ignored on writes (the store computes them from the bytes it is given).
  int64_t cubin_size = 0;
  int64_t ptx_size = 0;
  std::string cubin_xxh3; // XXH3-128 of cubin, 32 lowercase hex digits
};

// The measurement of one tile candidate for one tuning key.
struct TuningRecord {
  std::string tuning_key;  // hex: spec without tile + device + shape bucket
  std::string tile;        // canonical tile string of the candidate
  std::string spec;        // canonical spec string without tile (informational; may be empty)
  double median_us = 0.0;  // NaN when the candidate failed (stored as NULL)
  std::string status;      // "ok" or "failed: <reason>"
  std::string device_name; // "NVIDIA H100 80GB HBM3"
  std::string arch;        // "sm_90a"
  int sm_count = 0;
  std::string bucket; // shape bucket, "decode:b8:kv4096"
  std::string tool_version;
  int64_t created_unix = 0; // 0 on put: the current time
};

// The chosen tile for one tuning key.
struct WinnerRecord {
  std::string tuning_key;
  std::string tile;
  std::string spec;
  double median_us = 0.0;
  std::string device_name;
  std::string arch;
  int sm_count = 0;
  std::string bucket;
  std::string tool_version;
  int64_t created_unix = 0; // 0 on put: the current time
};

// Which binaries erase_binaries removes: every field that is set must match (all unset: all).
struct BinaryFilter {
  std::optional<std::string> arch;
  std::optional<std::string> tool_version;
  std::optional<std::string> codegen_version;
  std::optional<int64_t> created_before_unix; // created_unix < this
};

// Which tuning rows (candidates and winners) erase_tuning removes; same rules as BinaryFilter.
struct TuningFilter {
  std::optional<std::string> tuning_key;
  std::optional<std::string> arch;
  std::optional<std::string> device_name;
  std::optional<std::string> tool_version;
  std::optional<int64_t> created_before_unix;
};

struct OpenOptions {
  bool read_only = false;
  // How long SQLite itself waits for a lock before a statement reports SQLITE_BUSY.
  int busy_timeout_ms = 5000;
  // How long a write keeps retrying (with backoff) past SQLITE_BUSY before it throws Error.
  int write_timeout_ms = 60000;
  // Run PRAGMA quick_check when the file is first opened. It reads the whole file once, so its
  // cost grows with the cache; checksums are verified on every read regardless.
  bool verify_on_open = true;
  // Receives every diagnostic (moved-aside files, checksum mismatches, newer schemas, read
  // errors). Called with the store's lock held: it must not call back into the store. Empty: the
  // messages go to stderr, prefixed "attnjit cache: ".
  std::function<void(std::string_view)> warn;
};

// What the store is able to do after open.
enum class StoreState {
  ready,       // reads and (unless read-only) writes work
  newer,       // the file has a newer schema: reads miss, writes throw, the file is left alone
  unavailable, // read-only store that is missing, empty or damaged: reads miss
};

struct StoreStats {
  int64_t binaries = 0;
  int64_t cubin_bytes = 0;
  int64_t ptx_bytes = 0;
  int64_t candidates = 0;
  int64_t winners = 0;
  int64_t file_bytes = 0; // the main file, without -wal
};

class Store {
 public:
  // Opens (creating it and its parent directories if needed, unless read-only) the cache file at
  // `path`. Throws Error only when a writable store cannot be opened at all (no permission,
  // unusable directory, locked past write_timeout_ms); a read-only store never throws here.
  static std::unique_ptr<Store> open(const std::string& path, OpenOptions options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& path() const;
  bool read_only() const;
  StoreState state() const;
  // Where a damaged or foreign file at path() was moved during open; empty if none was.
  std::string moved_aside_to() const;

  // --- binaries ---
  // The binary with this key, its checksums verified; nullopt on a miss, a damaged row (reported
  // and, when writable, deleted) or any read error (reported).
  std::optional<BinaryRecord> get_binary(std::string_view key);
  // Inserts or replaces the binary and its blobs in one transaction. Throws Error.
  void put_binary(const BinaryRecord& record);
  // Metadata of every binary, ordered by key; with_blobs also reads and verifies the bytes
  // (damaged rows are reported and left out).
  std::vector<BinaryRecord> list_binaries(bool with_blobs = false);
  // Removes the binaries that match; returns how many. Throws Error.
  size_t erase_binaries(const BinaryFilter& filter);
  // Removes the binaries whose metadata (no blobs) satisfies `pred`, deciding and deleting in one
  // transaction; `pred` must not call into the store. Returns how many. Throws Error.
  size_t erase_binaries(const std::function<bool(const BinaryRecord&)>& pred);

  // --- tuning ---
  // Inserts or replaces the row of (tuning_key, tile). Throws Error.
  void put_candidate(const TuningRecord& record);
  // Every candidate of the tuning key, ordered by tile.
  std::vector<TuningRecord> candidates(std::string_view tuning_key);
  // Inserts or replaces the winner of record.tuning_key. Throws Error.
  void put_winner(const WinnerRecord& record);
  std::optional<WinnerRecord> winner(std::string_view tuning_key);
  std::vector<WinnerRecord> list_winners();
  // Removes matching candidates and winners; returns how many rows in all. Throws Error.
  size_t erase_tuning(const TuningFilter& filter);

  // --- maintenance ---
  // PRAGMA quick_check plus every checksum, size and blob/metadata pairing. Returns one line per
  // problem; empty means clean. With `repair` (writable stores only), damaged binaries are deleted.
  std::vector<std::string> integrity_check(bool repair = false);
  StoreStats stats();
  // Rebuilds the file to return the space of erased rows. Throws Error.
  void vacuum();
  // Writes a compact copy to `dest_path` (which must not exist) in rollback-journal mode, fit to
  // be deployed and opened read-only from a read-only directory. Throws Error.
  void export_to(const std::string& dest_path);

  struct Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The runtime's view of the cache: a writable local store over an optional read-only deployed
// one (a CI artifact). Reads try local, then deployed; writes go to local. Nothing here throws for
// cache problems: a local store that cannot be opened is reported and the facade runs without
// it (writes then return false).
class LayeredStore {
 public:
  // `local_path` empty: no local store. `deployed_path` empty: no deployed store. The deployed
  // store is always opened read-only; `options.read_only` is ignored.
  static std::unique_ptr<LayeredStore> open(const std::string& local_path,
                                            const std::string& deployed_path,
                                            OpenOptions options = {});
  LayeredStore(std::unique_ptr<Store> local, std::unique_ptr<Store> deployed,
               std::function<void(std::string_view)> warn = {});

  std::optional<BinaryRecord> get_binary(std::string_view key);
  // Each put returns whether the row was committed to the local store; failures are reported.
  bool put_binary(const BinaryRecord& record);
  // Candidates of both layers; a local row replaces a deployed row with the same tile.
  std::vector<TuningRecord> candidates(std::string_view tuning_key);
  bool put_candidate(const TuningRecord& record);
  std::optional<WinnerRecord> winner(std::string_view tuning_key);
  bool put_winner(const WinnerRecord& record);

  Store* local() { return local_.get(); }
  Store* deployed() { return deployed_.get(); }

 private:
  void report(std::string_view message);
  std::unique_ptr<Store> local_;
  std::unique_ptr<Store> deployed_;
  std::function<void(std::string_view)> warn_;
};

// $ATTNJIT_CACHE, else $XDG_CACHE_HOME/attnjit/cache.sqlite, else
// $HOME/.cache/attnjit/cache.sqlite (HOME from the password database if unset). Throws Error when
// none of them is known. Directories are created by Store::open, not here.
std::string default_cache_path();

// XXH3-128 of `bytes` as 32 lowercase hex digits (the checksum the store keeps for each cubin).
std::string checksum_hex(std::string_view bytes);

} // namespace attnjit::cache
