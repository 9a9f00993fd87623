#include "cache/schema.h"

#include "cache/store.h"

#include <array>
#include <cstdint>

namespace attnjit::cache::detail {
namespace {

// The integer at the end of a "PRAGMA name = <digits>" literal, so that the literals below can be
// checked against the constants at compile time (PRAGMA values cannot be bound as parameters).
constexpr int64_t trailing_integer(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9') --i;
  int64_t v = 0;
  for (; i < s.size(); ++i) v = v * 10 + (s[i] - '0');
  return v;
}

constexpr const char kSetApplicationId[] = "PRAGMA application_id = 1096043092";
static_assert(trailing_integer(kSetApplicationId) == kApplicationId);

constexpr const char kSetUserVersion1[] = "PRAGMA user_version = 1";
static_assert(trailing_integer(kSetUserVersion1) == 1);

// --- version 0 -> 1: the first schema ---
constexpr const char* const kV0ToV1[] = {
    // Metadata of each binary. The blobs live in binary_blobs so that listing metadata does not
    // read megabytes of cubins. cubin_xxh3 / ptx_xxh3: XXH3-128, 16 bytes, canonical order.
    R"sql(CREATE TABLE binaries (
      key             TEXT PRIMARY KEY NOT NULL,
      spec            TEXT NOT NULL,
      tile            TEXT NOT NULL,
      arch            TEXT NOT NULL,
      codegen_version TEXT NOT NULL,
      nvrtc_version   TEXT NOT NULL,
      compile_options TEXT NOT NULL,
      compile_log     TEXT NOT NULL,
      registers       INTEGER NOT NULL,
      shared_bytes    INTEGER NOT NULL,
      spill_bytes     INTEGER NOT NULL,
      compile_ms      REAL NOT NULL,
      tool_version    TEXT NOT NULL,
      created_unix    INTEGER NOT NULL,
      cubin_size      INTEGER NOT NULL,
      cubin_xxh3      BLOB NOT NULL,
      ptx_size        INTEGER NOT NULL,
      ptx_xxh3        BLOB NOT NULL
    ))sql",
    "CREATE INDEX binaries_by_arch ON binaries (arch)",
    R"sql(CREATE TABLE binary_blobs (
      key   TEXT PRIMARY KEY NOT NULL,
      cubin BLOB NOT NULL,
      ptx   BLOB NOT NULL
    ))sql",
    // One row per measured candidate; median_us is NULL when the candidate failed.
    R"sql(CREATE TABLE tuning_candidates (
      tuning_key   TEXT NOT NULL,
      tile         TEXT NOT NULL,
      spec         TEXT NOT NULL,
      median_us    REAL,
      status       TEXT NOT NULL,
      device_name  TEXT NOT NULL,
      arch         TEXT NOT NULL,
      sm_count     INTEGER NOT NULL,
      bucket       TEXT NOT NULL,
      tool_version TEXT NOT NULL,
      created_unix INTEGER NOT NULL,
      PRIMARY KEY (tuning_key, tile)
    ))sql",
    R"sql(CREATE TABLE tuning_winners (
      tuning_key   TEXT PRIMARY KEY NOT NULL,
      tile         TEXT NOT NULL,
      spec         TEXT NOT NULL,
      median_us    REAL,
      device_name  TEXT NOT NULL,
      arch         TEXT NOT NULL,
      sm_count     INTEGER NOT NULL,
      bucket       TEXT NOT NULL,
      tool_version TEXT NOT NULL,
      created_unix INTEGER NOT NULL
    ))sql",
    kSetApplicationId,
    kSetUserVersion1,
};

constexpr Migration kMigrations[] = {
    {0, kV0ToV1},
};
static_assert(std::size(kMigrations) == kSchemaVersion);

constexpr std::string_view kRequiredTables[] = {"binaries", "binary_blobs", "tuning_candidates",
                                                "tuning_winners"};

} // namespace

std::span<const Migration> migrations() { return kMigrations; }

std::span<const std::string_view> required_tables() { return kRequiredTables; }

} // namespace attnjit::cache::detail
