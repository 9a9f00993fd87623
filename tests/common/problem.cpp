#include "problem.h"

#include <algorithm>
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
}

double effective_scale(const ProblemSpec& spec) {
  return spec.scale != 0.0f ? static_cast<double>(spec.scale)
                            : 1.0 / std::sqrt(static_cast<double>(spec.head_dim_qk));
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
     << " batch=" << batch << " total_q=" << total_q << " total_kv=" << total_kv << " seqs=[";
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

  // ---- Logical values, written where the layout puts them.
  const double sd = spec.value_stddev;
  parallel_for(p.total_q, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t)
      for (int32_t h = 0; h < hq; ++h) {
        uint16_t* dst = &p.q[p.q_index(t, h)];
        const uint64_t base = (static_cast<uint64_t>(t) * hq + h) * dqk;
        for (int32_t d = 0; d < dqk; ++d) dst[d] = counter_normal_bits(seed, kStreamQ, base + d, spec.q_dtype, sd);
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
        for (int32_t d = 0; d < dqk; ++d) kd[d] = counter_normal_bits(seed, kStreamK, kbase + d, spec.kv_dtype, sd);
        for (int32_t d = 0; d < dv; ++d) vd[d] = counter_normal_bits(seed, kStreamV, vbase + d, spec.kv_dtype, sd);
      }
    }
  });

  // ---- Outputs.
  p.o_stride_head = dv;
  p.o_stride_token = static_cast<int64_t>(hq) * dv + spec.o_token_padding;
  p.o_elems = p.total_q * p.o_stride_token + kOutputGuard;
  p.lse_elems = static_cast<int64_t>(hq) * p.total_q + kLseGuard;
  return p;
}

} // namespace attnjit::testing
