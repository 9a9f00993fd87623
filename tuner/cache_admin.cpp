// attn-cache show, merge, export and prune (declared in cache_inspect.h).
#include <sqlite3.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codegen/emit.h"
#include "runtime/binary_builder.h"
#include "tuner/cache_inspect.h"
#include "tuner/table.h"

namespace attnjit::tuner {

namespace {

using nlohmann::json;

std::unique_ptr<cache::Store> open_store(const std::string& path, bool read_only, std::vector<std::string>& warnings) {
  if (read_only && !std::filesystem::exists(path)) throw cache::Error(fmt::format("{}: no such cache file", path));
  cache::OpenOptions o;
  o.read_only = read_only;
  o.warn = [&warnings](std::string_view m) { warnings.emplace_back(m); };
  auto store = cache::Store::open(path, o);
  if (store->state() != cache::StoreState::ready)
    throw cache::Error(fmt::format("{}: not a readable attnjit cache{}{}", path, warnings.empty() ? "" : ": ",
                                   warnings.empty() ? "" : warnings.front()));
  return store;
}

// The store lists winners but not the keys of candidate rows (a unit may have candidates and no
// winner yet): read them, and the rows' ages and versions, straight from the file (read-only).
struct TuningRowFacts {
  std::string table, tuning_key, tile, arch, tool_version;
  int64_t created_unix = 0;
};
std::vector<TuningRowFacts> tuning_rows(const std::string& path) {
  sqlite3* db = nullptr;
  std::vector<TuningRowFacts> out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    const std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw cache::Error(fmt::format("{}: cannot be read: {}", path, msg));
  }
  sqlite3_busy_timeout(db, 5000);
  for (const char* table : {"tuning_candidates", "tuning_winners"}) {
    const std::string sql = fmt::format("SELECT tuning_key, tile, arch, tool_version, created_unix FROM {}", table);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      const std::string msg = sqlite3_errmsg(db);
      sqlite3_close(db);
      throw cache::Error(fmt::format("{}: {}", path, msg));
    }
    auto text = [&](int i) {
      const unsigned char* t = sqlite3_column_text(st, i);
      return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
    };
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
      out.push_back(TuningRowFacts{table, text(0), text(1), text(2), text(3), sqlite3_column_int64(st, 4)});
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
      const std::string msg = sqlite3_errmsg(db);
      sqlite3_close(db);
      throw cache::Error(fmt::format("{}: {}", path, msg));
    }
  }
  sqlite3_close(db);
  return out;
}

std::string when(int64_t unix_time) {
  if (unix_time <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

} // namespace

// --- show ----------------------------------------------------------------------------------------

KeyDetails show_key(const std::string& path, const std::string& key) {
  std::vector<std::string> warnings;
  auto store = open_store(path, true, warnings);
  if (key.empty()) throw cache::Error("show: no key given");
  std::set<std::string> matches;
  for (const auto& b : store->list_binaries(false))
    if (b.key.starts_with(key)) matches.insert(b.key);
  for (const auto& r : tuning_rows(path))
    if (r.tuning_key.starts_with(key)) matches.insert(r.tuning_key);
  if (matches.empty()) throw cache::Error(fmt::format("{}: no binary or tuning key starts with '{}'", path, key));
  if (matches.size() > 1)
    throw cache::Error(fmt::format("{}: '{}' is the start of {} keys; give more digits", path, key, matches.size()));
  KeyDetails d;
  d.path = path;
  d.key = *matches.begin();
  for (auto& b : store->list_binaries(false))
    if (b.key == d.key) d.binary = std::move(b);
  d.candidates = store->candidates(d.key);
  d.winner = store->winner(d.key);
  return d;
}

std::string to_json(const KeyDetails& d) {
  json j = {{"path", d.path}, {"key", d.key}};
  if (d.binary) {
    const auto& b = *d.binary;
    j["binary"] = {{"spec", b.spec}, {"tile", b.tile}, {"arch", b.arch}, {"codegen_version", b.codegen_version},
                   {"nvrtc_version", b.nvrtc_version}, {"compile_options", b.compile_options},
                   {"registers", b.registers}, {"shared_bytes", b.shared_bytes}, {"spill_bytes", b.spill_bytes},
                   {"compile_ms", b.compile_ms}, {"cubin_bytes", b.cubin_size}, {"ptx_bytes", b.ptx_size},
                   {"cubin_xxh3", b.cubin_xxh3}, {"tool_version", b.tool_version}, {"created_unix", b.created_unix},
                   {"compile_log", b.compile_log}};
  }
  if (!d.candidates.empty() || d.winner) {
    json c = json::array();
    for (const auto& r : d.candidates)
      c.push_back({{"tile", r.tile}, {"median_us", num(r.median_us)}, {"status", r.status}, {"device", r.device_name},
                   {"arch", r.arch}, {"sm_count", r.sm_count}, {"bucket", r.bucket}, {"spec", r.spec},
                   {"tool_version", r.tool_version}, {"created_unix", r.created_unix}});
    j["candidates"] = std::move(c);
    if (d.winner)
      j["winner"] = {{"tile", d.winner->tile}, {"median_us", num(d.winner->median_us)}, {"device", d.winner->device_name},
                     {"arch", d.winner->arch}, {"sm_count", d.winner->sm_count}, {"bucket", d.winner->bucket},
                     {"spec", d.winner->spec}, {"tool_version", d.winner->tool_version},
                     {"created_unix", d.winner->created_unix}};
    else
      j["winner"] = nullptr;
  }
  return j.dump(2);
}

std::string format_text(const KeyDetails& d) {
  std::string out;
  if (d.binary) {
    const auto& b = *d.binary;
    out += fmt::format("binary {}\n  spec      {}\n  tile      {}\n  arch      {}\n  nvrtc     {} ({})\n"
                       "  codegen   {}\n  resources {} registers, {} bytes spilled, {} bytes of shared memory\n"
                       "  sizes     cubin {} bytes (xxh3 {}), ptx {} bytes\n  compiled  in {:.0f} ms by {} at {}\n",
                       d.key, b.spec, b.tile, b.arch, b.nvrtc_version, b.compile_options, b.codegen_version,
                       b.registers, b.spill_bytes, b.shared_bytes, b.cubin_size, b.cubin_xxh3, b.ptx_size,
                       b.compile_ms, b.tool_version, when(b.created_unix));
    if (!b.compile_log.empty()) out += fmt::format("  log:\n{}\n", b.compile_log);
  }
  if (!d.candidates.empty() || d.winner) {
    const cache::TuningRecord* any = d.candidates.empty() ? nullptr : &d.candidates.front();
    out += fmt::format("tuning key {}\n", d.key);
    if (any)
      out += fmt::format("  spec   {}\n  device {} ({}, {} SMs)\n  bucket {}\n", any->spec, any->device_name, any->arch,
                         any->sm_count, any->bucket);
    out += fmt::format("  winner {}\n", d.winner ? fmt::format("{} ({:.2f} us, {})", d.winner->tile, d.winner->median_us,
                                                               when(d.winner->created_unix))
                                                 : "none yet");
    std::vector<const cache::TuningRecord*> rows;
    for (const auto& r : d.candidates) rows.push_back(&r);
    std::stable_sort(rows.begin(), rows.end(), [](auto a, auto b) {
      const bool oa = a->status == "ok", ob = b->status == "ok";
      if (oa != ob) return oa;
      return oa && a->median_us < b->median_us;
    });
    Table t;
    t.add({"CANDIDATE", "MEDIAN", "STATUS"});
    for (const auto* r : rows)
      t.add({r->tile, std::isfinite(r->median_us) ? fmt::format("{:.2f} us", r->median_us) : "-", r->status});
    out += t.render();
  }
  return out;
}

// --- merge ---------------------------------------------------------------------------------------

MergeReport merge_caches(const std::string& dest_path, const std::vector<std::string>& sources) {
  MergeReport rep;
  rep.dest = dest_path;
  rep.sources = sources;
  if (sources.empty()) throw cache::Error("merge: no source cache given");
  for (const auto& s : sources)
    if (std::filesystem::exists(s) && std::filesystem::exists(dest_path) && std::filesystem::equivalent(s, dest_path))
      throw cache::Error(fmt::format("merge: {} is the destination itself", s));
  auto dest = open_store(dest_path, false, rep.warnings);
  std::set<std::string> have;
  for (const auto& b : dest->list_binaries(false)) have.insert(b.key);
  for (const std::string& path : sources) {
    auto src = open_store(path, true, rep.warnings);
    for (const auto& meta : src->list_binaries(false)) {
      if (have.contains(meta.key)) {
        ++rep.binaries_present;
        continue;
      }
      std::optional<cache::BinaryRecord> rec = src->get_binary(meta.key);
      if (!rec) {
        ++rep.binaries_damaged;
        rep.warnings.push_back(fmt::format("{}: binary {} is damaged and was not copied", path, meta.key));
        continue;
      }
      dest->put_binary(*rec);
      have.insert(meta.key);
      ++rep.binaries_copied;
    }
    std::set<std::string> keys;
    for (const auto& r : tuning_rows(path)) keys.insert(r.tuning_key);
    for (const std::string& key : keys) {
      std::map<std::string, cache::TuningRecord> existing;
      for (auto& r : dest->candidates(key)) existing.emplace(r.tile, std::move(r));
      for (const auto& r : src->candidates(key)) {
        auto it = existing.find(r.tile);
        if (it != existing.end() && it->second.created_unix >= r.created_unix) {
          ++rep.candidates_kept;
          continue;
        }
        dest->put_candidate(r);
        ++rep.candidates_copied;
      }
      if (auto w = src->winner(key)) {
        const auto mine = dest->winner(key);
        const bool take = !mine || w->created_unix > mine->created_unix ||
                          (w->created_unix == mine->created_unix && w->median_us < mine->median_us);
        if (take) {
          dest->put_winner(*w);
          ++rep.winners_copied;
        } else {
          ++rep.winners_kept;
        }
      }
    }
  }
  return rep;
}

std::string to_json(const MergeReport& r) {
  json j = {{"dest", r.dest},
            {"sources", r.sources},
            {"binaries", {{"copied", r.binaries_copied}, {"present", r.binaries_present}, {"damaged", r.binaries_damaged}}},
            {"candidates", {{"copied", r.candidates_copied}, {"kept", r.candidates_kept}}},
            {"winners", {{"copied", r.winners_copied}, {"kept", r.winners_kept}}}};
  if (!r.warnings.empty()) j["warnings"] = r.warnings;
  return j.dump(2);
}

std::string format_text(const MergeReport& r) {
  std::string out = fmt::format(
      "{} <- {} source{}: binaries {} copied, {} already present{}; candidate rows {} copied, {} kept; winners {} "
      "copied, {} kept\n",
      r.dest, r.sources.size(), r.sources.size() == 1 ? "" : "s", r.binaries_copied, r.binaries_present,
      r.binaries_damaged ? fmt::format(", {} damaged (not copied)", r.binaries_damaged) : "", r.candidates_copied,
      r.candidates_kept, r.winners_copied, r.winners_kept);
  for (const auto& w : r.warnings) out += fmt::format("warning: {}\n", w);
  return out;
}

// --- export --------------------------------------------------------------------------------------

int64_t export_cache(const std::string& source, const std::string& dest) {
  std::vector<std::string> warnings;
  auto store = open_store(source, true, warnings);
  store->export_to(dest);
  return static_cast<int64_t>(std::filesystem::file_size(dest));
}

// --- prune ---------------------------------------------------------------------------------------

PruneReport prune_cache(const std::string& path, const PruneOptions& o) {
  if (!o.older_than_s && !o.arch && !o.tool_version && !o.stale)
    throw std::invalid_argument("prune: give at least one of --older-than, --arch, --tool-version, --stale");
  PruneReport rep;
  rep.path = path;
  rep.dry_run = o.dry_run;
  std::vector<std::string> warnings;
  if (!std::filesystem::exists(path)) throw cache::Error(fmt::format("{}: no such cache file", path));
  auto store = open_store(path, o.dry_run, warnings);
  rep.bytes_before = store->stats().file_bytes;
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  const std::optional<int64_t> before = o.older_than_s ? std::optional<int64_t>(now - *o.older_than_s) : std::nullopt;
  const std::string current(tool_version());
  auto binary_goes = [&](const cache::BinaryRecord& b) {
    if (before && !(b.created_unix < *before)) return false;
    if (o.arch && b.arch != *o.arch) return false;
    if (o.tool_version && b.tool_version != *o.tool_version) return false;
    if (o.stale && b.tool_version == current && b.codegen_version == codegen_version()) return false;
    return true;
  };
  auto row_goes = [&](const TuningRowFacts& r) {
    if (before && !(r.created_unix < *before)) return false;
    if (o.arch && r.arch != *o.arch) return false;
    if (o.tool_version && r.tool_version != *o.tool_version) return false;
    if (o.stale && r.tool_version == current) return false;
    return true;
  };
  const std::vector<TuningRowFacts> rows = tuning_rows(path);
  if (o.dry_run) {
    for (const auto& b : store->list_binaries(false)) rep.binaries_removed += binary_goes(b);
    for (const auto& r : rows) rep.tuning_rows_removed += row_goes(r);
    rep.bytes_after = rep.bytes_before;
    return rep;
  }
  rep.binaries_removed = static_cast<int64_t>(store->erase_binaries(binary_goes));
  // erase_tuning matches fields exactly; "stale" is every version but this one.
  std::set<std::optional<std::string>> versions;
  if (o.stale) {
    for (const auto& r : rows)
      if (r.tool_version != current && (!o.tool_version || r.tool_version == *o.tool_version)) versions.insert(r.tool_version);
  } else {
    versions.insert(o.tool_version);
  }
  for (const auto& v : versions) {
    cache::TuningFilter f;
    f.arch = o.arch;
    f.tool_version = v;
    f.created_before_unix = before;
    rep.tuning_rows_removed += static_cast<int64_t>(store->erase_tuning(f));
  }
  if (rep.binaries_removed + rep.tuning_rows_removed > 0) store->vacuum();
  rep.bytes_after = store->stats().file_bytes;
  return rep;
}

std::string format_text(const PruneReport& r) {
  return fmt::format("{}: {}{} binar{} and {} tuning row{}{}\n", r.path, r.dry_run ? "would remove " : "removed ",
                     r.binaries_removed, r.binaries_removed == 1 ? "y" : "ies", r.tuning_rows_removed,
                     r.tuning_rows_removed == 1 ? "" : "s",
                     r.dry_run ? "" : fmt::format("; {} -> {} bytes", r.bytes_before, r.bytes_after));
}

} // namespace attnjit::tuner
