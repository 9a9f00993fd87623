#include "reference.h"

#include <algorithm>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <atomic>
#include <cmath>
#include <limits>
#include <sstream>
#include <thread>

namespace attnjit::testing {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Expand a buffer of stored bits to floats once, so the inner loops index plain arrays.
std::vector<float> widen(const std::vector<uint16_t>& v, attnjit_dtype dtype) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bits_to_float(v[i], dtype);
  return out;
}

// Runs fn(i) for i in [0, n) on `threads` threads (0: all cores).
void parallel_each(int64_t n, unsigned threads, const std::function<void(int64_t)>& fn) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<int64_t>(threads, std::max<int64_t>(1, n)));
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n;) fn(i);
  };
  if (threads <= 1) {
    worker();
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned i = 0; i < threads; ++i) pool.emplace_back(worker);
  for (auto& th : pool) th.join();
}

// What one query row is: token t, q head h, sequence b, row i of the sequence at position pos.
struct RowInfo {
  int64_t t = 0;
  int32_t h = 0, kvh = 0, b = 0;
  int64_t i = 0, pos = 0;
  int32_t q_len = 0, kv_len = 0;
};

RowInfo row_info(const HostProblem& p, int64_t t, int32_t h) {
  RowInfo r;
  r.t = t;
  r.h = h;
  r.kvh = p.kv_head_of(h);
  r.b = p.seq_of_token[t];
  r.q_len = p.spec.seqs[r.b].q_len;
  r.kv_len = p.spec.seqs[r.b].kv_len;
  r.i = t - p.cu_seqlens_q[r.b];
  r.pos = static_cast<int64_t>(r.kv_len) - r.q_len + r.i;
  return r;
}

// The stored inputs as doubles-to-be, and the constants of the problem.
struct Inputs {
  const HostProblem& p;
  std::vector<float> q, k, v; // stored values (fp8: not yet scaled)
  double scale = 0;
  double cap = 0; // soft cap, 0 = off
  double eps_abs = 0, eps_rel = 0;

  Inputs(const HostProblem& hp, const ReferenceOptions& opt) : p(hp) {
    q = widen(p.q, p.spec.q_dtype);
    k = widen(p.k_data, p.spec.kv_dtype);
    v = p.packed() ? k : widen(p.v_data, p.spec.kv_dtype);
    scale = effective_scale(p.spec);
    cap = p.spec.pattern.soft_cap > 0 ? static_cast<double>(p.spec.pattern.soft_cap) : 0.0;
    eps_abs = opt.ambiguity_abs + (cap > 0 ? std::ldexp(cap, -10) : 0.0);
    eps_rel = opt.ambiguity_rel;
  }
  double eps(double magnitude) const { return eps_abs + eps_rel * std::abs(magnitude); }
};

// Masks of the contract for row r (causal, window + sink tokens, block mask), with the block
// mask's row read once.
struct RowMask {
  std::vector<char> listed; // block sparse: listed[kv block]
  bool block_sparse = false;
  int32_t sbkv = 1;
};

RowMask row_mask(const HostProblem& p, const RowInfo& r) {
  RowMask rm;
  const PatternSpec& pt = p.spec.pattern;
  if (!pt.block_sparse_on()) return rm;
  rm.block_sparse = true;
  rm.sbkv = pt.sparse_block_kv;
  rm.listed.assign(static_cast<size_t>((r.kv_len + rm.sbkv - 1) / rm.sbkv), 0);
  const int64_t row = p.mask_row(r.b, r.h, r.i);
  if (row < 0) return rm;
  const int32_t* list = &p.kv_indices[static_cast<size_t>(row) * p.mask_max_kv_blocks];
  for (int32_t c = 0; c < p.kv_num_blocks[row]; ++c)
    if (list[c] >= 0 && list[c] < static_cast<int32_t>(rm.listed.size())) rm.listed[list[c]] = 1;
  return rm;
}

bool visible_under(const HostProblem& p, const RowInfo& r, const RowMask& rm, int64_t j) {
  const PatternSpec& pt = p.spec.pattern;
  if (j < 0 || j >= r.kv_len) return false;
  if (p.spec.causal && j > r.pos) return false;
  if (pt.sliding_window && !(r.pos - j < pt.window || j < pt.sink_tokens)) return false;
  if (rm.block_sparse && !rm.listed[j / rm.sbkv]) return false;
  return true;
}

// s[j] for j in [0, kv_len): the scaled (dequantized, capped) score, -inf where not visible.
void row_scores(const Inputs& in, const RowInfo& r, std::vector<double>& s) {
  const HostProblem& p = in.p;
  const RowMask rm = row_mask(p, r);
  const int32_t dqk = p.spec.head_dim_qk;
  const float* qr = &in.q[p.q_index(r.t, r.h)];
  const double sc = in.scale * p.k_scale_of(r.kvh);
  s.assign(static_cast<size_t>(r.kv_len), kNegInf);
  for (int64_t j = 0; j < r.kv_len; ++j) {
    if (!visible_under(p, r, rm, j)) continue;
    const float* kr = &in.k[p.k_index(r.b, j, r.kvh)];
    double dot = 0;
    for (int32_t d = 0; d < dqk; ++d) dot += static_cast<double>(qr[d]) * kr[d];
    double x = sc * dot;
    if (in.cap > 0) x = in.cap * std::tanh(x / in.cap);
    s[j] = x;
  }
}

// Softmax of the kept keys (and the sink) into out[0, dv) and lse. keep == nullptr: every
// visible key. Returns the row max m and the denominator l (sink included) through the pointers.
void finish_row(const Inputs& in, const RowInfo& r, const std::vector<double>& s, const std::vector<char>* keep,
                double* out, double& lse, double* m_out = nullptr, double* l_out = nullptr) {
  const HostProblem& p = in.p;
  const int32_t dv = p.spec.head_dim_v;
  const bool has_sink = p.spec.pattern.learned_sinks;
  const double sink = has_sink ? static_cast<double>(p.sinks[r.h]) : kNegInf;
  auto kept = [&](int64_t j) { return s[j] != kNegInf && (keep == nullptr || (*keep)[j]); };
  double m = sink;
  for (int64_t j = 0; j < r.kv_len; ++j)
    if (kept(j)) m = std::max(m, s[j]);
  for (int32_t d = 0; d < dv; ++d) out[d] = 0.0;
  if (m == kNegInf) { // nothing kept, no sink
    lse = kNegInf;
    if (m_out) *m_out = m;
    if (l_out) *l_out = 0;
    return;
  }
  double l = has_sink ? std::exp(sink - m) : 0.0;
  const double vs = p.v_scale_of(r.kvh);
  for (int64_t j = 0; j < r.kv_len; ++j) {
    if (!kept(j)) continue;
    const double w = std::exp(s[j] - m);
    l += w;
    const float* vr = &in.v[p.v_index(r.b, j, r.kvh)];
    for (int32_t d = 0; d < dv; ++d) out[d] += w * vr[d];
  }
  for (int32_t d = 0; d < dv; ++d) out[d] = out[d] * vs / l;
  lse = m + std::log(l);
  if (m_out) *m_out = m;
  if (l_out) *l_out = l;
}

// One alternative outcome of an ambiguous choice: keys to drop and keys to add (-1: none).
struct Flip {
  std::vector<int64_t> drop, add;
};

struct NmPick {
  std::vector<char> keep;
  std::vector<Flip> flips;
};

NmPick nm_pick(const std::vector<double>& s, int64_t pos, int32_t n, int32_t m, int32_t dense_sink,
               int32_t dense_recent, const Inputs* ambiguity) {
  const int64_t kv_len = static_cast<int64_t>(s.size());
  NmPick out;
  out.keep.assign(s.size(), 0);
  auto exempt = [&](int64_t j) { return j < dense_sink || pos - j < dense_recent; };
  std::vector<int64_t> vis;
  for (int64_t g0 = 0; g0 < kv_len; g0 += m) {
    vis.clear();
    for (int64_t j = g0; j < std::min<int64_t>(kv_len, g0 + m); ++j)
      if (s[j] != kNegInf) vis.push_back(j);
    // Rank: larger score first, lower index first among equal scores.
    std::stable_sort(vis.begin(), vis.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
    for (size_t r = 0; r < vis.size(); ++r)
      if (static_cast<int32_t>(r) < n || exempt(vis[r])) out.keep[vis[r]] = 1;
    if (ambiguity != nullptr && static_cast<int32_t>(vis.size()) > n) {
      const int64_t a = vis[n - 1], b = vis[n]; // last kept by rank, first dropped by rank
      const double gap = s[a] - s[b];
      if (gap < ambiguity->eps(std::max(std::abs(s[a]), std::abs(s[b])))) {
        Flip f;
        if (!exempt(a)) f.drop.push_back(a);
        if (!exempt(b)) f.add.push_back(b);
        if (!f.drop.empty() || !f.add.empty()) out.flips.push_back(std::move(f));
      }
    }
  }
  return out;
}

// The answers of a row under every combination of its first kMaxAmbiguousPerRow flips (the
// reference's own outcome excluded).
std::vector<RowVariant> variants(const Inputs& in, const RowInfo& r, const std::vector<double>& s,
                                 const std::vector<char>& keep, const std::vector<Flip>& flips) {
  std::vector<RowVariant> out;
  const size_t nf = std::min<size_t>(flips.size(), kMaxAmbiguousPerRow);
  std::vector<char> alt;
  for (uint32_t mask = 1; mask < (1u << nf); ++mask) {
    alt = keep;
    for (size_t f = 0; f < nf; ++f) {
      if (!(mask & (1u << f))) continue;
      for (int64_t j : flips[f].drop) alt[j] = 0;
      for (int64_t j : flips[f].add) alt[j] = 1;
    }
    RowVariant v;
    v.o.resize(in.p.spec.head_dim_v);
    finish_row(in, r, s, &alt, v.o.data(), v.lse);
    out.push_back(std::move(v));
  }
  return out;
}

Reference empty_reference(const HostProblem& p) {
  Reference ref;
  ref.total_q = p.total_q;
  ref.num_q_heads = p.spec.num_q_heads;
  ref.head_dim_v = p.spec.head_dim_v;
  ref.o.assign(static_cast<size_t>(p.total_q) * p.spec.num_q_heads * p.spec.head_dim_v, 0.0);
  ref.lse.assign(static_cast<size_t>(p.total_q) * p.spec.num_q_heads, 0.0);
  return ref;
}

// Thread-local pieces merged into a Reference at the end.
struct Partial {
  std::map<int64_t, std::vector<RowVariant>> alternates;
  int64_t ambiguous = 0, unresolved = 0, empty = 0;
};

void merge(Reference& ref, std::vector<Partial>& parts) {
  for (auto& part : parts) {
    for (auto& [key, v] : part.alternates) ref.alternates[key] = std::move(v);
    ref.ambiguous += part.ambiguous;
    ref.ambiguous_unresolved += part.unresolved;
    ref.empty_rows += part.empty;
  }
}

} // namespace

bool key_visible(const HostProblem& p, int32_t b, int32_t h, int64_t i, int64_t j) {
  const int64_t t = p.cu_seqlens_q[b] + i;
  const RowInfo r = row_info(p, t, h);
  return visible_under(p, r, row_mask(p, r), j);
}

std::vector<char> nm_select(const std::vector<double>& scores, int64_t pos, int32_t n, int32_t m,
                            int32_t dense_sink_tokens, int32_t dense_recent_tokens) {
  return nm_pick(scores, pos, n, m, dense_sink_tokens, dense_recent_tokens, nullptr).keep;
}

Reference compute_reference(const HostProblem& p, unsigned threads) {
  ReferenceOptions opt;
  opt.threads = threads;
  return compute_reference(p, opt);
}

Reference compute_reference(const HostProblem& p, const ReferenceOptions& opt) {
  const ProblemSpec& s = p.spec;
  const PatternSpec& pt = s.pattern;
  const int32_t hq = s.num_q_heads, dv = s.head_dim_v;
  const Inputs in(p, opt);
  Reference ref = empty_reference(p);
  std::vector<Partial> parts;
  std::mutex mu;
  parallel_each(p.total_q, opt.threads, [&](int64_t t) {
    std::vector<double> scores;
    Partial local;
    for (int32_t h = 0; h < hq; ++h) {
      const RowInfo r = row_info(p, t, h);
      row_scores(in, r, scores);
      double* out = &ref.o[(static_cast<size_t>(t) * hq + h) * dv];
      double& lse = ref.lse[static_cast<size_t>(h) * p.total_q + t];
      if (pt.nm_on() && r.q_len > 1) {
        const NmPick pick = nm_pick(scores, r.pos, pt.nm_n, pt.nm_m, pt.nm_dense_sink_tokens, pt.nm_dense_recent_tokens, &in);
        finish_row(in, r, scores, &pick.keep, out, lse);
        if (!pick.flips.empty()) {
          local.ambiguous += static_cast<int64_t>(pick.flips.size());
          if (pick.flips.size() > static_cast<size_t>(kMaxAmbiguousPerRow))
            local.unresolved += static_cast<int64_t>(pick.flips.size()) - kMaxAmbiguousPerRow;
          local.alternates[t * hq + h] = variants(in, r, scores, pick.keep, pick.flips);
        }
      } else {
        finish_row(in, r, scores, nullptr, out, lse);
      }
      bool any = false;
      for (double x : scores) any = any || x != kNegInf;
      if (!any) ++local.empty;
    }
    if (local.ambiguous || local.empty || !local.alternates.empty()) {
      std::lock_guard<std::mutex> lock(mu);
      parts.push_back(std::move(local));
    }
  });
  merge(ref, parts);
  return ref;
}

// ---- Skip-softmax ----------------------------------------------------------------------------

namespace {

// (token, q head) of M row r of a query tile.
void tile_row(const HostProblem& p, const QueryTile& qt, int64_t r, int64_t& t, int32_t& h) {
  const int64_t q_start = p.cu_seqlens_q[qt.seq];
  if (qt.packed) {
    const int32_t group = p.spec.num_q_heads / p.spec.num_kv_heads;
    t = q_start + r / group;
    h = qt.head * group + static_cast<int32_t>(r % group);
  } else {
    t = q_start + r;
    h = qt.head;
  }
}

} // namespace

std::vector<KvTile> default_kv_tiles(const HostProblem& p, const QueryTile& qt, int32_t block_n) {
  const ProblemSpec& s = p.spec;
  const PatternSpec& pt = s.pattern;
  const int32_t q_len = s.seqs[qt.seq].q_len, kv_len = s.seqs[qt.seq].kv_len;
  const int64_t group = qt.packed ? s.num_q_heads / s.num_kv_heads : 1;
  const int64_t pos_first = kv_len - q_len + qt.row_first / group;
  const int64_t pos_last = kv_len - q_len + (qt.row_end - 1) / group;
  const int64_t key_end = s.causal ? std::min<int64_t>(kv_len, pos_last + 1) : kv_len;
  const int64_t tiles = (std::max<int64_t>(key_end, 0) + block_n - 1) / block_n;
  std::vector<int64_t> list;
  if (pt.sliding_window) {
    const int64_t window_begin = std::max<int64_t>(0, pos_first - pt.window + 1);
    const int64_t sink_end = std::min<int64_t>(pt.sink_tokens, key_end);
    const int64_t second_begin = std::min<int64_t>(window_begin / block_n, tiles);
    const int64_t first_end = std::min<int64_t>((std::max<int64_t>(sink_end, 0) + block_n - 1) / block_n, second_begin);
    for (int64_t i = 0; i < first_end; ++i) list.push_back(i);
    for (int64_t i = second_begin; i < tiles; ++i) list.push_back(i);
  } else {
    for (int64_t i = 0; i < tiles; ++i) list.push_back(i);
  }
  std::vector<KvTile> out;
  for (int64_t i : list) out.push_back({i * block_n, std::min<int64_t>((i + 1) * block_n, kv_len)});
  return out;
}

std::vector<int32_t> even_split_starts(int32_t list_size, int32_t num_splits) {
  std::vector<int32_t> starts;
  if (num_splits <= 1) return starts;
  const int32_t per = (list_size + num_splits - 1) / num_splits;
  for (int32_t k = 1; k < num_splits; ++k) starts.push_back(std::min(list_size, k * per));
  return starts;
}

SkipTiling make_skip_tiling(int32_t block_m, int32_t block_n, bool pack_gqa, int32_t num_splits) {
  SkipTiling t;
  t.block_m = block_m;
  t.block_n = block_n;
  t.pack_gqa = pack_gqa;
  t.kv_tiles = [block_n](const HostProblem& p, const QueryTile& qt) { return default_kv_tiles(p, qt, block_n); };
  if (num_splits > 1)
    t.split_starts = [num_splits](const QueryTile&, int32_t n) { return even_split_starts(n, num_splits); };
  return t;
}

std::vector<QueryTile> query_tiles(const HostProblem& p, int32_t block_m, bool pack_gqa) {
  const ProblemSpec& s = p.spec;
  const int32_t group = s.num_q_heads / s.num_kv_heads;
  std::vector<QueryTile> out;
  for (int32_t b = 0; b < p.batch; ++b) {
    const int64_t rows = static_cast<int64_t>(s.seqs[b].q_len) * (pack_gqa ? group : 1);
    const int32_t heads = pack_gqa ? s.num_kv_heads : s.num_q_heads;
    for (int32_t head = 0; head < heads; ++head)
      for (int64_t r0 = 0; r0 < rows; r0 += block_m) {
        QueryTile qt;
        qt.seq = b;
        qt.head = head;
        qt.row_first = r0;
        qt.row_end = std::min<int64_t>(rows, r0 + block_m);
        qt.packed = pack_gqa;
        out.push_back(qt);
      }
  }
  return out;
}

SkipReference compute_skip_reference(const HostProblem& p, const SkipTiling& tiling, const ReferenceOptions& opt) {
  const ProblemSpec& s = p.spec;
  const PatternSpec& pt = s.pattern;
  if (pt.nm_on() || pt.block_sparse_on())
    throw std::invalid_argument("compute_skip_reference: skip-softmax does not compose with N:M or block sparse");
  if (!pt.skip_on()) throw std::invalid_argument("compute_skip_reference: the problem has no skip_threshold");
  if (tiling.block_m <= 0 || tiling.block_n <= 0) throw std::invalid_argument("compute_skip_reference: block_m/block_n");
  const int32_t hq = s.num_q_heads, dv = s.head_dim_v;
  const double ln_lambda = std::log(static_cast<double>(pt.skip_threshold));
  const Inputs in(p, opt);
  const std::vector<QueryTile> qtiles = query_tiles(p, tiling.block_m, tiling.pack_gqa);

  SkipReference res;
  res.ref = empty_reference(p);
  res.dense = empty_reference(p);
  res.query_tiles = static_cast<int64_t>(qtiles.size());
  const size_t nrows = static_cast<size_t>(p.total_q) * hq;
  res.dropped_fraction.assign(nrows, 0.0);
  res.o_bound.assign(nrows, 0.0);
  res.dropped_keys.assign(nrows, 0);

  std::vector<Partial> parts;
  std::mutex mu;
  std::atomic<int64_t> seen{0}, skipped{0}, ambiguous{0};
  std::string failure;
  parallel_each(static_cast<int64_t>(qtiles.size()), opt.threads, [&](int64_t qi) {
    const QueryTile& qt = qtiles[qi];
    const int64_t nr = qt.row_end - qt.row_first;
    std::vector<RowInfo> rows(nr);
    std::vector<std::vector<double>> sc(nr);
    for (int64_t r = 0; r < nr; ++r) {
      int64_t t;
      int32_t h;
      tile_row(p, qt, qt.row_first + r, t, h);
      rows[r] = row_info(p, t, h);
      row_scores(in, rows[r], sc[r]);
    }
    const int64_t kv_len = s.seqs[qt.seq].kv_len;
    const std::vector<KvTile> tiles = tiling.kv_tiles ? tiling.kv_tiles(p, qt) : default_kv_tiles(p, qt, tiling.block_n);
    // The list must cover every visible key, and each key at most once.
    std::vector<char> covered(static_cast<size_t>(kv_len), 0);
    for (const KvTile& kt : tiles)
      for (int64_t j = std::max<int64_t>(0, kt.begin); j < std::min<int64_t>(kv_len, kt.end); ++j) {
        if (covered[j]) {
          std::lock_guard<std::mutex> lock(mu);
          failure = "tile list visits key " + std::to_string(j) + " twice";
          return;
        }
        covered[j] = 1;
      }
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t j = 0; j < kv_len; ++j)
        if (sc[r][j] != kNegInf && !covered[j]) {
          std::lock_guard<std::mutex> lock(mu);
          failure = "tile list misses visible key " + std::to_string(j) + " of sequence " + std::to_string(qt.seq);
          return;
        }

    std::vector<int32_t> starts;
    if (tiling.split_starts) starts = tiling.split_starts(qt, static_cast<int32_t>(tiles.size()));
    std::vector<char> split_begin(tiles.size() + 1, 0);
    split_begin[0] = 1;
    for (int32_t st : starts)
      if (st >= 0 && st <= static_cast<int32_t>(tiles.size())) split_begin[st] = 1;

    // Visit the list: a skip decision per tile, the running max per row (reset at each split).
    std::vector<char> skip(tiles.size(), 0);
    std::vector<size_t> amb;
    std::vector<double> m(nr, kNegInf), rowmax(nr);
    for (size_t ti = 0; ti < tiles.size(); ++ti) {
      if (split_begin[ti]) std::fill(m.begin(), m.end(), kNegInf);
      const int64_t jb = std::max<int64_t>(0, tiles[ti].begin), je = std::min<int64_t>(kv_len, tiles[ti].end);
      double margin = std::numeric_limits<double>::infinity(); // skip iff margin > 0
      double at_m = 0;                                          // |m| of the binding row
      for (int64_t r = 0; r < nr; ++r) {
        rowmax[r] = kNegInf;
        for (int64_t j = jb; j < je; ++j) rowmax[r] = std::max(rowmax[r], sc[r][j]);
        double mr;
        if (m[r] == kNegInf) {
          mr = kNegInf; // max < -inf + ln(lambda) is false whatever max is: never skipped
        } else if (rowmax[r] == kNegInf) {
          mr = std::numeric_limits<double>::infinity(); // nothing visible: this row agrees
        } else {
          mr = m[r] + ln_lambda - rowmax[r];
        }
        if (mr < margin) {
          margin = mr;
          at_m = m[r] == kNegInf ? 0.0 : m[r];
        }
      }
      skip[ti] = margin > 0;
      if (std::isfinite(margin) && std::abs(margin) < in.eps(at_m)) amb.push_back(ti);
      // A skipped tile's maxima are below m + ln(lambda) < m: the running max does not move.
      if (!skip[ti])
        for (int64_t r = 0; r < nr; ++r) m[r] = std::max(m[r], rowmax[r]);
    }
    int64_t nskip = 0;
    for (char x : skip) nskip += x;
    seen += static_cast<int64_t>(tiles.size());
    skipped += nskip;
    ambiguous += static_cast<int64_t>(amb.size());

    Partial local;
    std::vector<char> keep;
    for (int64_t r = 0; r < nr; ++r) {
      const RowInfo& ri = rows[r];
      const size_t row = static_cast<size_t>(ri.t) * hq + ri.h;
      keep.assign(static_cast<size_t>(kv_len), 1);
      for (size_t ti = 0; ti < tiles.size(); ++ti)
        if (skip[ti])
          for (int64_t j = std::max<int64_t>(0, tiles[ti].begin); j < std::min<int64_t>(kv_len, tiles[ti].end); ++j) keep[j] = 0;
      finish_row(in, ri, sc[r], &keep, &res.ref.o[row * dv], res.ref.lse[static_cast<size_t>(ri.h) * p.total_q + ri.t]);
      double m_dense = 0, l_dense = 0;
      double* dense = &res.dense.o[row * dv];
      finish_row(in, ri, sc[r], nullptr, dense, res.dense.lse[static_cast<size_t>(ri.h) * p.total_q + ri.t], &m_dense,
                 &l_dense);
      // The dropped mass and the bound on the distance to dense.
      double onorm = 0;
      for (int32_t d = 0; d < dv; ++d) onorm += dense[d] * dense[d];
      onorm = std::sqrt(onorm);
      const double vs = p.v_scale_of(ri.kvh);
      const auto dropped = [&](const std::vector<char>& kp, double& f, int64_t& nd) {
        double dmass = 0, vmax = 0;
        nd = 0;
        for (int64_t j = 0; j < kv_len; ++j) {
          if (kp[j] || sc[r][j] == kNegInf) continue;
          ++nd;
          dmass += std::exp(sc[r][j] - m_dense);
          const float* vr = &in.v[p.v_index(ri.b, j, ri.kvh)];
          double n2 = 0;
          for (int32_t d = 0; d < dv; ++d) n2 += static_cast<double>(vr[d]) * vr[d];
          vmax = std::max(vmax, std::sqrt(n2) * vs);
        }
        f = l_dense > 0 ? dmass / l_dense : 0.0;
        return f < 1 ? f / (1 - f) * (onorm + vmax) : std::numeric_limits<double>::infinity();
      };
      {
        double f = 0;
        int64_t nd = 0;
        res.o_bound[row] = dropped(keep, f, nd);
        res.dropped_fraction[row] = f;
        res.dropped_keys[row] = nd;
      }
      if (!amb.empty()) {
        std::vector<Flip> flips;
        for (size_t ti : amb) {
          Flip fl;
          for (int64_t j = std::max<int64_t>(0, tiles[ti].begin); j < std::min<int64_t>(kv_len, tiles[ti].end); ++j)
            if (sc[r][j] != kNegInf) (skip[ti] ? fl.add : fl.drop).push_back(j);
          if (!fl.add.empty() || !fl.drop.empty()) flips.push_back(std::move(fl));
        }
        if (!flips.empty()) {
          local.ambiguous += static_cast<int64_t>(flips.size());
          if (flips.size() > static_cast<size_t>(kMaxAmbiguousPerRow))
            local.unresolved += static_cast<int64_t>(flips.size()) - kMaxAmbiguousPerRow;
          local.alternates[static_cast<int64_t>(row)] = variants(in, ri, sc[r], keep, flips);
          // The bound must hold whichever outcome the kernel took: the largest over the alternates.
          const size_t nf = std::min<size_t>(flips.size(), kMaxAmbiguousPerRow);
          std::vector<char> alt;
          for (uint32_t mask = 1; mask < (1u << nf); ++mask) {
            alt = keep;
            for (size_t fi = 0; fi < nf; ++fi) {
              if (!(mask & (1u << fi))) continue;
              for (int64_t j : flips[fi].drop) alt[j] = 0;
              for (int64_t j : flips[fi].add) alt[j] = 1;
            }
            double f = 0;
            int64_t nd = 0;
            const double b = dropped(alt, f, nd);
            res.o_bound[row] = std::max(res.o_bound[row], b);
            res.dropped_fraction[row] = std::max(res.dropped_fraction[row], f);
            res.dropped_keys[row] = std::max(res.dropped_keys[row], nd);
          }
        }
      }
    }
    if (!local.alternates.empty()) {
      std::lock_guard<std::mutex> lock(mu);
      parts.push_back(std::move(local));
    }
  });
  if (!failure.empty()) throw std::logic_error("compute_skip_reference: " + failure);
  merge(res.ref, parts);
  res.tiles_seen = seen;
  res.tiles_skipped = skipped;
  res.ambiguous_decisions = ambiguous;
  return res;
}

// ---- Block-mask builder -------------------------------------------------------------------------

BlockMaskReference reference_block_mask(const HostProblem& p, const BlockMaskSpec& spec, int32_t mask_q_blocks) {
  const ProblemSpec& s = p.spec;
  if (is_fp8(s.kv_dtype) || s.kv_dtype != s.q_dtype)
    throw std::invalid_argument("reference_block_mask: q and K must share one 16-bit dtype");
  const int32_t hq = s.num_q_heads, dqk = s.head_dim_qk;
  BlockMaskReference ref;
  ref.mask_q_blocks = mask_q_blocks;
  ref.rows.resize(static_cast<size_t>(p.batch) * hq * mask_q_blocks);
  const Inputs in(p, ReferenceOptions{});
  parallel_each(static_cast<int64_t>(p.batch) * hq, 0, [&](int64_t bh) {
    const int32_t b = static_cast<int32_t>(bh / hq), h = static_cast<int32_t>(bh % hq);
    const int32_t kvh = p.kv_head_of(h);
    const int32_t q_len = s.seqs[b].q_len, kv_len = s.seqs[b].kv_len;
    // Mean-pooled keys of every KV block.
    const int32_t nkv = (kv_len + spec.block_kv - 1) / spec.block_kv;
    std::vector<double> kpool(static_cast<size_t>(nkv) * dqk, 0.0);
    for (int32_t c = 0; c < nkv; ++c) {
      const int64_t j0 = static_cast<int64_t>(c) * spec.block_kv, j1 = std::min<int64_t>(kv_len, j0 + spec.block_kv);
      for (int64_t j = j0; j < j1; ++j) {
        const float* kr = &in.k[p.k_index(b, j, kvh)];
        for (int32_t d = 0; d < dqk; ++d) kpool[static_cast<size_t>(c) * dqk + d] += kr[d];
      }
      for (int32_t d = 0; d < dqk; ++d) kpool[static_cast<size_t>(c) * dqk + d] /= static_cast<double>(j1 - j0);
    }
    std::vector<double> qpool(dqk);
    for (int32_t qb = 0; qb < mask_q_blocks; ++qb) {
      BlockMaskRow& row = ref.rows[(static_cast<size_t>(b) * hq + h) * mask_q_blocks + qb];
      const int64_t r0 = static_cast<int64_t>(qb) * spec.block_q, r1 = std::min<int64_t>(q_len, r0 + spec.block_q);
      if (r0 >= r1) continue;
      int64_t competing = nkv;
      if (spec.causal) {
        const int64_t pos_last = static_cast<int64_t>(kv_len) - q_len + r1 - 1;
        competing = std::min<int64_t>(nkv, pos_last / spec.block_kv + 1);
      }
      std::fill(qpool.begin(), qpool.end(), 0.0);
      for (int64_t r = r0; r < r1; ++r) {
        const float* qr = &in.q[p.q_index(p.cu_seqlens_q[b] + r, h)];
        for (int32_t d = 0; d < dqk; ++d) qpool[d] += qr[d];
      }
      for (auto& x : qpool) x /= static_cast<double>(r1 - r0);
      row.score.resize(competing);
      for (int64_t c = 0; c < competing; ++c) {
        double dot = 0;
        for (int32_t d = 0; d < dqk; ++d) dot += qpool[d] * kpool[static_cast<size_t>(c) * dqk + d];
        row.score[c] = dot;
      }
      row.keep = static_cast<int32_t>(std::max<int64_t>(
          1, std::min<int64_t>(competing, static_cast<int64_t>(std::ceil(static_cast<double>(spec.topk) * competing)))));
      std::vector<int32_t> order(competing);
      for (int32_t c = 0; c < competing; ++c) order[c] = c;
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t c) { return row.score[a] > row.score[c]; });
      row.kept.assign(order.begin(), order.begin() + row.keep);
      if (spec.force_first_block && std::find(row.kept.begin(), row.kept.end(), 0) == row.kept.end()) row.kept.push_back(0);
      std::sort(row.kept.begin(), row.kept.end());
    }
  });
  return ref;
}

std::string check_block_mask(const BlockMaskReference& ref, const BlockMaskSpec& spec,
                             const std::vector<int32_t>& kv_num_blocks, const std::vector<int32_t>& kv_indices,
                             int32_t mask_max_kv_blocks, double rel_eps, double abs_eps) {
  std::ostringstream os;
  int64_t problems = 0, ties_traded = 0;
  auto report = [&](size_t row, const std::string& what) {
    if (problems++ < 8) os << (problems > 1 ? "; " : "") << "mask row " << row << ": " << what;
  };
  if (kv_num_blocks.size() < ref.rows.size() || kv_indices.size() < ref.rows.size() * mask_max_kv_blocks)
    return "mask buffers smaller than the reference's rows";
  for (size_t row = 0; row < ref.rows.size(); ++row) {
    const BlockMaskRow& r = ref.rows[row];
    const int32_t n = kv_num_blocks[row];
    const int32_t competing = static_cast<int32_t>(r.score.size());
    if (r.keep == 0) {
      if (n != 0) report(row, "an empty q block lists " + std::to_string(n) + " blocks");
      continue;
    }
    if (n < 0 || n > mask_max_kv_blocks || n > competing) {
      report(row, "count " + std::to_string(n) + " out of range (competing " + std::to_string(competing) + ")");
      continue;
    }
    const int32_t* list = &kv_indices[row * mask_max_kv_blocks];
    std::vector<int32_t> got(list, list + n);
    bool ordered = true;
    for (int32_t c = 0; c < n; ++c) {
      if (got[c] < 0 || got[c] >= competing) ordered = false;
      if (c > 0 && got[c] <= got[c - 1]) ordered = false;
    }
    if (!ordered) {
      report(row, "indices not ascending, unique and among the competing blocks");
      continue;
    }
    const bool has0 = !got.empty() && got.front() == 0;
    if (spec.force_first_block && !has0) {
      report(row, "the forced first block is missing");
      continue;
    }
    // The boundary score: the keep-th best.
    std::vector<double> sorted = r.score;
    std::sort(sorted.begin(), sorted.end(), std::greater<double>());
    const double boundary = sorted[r.keep - 1];
    double maxabs = 0;
    for (double x : r.score) maxabs = std::max(maxabs, std::abs(x));
    const double eps = rel_eps * maxabs + abs_eps;
    // The chosen top-k: the listed blocks, minus the forced block when it is not among them.
    // Whether block 0 counts as a top-k choice is decided by the count.
    std::vector<int32_t> chosen = got;
    if (spec.force_first_block && static_cast<int32_t>(got.size()) == r.keep + 1) chosen.erase(chosen.begin());
    if (static_cast<int32_t>(chosen.size()) != r.keep) {
      report(row, "lists " + std::to_string(n) + " blocks, expected " + std::to_string(r.keep) +
                      (spec.force_first_block ? " (+1 for the forced block)" : ""));
      continue;
    }
    std::vector<char> in_set(competing, 0);
    for (int32_t c : chosen) in_set[c] = 1;
    for (int32_t c = 0; c < competing; ++c) {
      if (in_set[c] && r.score[c] < boundary - eps) {
        report(row, "lists block " + std::to_string(c) + " (score " + std::to_string(r.score[c]) + ") below the top-" +
                        std::to_string(r.keep) + " boundary " + std::to_string(boundary));
        break;
      }
      if (!in_set[c] && r.score[c] > boundary + eps) {
        report(row, "misses block " + std::to_string(c) + " (score " + std::to_string(r.score[c]) + ") above the top-" +
                        std::to_string(r.keep) + " boundary " + std::to_string(boundary));
        break;
      }
    }
    if (chosen != r.kept && got != r.kept) ++ties_traded;
  }
  if (problems > 8) os << "; ... " << problems << " rows in all";
  (void)ties_traded;
  return os.str();
}

Tolerance default_tolerance(attnjit_dtype out_dtype) {
  // Reasoning in reference.h.
  if (out_dtype == ATTNJIT_DTYPE_BF16) return {1e-2, 5e-2, 2e-4};
  return {2e-3, 1e-2, 2e-4};
}

Tolerance pattern_tolerance(const HostProblem& p) {
  Tolerance t = default_tolerance(p.spec.q_dtype);
  const double cap = p.spec.pattern.soft_cap;
  if (cap > 0) {
    const double ds = std::ldexp(cap, -11); // tanh.approx.f32: |error| <= 2^-11 * |c tanh(s/c)| <= 2^-11 * c
    t.rel_l2 += ds;
    t.row_rel_l2 += 5 * ds;
    t.lse_abs += ds;
  }
  return t;
}

std::string Comparison::summary() const {
  std::ostringstream os;
  os << "elements=" << elements << " rel_l2=" << rel_l2 << " max_abs=" << max_abs;
  if (worst_row_token >= 0) os << " worst_row_rel=" << worst_row_rel << " (token " << worst_row_token << ", head " << worst_row_head << ")";
  if (worst_token >= 0) {
    os << " worst at token " << worst_token << " head " << worst_head;
    if (worst_d >= 0) os << " d " << worst_d;
    os << ": got " << worst_got << " want " << worst_want;
  }
  if (nan_count) os << " NaN=" << nan_count;
  if (inf_count) os << " Inf=" << inf_count;
  if (poison_count) os << " never_written=" << poison_count;
  if (inf_mismatch) os << " lse_not_-inf_where_expected=" << inf_mismatch;
  if (alternates_used) os << " alternates_used=" << alternates_used;
  if (stray_writes) os << " stray_writes=" << stray_writes;
  return os.str();
}

Comparison compare_output(const HostProblem& p, const Reference& ref, const std::vector<uint16_t>& o_buffer) {
  Comparison c;
  const int32_t hq = p.spec.num_q_heads, dv = p.spec.head_dim_v;
  const attnjit_dtype dt = p.spec.q_dtype;
  if (static_cast<int64_t>(o_buffer.size()) != p.o_elems) {
    c.stray_writes = -1;
    c.rel_l2 = std::numeric_limits<double>::infinity();
    return c;
  }
  std::vector<char> logical(o_buffer.size(), 0);
  std::vector<double> got(dv);
  double err2 = 0, ref2 = 0;
  bool non_finite = false;
  for (int64_t t = 0; t < p.total_q; ++t) {
    for (int32_t h = 0; h < hq; ++h) {
      bool row_bad = false;
      for (int32_t d = 0; d < dv; ++d) {
        const int64_t idx = p.o_index(t, h) + d;
        logical[idx] = 1;
        const uint16_t bits = o_buffer[idx];
        ++c.elements;
        got[d] = 0;
        if (bits == kPoison16) {
          ++c.poison_count;
          row_bad = true;
        } else if (is_nan_bits(bits, dt)) {
          ++c.nan_count;
          row_bad = true;
        } else if (is_inf_bits(bits, dt)) {
          ++c.inf_count;
          row_bad = true;
        } else {
          got[d] = bits_to_float(bits, dt);
        }
      }
      // The reference's answer, or the alternate nearest to what the kernel wrote.
      const double* want = &ref.o[(static_cast<size_t>(t) * hq + h) * dv];
      auto row_err2 = [&](const double* w) {
        double e2 = 0;
        for (int32_t d = 0; d < dv; ++d) e2 += (got[d] - w[d]) * (got[d] - w[d]);
        return e2;
      };
      if (const std::vector<RowVariant>* alts = ref.alternates_of(t, h); alts != nullptr && !row_bad) {
        double best = row_err2(want);
        for (const RowVariant& v : *alts) {
          const double e2 = row_err2(v.o.data());
          if (e2 < best) {
            best = e2;
            want = v.o.data();
          }
        }
        if (want != &ref.o[(static_cast<size_t>(t) * hq + h) * dv]) ++c.alternates_used;
      }
      double re2 = 0, rr2 = 0;
      for (int32_t d = 0; d < dv; ++d) {
        rr2 += want[d] * want[d];
        if (row_bad) continue;
        const double e = got[d] - want[d];
        re2 += e * e;
        if (std::abs(e) > c.max_abs || c.worst_token < 0) {
          c.max_abs = std::max(c.max_abs, std::abs(e));
          c.worst_token = t;
          c.worst_head = h;
          c.worst_d = d;
          c.worst_got = got[d];
          c.worst_want = want[d];
        }
      }
      if (row_bad) non_finite = true;
      err2 += re2;
      ref2 += rr2;
      const double row_rel = row_bad ? std::numeric_limits<double>::infinity()
                             : rr2 > 0 ? std::sqrt(re2 / rr2)
                             : (re2 > 0 ? std::numeric_limits<double>::infinity() : 0.0);
      if (row_rel > c.worst_row_rel || c.worst_row_token < 0) {
        c.worst_row_rel = std::max(c.worst_row_rel, row_rel);
        c.worst_row_token = t;
        c.worst_row_head = h;
      }
    }
  }
  for (size_t i = 0; i < o_buffer.size(); ++i)
    if (!logical[i] && o_buffer[i] != kPoison16) ++c.stray_writes;
  c.rel_l2 = non_finite ? std::numeric_limits<double>::infinity()
             : ref2 > 0 ? std::sqrt(err2 / ref2)
             : (err2 > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  return c;
}

Comparison compare_lse(const HostProblem& p, const Reference& ref, const std::vector<float>& lse_buffer) {
  Comparison c;
  const int32_t hq = p.spec.num_q_heads;
  if (static_cast<int64_t>(lse_buffer.size()) != p.lse_elems) {
    c.stray_writes = -1;
    c.rel_l2 = std::numeric_limits<double>::infinity();
    return c;
  }
  const int64_t logical = static_cast<int64_t>(hq) * p.total_q;
  double err2 = 0, ref2 = 0;
  bool non_finite = false;
  for (int32_t h = 0; h < hq; ++h) {
    for (int64_t t = 0; t < p.total_q; ++t) {
      const float got = lse_buffer[static_cast<size_t>(h) * p.total_q + t];
      double want = ref.lse_at(t, h);
      ++c.elements;
      if (is_poison(got)) {
        ++c.poison_count;
        non_finite = true;
        continue;
      }
      if (std::isnan(got)) {
        ++c.nan_count;
        non_finite = true;
        continue;
      }
      if (const std::vector<RowVariant>* alts = ref.alternates_of(t, h); alts != nullptr) {
        double best = std::abs(got - want);
        for (const RowVariant& v : *alts) {
          const double e = std::abs(got - v.lse);
          if (e < best || (std::isnan(best) && !std::isnan(e))) {
            best = e;
            want = v.lse;
          }
        }
      }
      const bool want_empty = want == -std::numeric_limits<double>::infinity();
      if (want_empty || std::isinf(got)) {
        if (want_empty && got == -std::numeric_limits<float>::infinity()) continue; // the empty row, as specified
        if (want_empty) {
          ++c.inf_mismatch;
        } else {
          ++c.inf_count;
        }
        non_finite = true;
        if (c.worst_token < 0 || want_empty) {
          c.worst_token = t;
          c.worst_head = h;
          c.worst_got = got;
          c.worst_want = want;
        }
        continue;
      }
      const double e = got - want;
      err2 += e * e;
      ref2 += want * want;
      if (std::abs(e) > c.max_abs || c.worst_token < 0) {
        c.max_abs = std::max(c.max_abs, std::abs(e));
        c.worst_token = t;
        c.worst_head = h;
        c.worst_got = got;
        c.worst_want = want;
      }
    }
  }
  for (int64_t i = logical; i < p.lse_elems; ++i)
    if (!is_poison(lse_buffer[i])) ++c.stray_writes;
  c.rel_l2 = non_finite ? std::numeric_limits<double>::infinity()
             : ref2 > 0 ? std::sqrt(err2 / ref2)
             : (err2 > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  if (non_finite) c.max_abs = std::numeric_limits<double>::infinity();
  return c;
}

} // namespace attnjit::testing
