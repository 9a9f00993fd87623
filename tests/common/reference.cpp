#include "reference.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <sstream>
#include <thread>

namespace attnjit::testing {

namespace {

// Expand a 16-bit buffer to floats once, so the inner loops index plain arrays.
std::vector<float> widen(const std::vector<uint16_t>& v, attnjit_dtype dtype) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bits_to_float(v[i], dtype);
  return out;
}

} // namespace

Reference compute_reference(const HostProblem& p, unsigned threads) {
  const ProblemSpec& s = p.spec;
  const int32_t hq = s.num_q_heads, dqk = s.head_dim_qk, dv = s.head_dim_v;
  const double scale = effective_scale(s);

  Reference ref;
  ref.total_q = p.total_q;
  ref.num_q_heads = hq;
  ref.head_dim_v = dv;
  ref.o.assign(static_cast<size_t>(p.total_q) * hq * dv, 0.0);
  ref.lse.assign(static_cast<size_t>(p.total_q) * hq, 0.0);

  const std::vector<float> q = widen(p.q, s.q_dtype);
  const std::vector<float> k = widen(p.k_data, s.kv_dtype);
  const std::vector<float> v = p.packed() ? k : widen(p.v_data, s.kv_dtype);

  auto one_token = [&](int64_t t, std::vector<double>& scores, std::vector<int64_t>& k_rows,
                       std::vector<int64_t>& v_rows, std::vector<double>& acc) {
    const int32_t b = p.seq_of_token[t];
    const int32_t q_len = s.seqs[b].q_len, kv_len = s.seqs[b].kv_len;
    const int64_t i = t - p.cu_seqlens_q[b];
    const int64_t pos = static_cast<int64_t>(kv_len) - q_len + i;
    const int64_t visible = s.causal ? pos + 1 : kv_len; // >= 1, see the header
    for (int32_t h = 0; h < hq; ++h) {
      const int32_t kvh = p.kv_head_of(h);
      k_rows.resize(visible);
      v_rows.resize(visible);
      for (int64_t j = 0; j < visible; ++j) {
        k_rows[j] = p.k_index(b, j, kvh);
        v_rows[j] = p.v_index(b, j, kvh);
      }
      const float* qr = &q[p.q_index(t, h)];
      scores.resize(visible);
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < visible; ++j) {
        const float* kr = &k[k_rows[j]];
        double dot = 0;
        for (int32_t d = 0; d < dqk; ++d) dot += static_cast<double>(qr[d]) * kr[d];
        scores[j] = scale * dot;
        m = std::max(m, scores[j]);
      }
      double l = 0;
      acc.assign(dv, 0.0);
      for (int64_t j = 0; j < visible; ++j) {
        const double w = std::exp(scores[j] - m);
        l += w;
        const float* vr = &v[v_rows[j]];
        for (int32_t d = 0; d < dv; ++d) acc[d] += w * vr[d];
      }
      double* out = &ref.o[(static_cast<size_t>(t) * hq + h) * dv];
      for (int32_t d = 0; d < dv; ++d) out[d] = acc[d] / l;
      ref.lse[static_cast<size_t>(h) * p.total_q + t] = m + std::log(l);
    }
  };

  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<int64_t>(threads, std::max<int64_t>(1, p.total_q)));
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    std::vector<double> scores, acc;
    std::vector<int64_t> k_rows, v_rows;
    for (int64_t t; (t = next.fetch_add(1)) < p.total_q;) one_token(t, scores, k_rows, v_rows, acc);
  };
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < threads; ++i) pool.emplace_back(worker);
    for (auto& th : pool) th.join();
  }
  return ref;
}

Tolerance default_tolerance(attnjit_dtype out_dtype) {
  // Reasoning in reference.h.
  if (out_dtype == ATTNJIT_DTYPE_BF16) return {1e-2, 5e-2, 2e-4};
  return {2e-3, 1e-2, 2e-4};
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
  double err2 = 0, ref2 = 0;
  bool non_finite = false;
  for (int64_t t = 0; t < p.total_q; ++t) {
    for (int32_t h = 0; h < hq; ++h) {
      double row_err2 = 0, row_ref2 = 0;
      bool row_bad = false;
      for (int32_t d = 0; d < dv; ++d) {
        const int64_t idx = p.o_index(t, h) + d;
        logical[idx] = 1;
        const uint16_t bits = o_buffer[idx];
        const double want = ref.o_at(t, h, d);
        ++c.elements;
        if (bits == kPoison16) {
          ++c.poison_count;
          non_finite = row_bad = true;
          continue;
        }
        if (is_nan_bits(bits, dt)) {
          ++c.nan_count;
          non_finite = row_bad = true;
          continue;
        }
        if (is_inf_bits(bits, dt)) {
          ++c.inf_count;
          non_finite = row_bad = true;
          continue;
        }
        const double got = bits_to_float(bits, dt);
        const double e = got - want;
        err2 += e * e;
        ref2 += want * want;
        row_err2 += e * e;
        row_ref2 += want * want;
        if (std::abs(e) > c.max_abs || c.worst_token < 0) {
          c.max_abs = std::max(c.max_abs, std::abs(e));
          c.worst_token = t;
          c.worst_head = h;
          c.worst_d = d;
          c.worst_got = got;
          c.worst_want = want;
        }
      }
      const double row_rel = row_bad ? std::numeric_limits<double>::infinity()
                             : row_ref2 > 0 ? std::sqrt(row_err2 / row_ref2)
                             : (row_err2 > 0 ? std::numeric_limits<double>::infinity() : 0.0);
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
      const double want = ref.lse_at(t, h);
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
      if (std::isinf(got)) {
        ++c.inf_count;
        non_finite = true;
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
