// Inspection of a kernel cache file: what it holds, and whether it is intact. Both open the file
// read-only, so that a damaged file is reported as it is, never moved aside or repaired.
#pragma once

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

  bool ok() const { return problems.empty(); }
};

// Store::integrity_check (SQLite's quick_check, every checksum, size and blob pairing), plus
// whatever the store reported when opening the file. A missing file is a problem.
CacheVerdict verify_cache(const std::string& path);
std::string to_json(const CacheVerdict& verdict);
std::string format_text(const CacheVerdict& verdict);

} // namespace attnjit::tuner
