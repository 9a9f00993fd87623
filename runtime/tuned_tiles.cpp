#include "runtime/tuned_tiles.h"

#include <algorithm>
#include <charconv>
#include <map>

#include <fmt/format.h>

#include "cache/store.h"
#include "codegen/errors.h"

namespace attnjit {

int64_t bucket_edge(int64_t x, int64_t first, int64_t last) {
  int64_t e = first;
  while (e < x && e < last) e *= 4;
  return std::min(e, last);
}

namespace {

int pow2_ceil(int64_t x, int cap) {
  int p = 1;
  while (p < x && p < cap) p *= 2;
  return p;
}

} // namespace

ShapeBucket decode_bucket(int batch, int max_seqlen_q, int max_seqlen_k, int group) {
  ShapeBucket b;
  b.family = KernelFamily::decode;
  b.rows = pow2_ceil(static_cast<int64_t>(std::max(1, max_seqlen_q)) * std::max(1, group), kMaxBucketRows);
  b.batch = static_cast<int>(bucket_edge(std::max(1, batch), kFirstBatchEdge, kLastBatchEdge));
  b.kv = static_cast<int>(bucket_edge(std::max(1, max_seqlen_k), kFirstKvEdge, kLastKvEdge));
  return b;
}

ShapeBucket prefill_bucket(int max_seqlen_q, int max_seqlen_k) {
  ShapeBucket b;
  b.family = KernelFamily::prefill;
  b.q = static_cast<int>(bucket_edge(std::max(1, max_seqlen_q), kFirstQEdge, kLastQEdge));
  b.kv = static_cast<int>(bucket_edge(std::max({1, max_seqlen_k, b.q}), kFirstKvEdge, kLastKvEdge));
  return b;
}

ShapeBucket shape_bucket(KernelFamily family, int batch, int max_seqlen_q, int max_seqlen_k, int group) {
  return family == KernelFamily::decode ? decode_bucket(batch, max_seqlen_q, max_seqlen_k, group)
                                        : prefill_bucket(max_seqlen_q, max_seqlen_k);
}

std::string ShapeBucket::name() const {
  if (family == KernelFamily::decode) return fmt::format("decode:r{}:b{}:kv{}", rows, batch, kv);
  return fmt::format("prefill:q{}:kv{}", q, kv);
}

std::optional<ShapeBucket> parse_bucket(std::string_view s) {
  auto take = [&](std::string_view prefix, int& out) {
    if (!s.starts_with(prefix)) return false;
    s.remove_prefix(prefix.size());
    const char* end = s.data() + s.size();
    auto [ptr, ec] = std::from_chars(s.data(), end, out);
    if (ec != std::errc() || out <= 0) return false;
    s.remove_prefix(static_cast<size_t>(ptr - s.data()));
    return true;
  };
  ShapeBucket b;
  if (s.starts_with("decode:")) {
    s.remove_prefix(7);
    b.family = KernelFamily::decode;
    if (!take("r", b.rows) || !take(":b", b.batch) || !take(":kv", b.kv) || !s.empty()) return std::nullopt;
    // Only canonical names: the bucket of its own upper edges.
    if (decode_bucket(b.batch, 1, b.kv, b.rows) != b) return std::nullopt;
    return b;
  }
  if (s.starts_with("prefill:")) {
    s.remove_prefix(8);
    b.family = KernelFamily::prefill;
    if (!take("q", b.q) || !take(":kv", b.kv) || !s.empty()) return std::nullopt;
    if (prefill_bucket(b.q, b.kv) != b) return std::nullopt;
    return b;
  }
  return std::nullopt;
}

std::string tuning_key(const KernelSpec& spec, const TuningDevice& device, const ShapeBucket& bucket) {
  return stable_hash_hex(fmt::format("attnjit-tuning-1\n{}\n{}\n{}\n{}\n{}", spec.canonical(), device.name,
                                     device.sm_count, device.arch, bucket.name()));
}

std::optional<TunedTile> tuned_tile_for_bucket(cache::LayeredStore& store, const KernelSpec& spec,
                                               const TuningDevice& device, const ShapeBucket& bucket,
                                               const std::function<void(std::string_view)>& warn) {
  const std::string key = tuning_key(spec, device, bucket);
  const std::optional<cache::WinnerRecord> w = store.winner(key);
  if (!w) return std::nullopt;
  try {
    const TileConfig tile = parse_tile(w->tile);
    validate(spec, tile, device.arch);
    return TunedTile{tile, bucket.name(), key, w->median_us};
  } catch (const SpecError& e) {
    if (warn) warn(fmt::format("tuned winner {} for {} ignored: {}", w->tile, bucket.name(), e.what()));
    return std::nullopt;
  }
}

std::optional<TunedTile> tuned_tile_for_plan(cache::LayeredStore& store, const KernelSpec& spec,
                                             const TuningDevice& device, int num_q_heads, int num_kv_heads,
                                             int max_batch, int64_t max_total_q,
                                             const std::function<void(std::string_view)>& warn) {
  std::vector<ShapeBucket> buckets;
  if (spec.family == KernelFamily::decode) {
    const int group = num_kv_heads > 0 ? std::max(1, num_q_heads / num_kv_heads) : 1;
    for (int64_t kv = kFirstKvEdge; kv <= kLastKvEdge; kv *= 4)
      buckets.push_back(decode_bucket(max_batch, 1, static_cast<int>(kv), group));
  } else {
    const int64_t q_last = bucket_edge(std::max<int64_t>(1, max_total_q), kFirstQEdge, kLastQEdge);
    for (int64_t q = kFirstQEdge; q <= q_last; q *= 4)
      for (int64_t kv = std::max<int64_t>(q, kFirstKvEdge); kv <= kLastKvEdge; kv *= 4)
        buckets.push_back(prefill_bucket(static_cast<int>(q), static_cast<int>(kv)));
  }
  struct Vote {
    int wins = 0;
    int64_t best_kv = 0, best_rows = 0; // the largest bucket it wins, for ties
    TunedTile first;
  };
  std::map<std::string, Vote> votes;
  for (const ShapeBucket& b : buckets) {
    std::optional<TunedTile> t = tuned_tile_for_bucket(store, spec, device, b, warn);
    if (!t) continue;
    Vote& v = votes[t->tile.canonical()];
    if (v.wins == 0) v.first = *t;
    ++v.wins;
    const int64_t rows = b.family == KernelFamily::decode ? b.batch : b.q;
    if (b.kv > v.best_kv || (b.kv == v.best_kv && rows > v.best_rows)) {
      v.best_kv = b.kv;
      v.best_rows = rows;
      v.first = *t;
    }
  }
  const Vote* best = nullptr;
  for (const auto& [tile, v] : votes) {
    if (!best || v.wins > best->wins ||
        (v.wins == best->wins &&
         (v.best_kv > best->best_kv || (v.best_kv == best->best_kv && v.best_rows > best->best_rows))))
      best = &v;
  }
  if (!best) return std::nullopt;
  return best->first;
}

} // namespace attnjit
