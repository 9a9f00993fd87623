#include "problem.h"

#include <algorithm>
#include <random>
#include <cmath>
#include <functional>
#include <thread>
#include <sstream>
#include <stdexcept>

namespace attnjit::testing {

namespace {

constexpr int64_t kOutputGuard = 64; // o elements past the end that must stay poisoned
constexpr int64_t kLseGuard = 16;

// Counter streams of the values each tensor draws.
constexpr uint64_t kStreamQ = 1, kStreamK = 2, kStreamV = 3;
constexpr uint64_t kStreamGarbageQ = 11, kStreamGarbageK = 12, kStreamGarbageV = 13;
constexpr uint64_t kStreamSinks = 21, kStreamScales = 22, kStreamMask = 23, kStreamHotDir = 24, kStreamHot = 25;

// Uniform [0, 1) from a counter draw.
double counter_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return static_cast<double>(counter_hash(seed, stream, index) >> 11) * 0x1.0p-53;
}
// normal(0, 1) from a counter draw (Box-Muller on two hashes).
double counter_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  const double u1 = 1.0 - counter_uniform(seed, stream, 2 * index);
  const double u2 = counter_uniform(seed, stream, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Runs fn(lo, hi) over [0, n) in contiguous chunks on all cores.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t kMinChunk = 4096;
  const int64_t threads = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()),
                                            std::max<int64_t>(1, n / kMinChunk));
  if (threads <= 1) {
    if (n > 0) fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t lo = 0; lo < n; lo += chunk) pool.emplace_back(fn, lo, std::min(n, lo + chunk));
  for (auto& t : pool) t.join();
}

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("ProblemSpec: " + what); }

} // namespace

const char* layout_name(KvLayout l) {
  switch (l) {
  case KvLayout::nhd: return "nhd";
  case KvLayout::hnd: return "hnd";
  case KvLayout::packed: return "packed";
  }
  return "layout?";
}

void check_spec(const ProblemSpec& s) {
  if (s.head_dim_qk <= 0 || s.head_dim_v <= 0) bad("head dims must be positive");
  if (s.num_q_heads <= 0 || s.num_kv_heads <= 0) bad("head counts must be positive");
  if (s.num_q_heads % s.num_kv_heads != 0) bad("num_kv_heads must divide num_q_heads");
  if (s.storage == ATTNJIT_KV_PAGED && s.page_size <= 0) bad("page_size must be positive");
  if (s.seqs.empty()) bad("at least one sequence");
  for (const auto& q : s.seqs) {
    if (q.kv_len < 1) bad("kv_len must be >= 1 (a row with no visible key has no defined output)");
    if (q.q_len < 0 || q.q_len > q.kv_len) bad("need 0 <= q_len <= kv_len");
  }
  if (s.extra_blocks < 1) bad("extra_blocks must be >= 1 (block-table padding points at one)");
  if (s.extra_tokens < 0 || s.block_table_padding < 0 || s.q_token_padding < 0 || s.o_token_padding < 0)
    bad("padding must be >= 0");
  if (is_fp8(s.q_dtype)) bad("fp8 is for KV only");
  if (s.hot_key_fraction < 0 || s.hot_key_fraction > 1 || s.hot_key_boost < 0) bad("hot keys: fraction in [0, 1], boost >= 0");
  const PatternSpec& pt = s.pattern;
  if (pt.sliding_window && (pt.window < 1 || pt.sink_tokens < 0)) bad("sliding window needs window >= 1, sink_tokens >= 0");
  if (pt.soft_cap < 0) bad("soft_cap must be >= 0 (0 = off)");
  if (pt.nm_on() && (pt.nm_m < 2 || pt.nm_n < 1 || pt.nm_n >= pt.nm_m)) bad("N:M needs 0 < N < M");
  if (pt.nm_dense_sink_tokens < 0 || pt.nm_dense_recent_tokens < 0) bad("N:M exemptions must be >= 0");
  if (pt.skip_threshold < 0 || pt.skip_threshold >= 1) bad("skip_threshold in [0, 1)");
  if (pt.block_sparse_on()) {
    if (pt.sparse_block_kv <= 0) bad("block sparse needs sparse_block_kv > 0");
    if (pt.mask_extra_columns < 1) bad("mask_extra_columns must be >= 1 (the garbage padding)");
    if (pt.mask_extra_q_blocks < 0) bad("mask_extra_q_blocks must be >= 0");
  }
  if (is_fp8(s.kv_dtype) && !(pt.scale_min > 0 && pt.scale_max >= pt.scale_min)) bad("fp8 scales need 0 < scale_min <= scale_max");
}

double effective_scale(const ProblemSpec& spec) {
  return spec.scale != 0.0f ? static_cast<double>(spec.scale)
                            : 1.0 / std::sqrt(static_cast<double>(spec.head_dim_qk));
}

ProblemSpec tiny_spec(int32_t hq, int32_t hkv, std::vector<SeqShape> seqs, bool causal) {
  ProblemSpec s;
  s.q_dtype = s.kv_dtype = ATTNJIT_DTYPE_F16;
  s.head_dim_qk = 16;
  s.head_dim_v = 16;
  s.num_q_heads = hq;
  s.num_kv_heads = hkv;
  s.page_size = 4;
  s.causal = causal;
  s.seqs = std::move(seqs);
  return s;
}

double hand_score(const HostProblem& p, int64_t t, int32_t h, int32_t b, int64_t j) {
  double dot = 0;
  const int32_t kvh = p.kv_head_of(h);
  for (int32_t d = 0; d < p.spec.head_dim_qk; ++d)
    dot += static_cast<double>(p.q_value(t, h, d)) * p.k_value(b, j, kvh, d) * p.k_scale_of(kvh);
  double s = effective_scale(p.spec) * dot;
  if (p.spec.pattern.soft_cap > 0) s = p.spec.pattern.soft_cap * std::tanh(s / p.spec.pattern.soft_cap);
  return s;
}

int64_t HostProblem::q_index(int64_t token, int32_t head) const {
  return token * q_stride_token + head * q_stride_head;
}

int64_t HostProblem::k_index(int32_t seq, int64_t j, int32_t kv_head) const {
  if (paged()) {
    const int32_t page = spec.page_size;
    const int64_t block = block_table[static_cast<size_t>(seq) * block_table_stride + j / page];
    return block * k_stride_block + (j % page) * k_stride_token + kv_head * k_stride_head;
  }
  return (cu_seqlens_k[seq] + j) * k_stride_token + kv_head * k_stride_head;
}

int64_t HostProblem::v_index(int32_t seq, int64_t j, int32_t kv_head) const {
  if (paged()) {
    const int32_t page = spec.page_size;
    const int64_t block = block_table[static_cast<size_t>(seq) * block_table_stride + j / page];
    return v_offset + block * v_stride_block + (j % page) * v_stride_token + kv_head * v_stride_head;
  }
  return v_offset + (cu_seqlens_k[seq] + j) * v_stride_token + kv_head * v_stride_head;
}

double HostProblem::k_scale_of(int32_t kv_head) const {
  if (k_scale.empty()) return 1.0;
  return k_scale[k_scale.size() == 1 ? 0 : static_cast<size_t>(kv_head)];
}

double HostProblem::v_scale_of(int32_t kv_head) const {
  if (v_scale.empty()) return 1.0;
  return v_scale[v_scale.size() == 1 ? 0 : static_cast<size_t>(kv_head)];
}

int64_t HostProblem::mask_row(int32_t b, int32_t h, int64_t i) const {
  const int64_t qb = i / spec.pattern.sparse_block_q;
  if (qb >= mask_q_blocks) return -1;
  const int64_t mb = mask_batch == 1 ? 0 : b;
  return (mb * spec.num_q_heads + h) * mask_q_blocks + qb;
}

bool HostProblem::block_listed(int32_t b, int32_t h, int64_t i, int64_t j) const {
  if (!spec.pattern.block_sparse_on()) return true;
  const int64_t row = mask_row(b, h, i);
  if (row < 0) return false;
  const int64_t blk = j / spec.pattern.sparse_block_kv;
  const int32_t* list = &kv_indices[static_cast<size_t>(row) * mask_max_kv_blocks];
  for (int32_t c = 0; c < kv_num_blocks[row]; ++c)
    if (list[c] == blk) return true;
  return false;
}

std::vector<uint8_t> HostProblem::kv_device_bytes(const std::vector<uint16_t>& buf) const {
  const bool one = is_fp8(spec.kv_dtype);
  std::vector<uint8_t> out(buf.size() * (one ? 1 : 2));
  if (one) {
    for (size_t i = 0; i < buf.size(); ++i) out[i] = static_cast<uint8_t>(buf[i]);
  } else {
    for (size_t i = 0; i < buf.size(); ++i) {
      out[2 * i] = static_cast<uint8_t>(buf[i] & 0xFFu);
      out[2 * i + 1] = static_cast<uint8_t>(buf[i] >> 8);
    }
  }
  return out;
}

float HostProblem::q_value(int64_t token, int32_t head, int32_t d) const {
  return bits_to_float(q[q_index(token, head) + d], spec.q_dtype);
}
float HostProblem::k_value(int32_t seq, int64_t j, int32_t kv_head, int32_t d) const {
  return bits_to_float(k_data[k_index(seq, j, kv_head) + d], spec.kv_dtype);
}
float HostProblem::v_value(int32_t seq, int64_t j, int32_t kv_head, int32_t d) const {
  return bits_to_float(v_buffer()[v_index(seq, j, kv_head) + d], spec.kv_dtype);
}
void HostProblem::set_q(int64_t token, int32_t head, int32_t d, float x) {
  q[q_index(token, head) + d] = float_to_bits(x, spec.q_dtype);
}
void HostProblem::set_k(int32_t seq, int64_t j, int32_t kv_head, int32_t d, float x) {
  k_data[k_index(seq, j, kv_head) + d] = float_to_bits(x, spec.kv_dtype);
}
void HostProblem::set_v(int32_t seq, int64_t j, int32_t kv_head, int32_t d, float x) {
  v_buffer()[v_index(seq, j, kv_head) + d] = float_to_bits(x, spec.kv_dtype);
}

std::vector<uint16_t> HostProblem::poisoned_output() const {
  return std::vector<uint16_t>(static_cast<size_t>(o_elems), kPoison16);
}

std::vector<float> HostProblem::poisoned_lse() const {
  return std::vector<float>(static_cast<size_t>(lse_elems), poison_float());
}

std::string HostProblem::describe() const {
  std::ostringstream os;
  os << "q=" << dtype_name(spec.q_dtype) << " kv=" << dtype_name(spec.kv_dtype) << " dqk=" << spec.head_dim_qk
     << " dv=" << spec.head_dim_v << " heads=" << spec.num_q_heads << "/" << spec.num_kv_heads << " "
     << (paged() ? "paged page=" + std::to_string(spec.page_size) : std::string("contiguous")) << " layout="
     << layout_name(spec.layout) << " causal=" << spec.causal << " scale=" << effective_scale(spec)
     << " batch=" << batch << " total_q=" << total_q << " total_kv=" << total_kv;
  const PatternSpec& pt = spec.pattern;
  if (pt.sliding_window) os << " window=" << pt.window << " sink_tokens=" << pt.sink_tokens;
  if (pt.learned_sinks) os << " learned_sinks";
  if (pt.soft_cap > 0) os << " soft_cap=" << pt.soft_cap;
  if (pt.nm_on())
    os << " nm=" << pt.nm_n << ":" << pt.nm_m << " dense_sink=" << pt.nm_dense_sink_tokens
       << " dense_recent=" << pt.nm_dense_recent_tokens;
  if (pt.skip_on()) os << " skip_lambda=" << pt.skip_threshold;
  if (pt.block_sparse_on())
    os << " block_sparse=" << pt.sparse_block_q << "x" << pt.sparse_block_kv << " density=" << pt.block_density
       << (pt.mask_per_batch ? " per_batch" : " broadcast") << (pt.mask_unsorted ? " unsorted" : "");
  if (is_fp8(spec.kv_dtype)) os << (pt.kv_scale_per_head ? " kv_scale=per_head" : " kv_scale=per_tensor");
  if (spec.hot_key_boost > 0) os << " hot_keys=" << spec.hot_key_fraction << "@" << spec.hot_key_boost;
  os << " seqs=[";
  for (size_t i = 0; i < spec.seqs.size(); ++i) {
    if (i) os << " ";
    if (i == 12 && spec.seqs.size() > 14) {
      os << "... (" << spec.seqs.size() << " in all)";
      break;
    }
    os << spec.seqs[i].q_len << "/" << spec.seqs[i].kv_len;
  }
  os << "] seed=" << seed;
  return os.str();
}

HostProblem make_problem(const ProblemSpec& spec, uint64_t seed) {
  check_spec(spec);
  HostProblem p;
  p.spec = spec;
  p.seed = seed;
  const int32_t hq = spec.num_q_heads, hkv = spec.num_kv_heads;
  const int32_t dqk = spec.head_dim_qk, dv = spec.head_dim_v;

  // ---- Sequence bookkeeping.
  p.batch = static_cast<int32_t>(spec.seqs.size());
  p.cu_seqlens_q.assign(1, 0);
  p.cu_seqlens_k.assign(1, 0);
  for (const auto& s : spec.seqs) {
    p.cu_seqlens_q.push_back(p.cu_seqlens_q.back() + s.q_len);
    p.cu_seqlens_k.push_back(p.cu_seqlens_k.back() + s.kv_len);
    p.seq_lens_k.push_back(s.kv_len);
    p.max_q_len = std::max(p.max_q_len, s.q_len);
    p.max_kv_len = std::max(p.max_kv_len, s.kv_len);
  }
  p.total_q = p.cu_seqlens_q.back();
  p.total_kv = p.cu_seqlens_k.back();
  for (int32_t b = 0; b < p.batch; ++b)
    for (int32_t i = 0; i < spec.seqs[b].q_len; ++i) p.seq_of_token.push_back(b);

  // ---- Storage. Block placement comes from a sequential stream; every value (logical or garbage)
  // is a counter-based draw keyed by (seed, tensor, logical index), so it does not depend on the
  // layout and can be produced in parallel.
  Rng layout_rng(seed ^ 0x9E3779B97F4A7C15ull);
  const auto garbage = [&](std::vector<uint16_t>& buf, uint64_t stream, attnjit_dtype dt) {
    parallel_for(static_cast<int64_t>(buf.size()), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) buf[i] = counter_garbage_bits(seed, stream, i, dt, spec.garbage_magnitude);
    });
  };

  p.q_stride_head = dqk;
  p.q_stride_token = static_cast<int64_t>(hq) * dqk + spec.q_token_padding;
  p.q.resize(static_cast<size_t>(p.total_q * p.q_stride_token));
  garbage(p.q, kStreamGarbageQ, spec.q_dtype);

  const int64_t width = spec.layout == KvLayout::packed ? dqk + dv : 0; // packed row width
  int64_t rows = 0;      // paged: slots per block (page_size); contiguous: total token rows
  int64_t units = 1;     // paged: num_blocks; contiguous: 1
  if (p.paged()) {
    const int32_t page = spec.page_size;
    std::vector<int32_t> nblocks;
    int32_t used = 0, max_nb = 0;
    for (const auto& s : spec.seqs) {
      const int32_t nb = (s.kv_len + page - 1) / page;
      nblocks.push_back(nb);
      used += nb;
      max_nb = std::max(max_nb, nb);
    }
    p.num_blocks = used + spec.extra_blocks;
    std::vector<int32_t> perm(p.num_blocks);
    for (int32_t i = 0; i < p.num_blocks; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), layout_rng.engine());
    p.unused_blocks.assign(perm.begin() + used, perm.end());
    p.block_table_stride = max_nb + spec.block_table_padding;
    p.block_table.assign(static_cast<size_t>(p.batch) * p.block_table_stride, p.unused_blocks.front());
    int32_t next = 0;
    for (int32_t b = 0; b < p.batch; ++b)
      for (int32_t i = 0; i < nblocks[b]; ++i) p.block_table[static_cast<size_t>(b) * p.block_table_stride + i] = perm[next++];
    rows = page;
    units = p.num_blocks;
  } else {
    rows = p.total_kv + spec.extra_tokens;
  }

  // Strides of a [units, rows, heads, D] (nhd/packed) or [units, heads, rows, D] (hnd) tensor;
  // for contiguous storage units == 1 and stride_block is 0.
  auto set_strides = [&](int64_t d, int64_t& sb, int64_t& st, int64_t& sh) {
    switch (spec.layout) {
    case KvLayout::nhd: st = hkv * d; sh = d; break;
    case KvLayout::hnd: st = d; sh = rows * d; break;
    case KvLayout::packed: st = hkv * width; sh = width; break;
    }
    sb = p.paged() ? rows * hkv * (spec.layout == KvLayout::packed ? width : d) : 0;
  };
  set_strides(dqk, p.k_stride_block, p.k_stride_token, p.k_stride_head);
  set_strides(dv, p.v_stride_block, p.v_stride_token, p.v_stride_head);

  if (spec.layout == KvLayout::packed) {
    p.k_data.resize(static_cast<size_t>(units * rows * hkv * width));
    p.v_offset = dqk;
  } else {
    p.k_data.resize(static_cast<size_t>(units * rows * hkv * dqk));
    p.v_data.resize(static_cast<size_t>(units * rows * hkv * dv));
    p.v_offset = 0;
  }
  garbage(p.k_data, kStreamGarbageK, spec.kv_dtype);
  garbage(p.v_data, kStreamGarbageV, spec.kv_dtype);

  // ---- Hot keys: a unit direction per (sequence, kv head), and which keys are hot.
  const bool hot = spec.hot_key_boost > 0;
  const double beta = hot ? std::sqrt(spec.hot_key_boost / effective_scale(spec)) : 0.0;
  std::vector<double> hot_dir; // [batch, hkv, dqk]
  if (hot) {
    hot_dir.resize(static_cast<size_t>(p.batch) * hkv * dqk);
    for (size_t r = 0; r < static_cast<size_t>(p.batch) * hkv; ++r) {
      double norm2 = 0;
      for (int32_t d = 0; d < dqk; ++d) {
        const double z = counter_normal(seed, kStreamHotDir, r * dqk + d);
        hot_dir[r * dqk + d] = z;
        norm2 += z * z;
      }
      for (int32_t d = 0; d < dqk; ++d) hot_dir[r * dqk + d] /= std::sqrt(norm2);
    }
    p.hot_key.assign(static_cast<size_t>(p.total_kv), 0);
    for (int32_t b = 0; b < p.batch; ++b)
      for (int64_t j = 0; j < spec.seqs[b].kv_len; ++j) {
        const int64_t tok = p.cu_seqlens_k[b] + j;
        p.hot_key[tok] = j == 0 || counter_uniform(seed, kStreamHot, tok) < spec.hot_key_fraction;
      }
  }
  // Adds beta * u[d] to a stored value (keeps the plain value if the sum rounds to zero).
  const auto boosted = [&](uint16_t bits, attnjit_dtype dt, int32_t b, int32_t kvh, int32_t d) -> uint16_t {
    const float x = static_cast<float>(bits_to_float(bits, dt) + beta * hot_dir[(static_cast<size_t>(b) * hkv + kvh) * dqk + d]);
    const uint16_t nb = float_to_bits(x, dt);
    return is_zero_bits(nb, dt) ? bits : nb;
  };

  // ---- Logical values, written where the layout puts them.
  const double sd = spec.value_stddev;
  const int32_t group = hq / hkv;
  parallel_for(p.total_q, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t)
      for (int32_t h = 0; h < hq; ++h) {
        uint16_t* dst = &p.q[p.q_index(t, h)];
        const uint64_t base = (static_cast<uint64_t>(t) * hq + h) * dqk;
        for (int32_t d = 0; d < dqk; ++d) {
          dst[d] = counter_normal_bits(seed, kStreamQ, base + d, spec.q_dtype, spec.q_stddev > 0 ? spec.q_stddev : sd);
          if (hot) dst[d] = boosted(dst[d], spec.q_dtype, p.seq_of_token[t], h / group, d);
        }
      }
  });
  std::vector<int32_t> seq_of_kv(static_cast<size_t>(p.total_kv));
  for (int32_t b = 0; b < p.batch; ++b)
    std::fill(seq_of_kv.begin() + p.cu_seqlens_k[b], seq_of_kv.begin() + p.cu_seqlens_k[b + 1], b);
  parallel_for(p.total_kv, [&](int64_t lo, int64_t hi) {
    for (int64_t tok = lo; tok < hi; ++tok) {
      const int32_t b = seq_of_kv[tok];
      const int64_t j = tok - p.cu_seqlens_k[b];
      for (int32_t h = 0; h < hkv; ++h) {
        uint16_t* kd = &p.k_data[p.k_index(b, j, h)];
        uint16_t* vd = &p.v_buffer()[p.v_index(b, j, h)];
        const uint64_t kbase = (static_cast<uint64_t>(tok) * hkv + h) * dqk;
        const uint64_t vbase = (static_cast<uint64_t>(tok) * hkv + h) * dv;
        for (int32_t d = 0; d < dqk; ++d) {
          kd[d] = counter_normal_bits(seed, kStreamK, kbase + d, spec.kv_dtype, sd);
          if (hot && p.hot_key[tok]) kd[d] = boosted(kd[d], spec.kv_dtype, b, h, d);
        }
        for (int32_t d = 0; d < dv; ++d) vd[d] = counter_normal_bits(seed, kStreamV, vbase + d, spec.kv_dtype, sd);
      }
    }
  });

  // ---- Pattern values.
  const PatternSpec& pt = spec.pattern;
  if (pt.learned_sinks) {
    p.sinks.resize(hq);
    for (int32_t h = 0; h < hq; ++h)
      p.sinks[h] = static_cast<float>(pt.sink_mean + pt.sink_stddev * counter_normal(seed, kStreamSinks, h));
  }
  if (is_fp8(spec.kv_dtype)) {
    const size_t n = pt.kv_scale_per_head ? static_cast<size_t>(hkv) : 1;
    p.k_scale.resize(n);
    p.v_scale.resize(n);
    for (size_t i = 0; i < n; ++i) {
      p.k_scale[i] = static_cast<float>(pt.scale_min + (pt.scale_max - pt.scale_min) * counter_uniform(seed, kStreamScales, 2 * i));
      p.v_scale[i] = static_cast<float>(pt.scale_min + (pt.scale_max - pt.scale_min) * counter_uniform(seed, kStreamScales, 2 * i + 1));
    }
  }
  if (pt.block_sparse_on()) {
    Rng mask_rng(counter_hash(seed, kStreamMask, 0));
    const int32_t sbq = pt.sparse_block_q, sbkv = pt.sparse_block_kv;
    p.mask_batch = pt.mask_per_batch ? p.batch : 1;
    p.mask_q_blocks = std::max(1, (p.max_q_len + sbq - 1) / sbq) + pt.mask_extra_q_blocks;
    const size_t rows = static_cast<size_t>(p.mask_batch) * hq * p.mask_q_blocks;
    std::vector<std::vector<int32_t>> lists(rows), unlisted(rows);
    int32_t longest = 0;
    for (int32_t mb = 0; mb < p.mask_batch; ++mb) {
      // The KV blocks a row of this mask can name: the sequence's own (per batch), or those of
      // the longest sequence (broadcast: shorter sequences see listed blocks past their end).
      const int32_t kv = pt.mask_per_batch ? spec.seqs[mb].kv_len : p.max_kv_len;
      const int32_t nkv = (kv + sbkv - 1) / sbkv;
      for (int32_t h = 0; h < hq; ++h)
        for (int32_t qb = 0; qb < p.mask_q_blocks; ++qb) {
          const size_t row = (static_cast<size_t>(mb) * hq + h) * p.mask_q_blocks + qb;
          // With empty rows asked for, the first row of each mask batch is always one, so a
          // small mask still has one to test; the others are empty at random.
          const bool empty = pt.mask_empty_rows > 0 && (row % (static_cast<size_t>(hq) * p.mask_q_blocks) == 0 ||
                                                       mask_rng.uniform01() < pt.mask_empty_rows);
          for (int32_t blk = 0; blk < nkv; ++blk)
            (!empty && mask_rng.uniform01() < pt.block_density ? lists[row] : unlisted[row]).push_back(blk);
          if (pt.mask_unsorted) std::shuffle(lists[row].begin(), lists[row].end(), mask_rng.engine());
          longest = std::max<int32_t>(longest, static_cast<int32_t>(lists[row].size()));
        }
    }
    p.mask_max_kv_blocks = longest + pt.mask_extra_columns;
    p.kv_num_blocks.resize(rows);
    p.kv_indices.resize(rows * p.mask_max_kv_blocks);
    for (size_t row = 0; row < rows; ++row) {
      p.kv_num_blocks[row] = static_cast<int32_t>(lists[row].size());
      int32_t* dst = &p.kv_indices[row * p.mask_max_kv_blocks];
      std::copy(lists[row].begin(), lists[row].end(), dst);
      // Garbage past the count: blocks this row does not list (they hold keys, so reading one
      // changes the answer), else any block the row could name.
      const std::vector<int32_t>& pool = unlisted[row].empty() ? lists[row] : unlisted[row];
      for (int32_t c = static_cast<int32_t>(lists[row].size()); c < p.mask_max_kv_blocks; ++c)
        dst[c] = pool.empty() ? 0 : pool[mask_rng.uniform_int(0, static_cast<int64_t>(pool.size()) - 1)];
    }
  }

  // ---- Outputs.
  p.o_stride_head = dv;
  p.o_stride_token = static_cast<int64_t>(hq) * dv + spec.o_token_padding;
  p.o_elems = p.total_q * p.o_stride_token + kOutputGuard;
  p.lse_elems = static_cast<int64_t>(hq) * p.total_q + kLseGuard;
  return p;
}

} // namespace attnjit::testing
