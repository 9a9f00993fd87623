// Inspection and maintenance of kernel cache files: what a cache holds (ls, show), whether it is
// intact and loadable (verify), and combining, exporting and pruning caches (merge, export, prune).
// Inspection opens files read-only, so that a damaged file is reported as it is, never moved aside
// or repaired.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cache/store.h"

namespace attnjit::tuner {

struct CacheListing {
  std::string path;
  cache::StoreStats stats;
  std::vector<cache::BinaryRecord> binaries; // metadata only, ordered by key
  std::vector<cache::WinnerRecord> winners;
  std::vector<std::string> warnings; // what the store reported while reading
};

// Throws cache::Error when there is no usable cache at `path`.
CacheListing list_cache(const std::string& path);
std::string to_json(const CacheListing& listing);
std::string format_table(const CacheListing& listing);

struct CacheVerdict {
  std::string path;
  int64_t binaries = 0;
  std::vector<std::string> problems; // one line each; empty: intact
  // Loadability (verify_cache with load_on_gpu, when a GPU was found).
  std::string gpu;                   // "NVIDIA H100 80GB HBM3 (sm_90a)"; empty: not checked
  std::string no_gpu_reason;         // why loadability was not checked
  int64_t loaded = 0;                // binaries for the GPU's arch that cuModuleLoadData accepted
  int64_t other_arch = 0;            // binaries for other archs (not loadable here, not a problem)

  bool ok() const { return problems.empty(); }
};

// Store::integrity_check (SQLite's quick_check, every checksum, size and blob pairing), plus
// whatever the store reported when opening the file. A missing file is a problem. With
// `load_on_gpu`, every binary compiled for the arch of GPU 0 is also loaded with
// cuModuleLoadData (through the runtime's CudaDriver) and unloaded; a failure is a problem. No
// GPU: only the schema and checksums are verified, and no_gpu_reason says why.
CacheVerdict verify_cache(const std::string& path, bool load_on_gpu = false);
std::string to_json(const CacheVerdict& verdict);
std::string format_text(const CacheVerdict& verdict);

// --- show ---------------------------------------------------------------------------------------

// Everything a cache holds under one key: a binary key (metadata and compile log) or a tuning key
// (every candidate row and the winner). A unique prefix of a key is enough.
struct KeyDetails {
  std::string path;
  std::string key;
  std::optional<cache::BinaryRecord> binary; // metadata only
  std::vector<cache::TuningRecord> candidates;
  std::optional<cache::WinnerRecord> winner;
};
// Throws cache::Error when no key (or more than one) matches.
KeyDetails show_key(const std::string& path, const std::string& key_or_prefix);
std::string to_json(const KeyDetails& details);
std::string format_text(const KeyDetails& details);

// --- merge ----------------------------------------------------------------------------------------

// Rows of each source copied into `dest` (created if missing):
//   binaries    a key missing from dest is copied with its blobs (checksums verified on read);
//               a key dest has is the same binary (the key covers everything it was made of)
//   candidates  a (tuning key, tile) row missing from dest is copied; present in both: the newer
//               row wins
//   winners     missing from dest: copied; present in both: the newer row wins (equal age: the
//               faster)
struct MergeReport {
  std::string dest;
  std::vector<std::string> sources;
  int64_t binaries_copied = 0, binaries_present = 0, binaries_damaged = 0;
  int64_t candidates_copied = 0, candidates_kept = 0;
  int64_t winners_copied = 0, winners_kept = 0;
  std::vector<std::string> warnings;
};
// Throws cache::Error when a source cannot be read or dest cannot be written.
MergeReport merge_caches(const std::string& dest, const std::vector<std::string>& sources);
std::string to_json(const MergeReport& report);
std::string format_text(const MergeReport& report);

// --- export ---------------------------------------------------------------------------------------

// A compact single-file copy of `source` (no -wal), ready to deploy read-only. `dest` must not
// exist. Returns the bytes written. Throws cache::Error.
int64_t export_cache(const std::string& source, const std::string& dest);

// --- prune ----------------------------------------------------------------------------------------

// What prune removes: every criterion given must hold for a row to go (none given: refused).
struct PruneOptions {
  std::optional<int64_t> older_than_s;      // created more than this many seconds ago
  std::optional<std::string> arch;          // built or tuned for this arch
  std::optional<std::string> tool_version;  // written by this version
  bool stale = false; // written by another tool version, or (binaries) by other templates/emitter
  bool dry_run = false;
};
struct PruneReport {
  std::string path;
  int64_t binaries_removed = 0;
  int64_t tuning_rows_removed = 0;
  int64_t bytes_before = 0, bytes_after = 0;
  bool dry_run = false;
};
// Throws cache::Error, or std::invalid_argument when no criterion is given.
PruneReport prune_cache(const std::string& path, const PruneOptions& options);
std::string format_text(const PruneReport& report);

} // namespace attnjit::tuner
