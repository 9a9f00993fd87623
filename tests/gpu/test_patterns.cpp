// Masks, sparsity patterns and fp8 KV on the GPU, against the float64 reference, through the C ABI.
//
// Each pattern has its own instantiation (the prefix of the test name), so progress shows per
// pattern: `--gtest_filter='Window/*'`, `'NM/*'`, `'SkipSoftmax/*'`, ...
//   Window        sliding window with and without sink tokens, causal and not, both families
//   LearnedSinks  one logit per q head in the denominator (and the LSE), both families
//   SoftCap       s = c tanh(s / c), both families
//   NM            N:M sparse softmax (M = 4, 8, 16, exemptions, q_len-1 rows dense), both families
//   BlockSparse   FlexAttention-form block masks (broadcast / per batch, empty rows, unsorted
//                 lists, garbage past each row's count), prefill family
//   Fp8           e4m3 / e5m2 KV with per-tensor and per-head scales, both families
//   Composition   window + sink tokens + learned sinks + paging + GQA + 192/128, and friends
//   MiMo          MiMo-V2.5's two layer types at TP-8 (8 q heads, 1 kv head, 192/128): full layers
//                 causal, SWA layers window 128 with learned sinks; bf16 and fp8 KV; both families
//   SkipSoftmax   skip-softmax against its tile emulation (tight), its distance to dense attention
//                 (bounded by the skipped mass), and the skip counters
//   PatternRefusals / PatternRunValidation / PatternValuesIgnoredWhenOff
//
// Same rigor as test_attention.cpp: fresh random inputs (ATTNJIT_TEST_SEED=<seed> replays),
// ragged batches mixing decode, append and prefill rows, shuffled block tables with garbage in
// every unused slot, poisoned outputs, every output element and every LSE checked.
//
// Tolerances (reference.h): the reference uses the exact stored inputs (fp8: the dequantized
// values), so the bound is default_tolerance() of the q/o dtype; under a soft cap it widens by the
// tanh.approx error (pattern_tolerance). N:M selections and skip decisions closer than fp32 can
// resolve accept either outcome (Reference::alternates).
#include "gpu_harness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace attnjit::testing {
namespace {

constexpr auto P = ATTNJIT_FAMILY_PREFILL;
constexpr auto D = ATTNJIT_FAMILY_DECODE;
constexpr auto BF = ATTNJIT_DTYPE_BF16;
constexpr auto F = ATTNJIT_DTYPE_F16;
constexpr auto E4 = ATTNJIT_DTYPE_FP8_E4M3;
constexpr auto E5 = ATTNJIT_DTYPE_FP8_E5M2;

struct PatternCase {
  std::string name;
  attnjit_family family = P;
  ProblemSpec spec;
  RunOptions run;
  bool pin_one_split = false; // skip-softmax decode: the default tile with max_splits = 1
  attnjit_tile_config tile{};  // a pinned tile (zero: the plan's own)
};

void PrintTo(const PatternCase& c, std::ostream* os) { *os << c.name; }

// ---- Workloads (ragged batches) ------------------------------------------------------------------

// Prefill family: decode rows, append rows and prompts in one batch.
std::vector<SeqShape> mixed(int32_t page) {
  return {{1, 1}, {1, 300}, {7, 7}, {5, 260}, {96, 96}, {1, page + 1}, {33, 2 * page + 40}, {130, 131}, {200, 700}};
}
std::vector<SeqShape> long_prompt() { return {{700, 700}, {64, 1500}, {1, 1}, {17, 900}}; }
std::vector<SeqShape> append_rows() { return {{16, 1500}, {64, 2048}, {1, 900}, {29, 77}}; }
// Decode family: one row per sequence.
std::vector<SeqShape> decode_batch(std::vector<int32_t> kv) {
  std::vector<SeqShape> s;
  for (int32_t k : kv) s.push_back({1, k});
  return s;
}
std::vector<SeqShape> decode_mixed() {
  return decode_batch({1, 2, 15, 16, 17, 63, 64, 65, 127, 128, 129, 130, 200, 255, 256, 257, 511, 777, 1000, 1500,
                       2049, 3001});
}
std::vector<SeqShape> decode_long() { return decode_batch({5000, 3001, 1, 129}); }

PatternCase make_case(std::string name, attnjit_family fam, attnjit_dtype q, attnjit_dtype kv, int32_t dqk, int32_t dv,
                      int32_t page, KvLayout layout, int32_t hq, int32_t hkv, bool causal, std::vector<SeqShape> seqs) {
  PatternCase c;
  c.name = std::move(name);
  c.family = fam;
  ProblemSpec& s = c.spec;
  s.q_dtype = q;
  s.kv_dtype = kv;
  s.head_dim_qk = dqk;
  s.head_dim_v = dv;
  s.storage = page == 0 ? ATTNJIT_KV_CONTIGUOUS : ATTNJIT_KV_PAGED;
  s.page_size = page == 0 ? 16 : page;
  s.layout = layout;
  s.num_q_heads = hq;
  s.num_kv_heads = hkv;
  s.causal = causal;
  s.seqs = std::move(seqs);
  c.run.with_lse = true;
  return c;
}

PatternSpec window(int32_t w, int32_t sinks) {
  PatternSpec p;
  p.sliding_window = true;
  p.window = w;
  p.sink_tokens = sinks;
  return p;
}

// ---- Cases per pattern ---------------------------------------------------------------------------

std::vector<PatternCase> window_cases() {
  std::vector<PatternCase> v;
  {
    auto c = make_case("prefill_bf16_d128_g4_p16_nhd_causal_w64", P, BF, BF, 128, 128, 16, KvLayout::nhd, 8, 2, true, mixed(16));
    c.spec.pattern = window(64, 0);
    v.push_back(c);
  }
  {
    auto c = make_case("prefill_f16_d64x128_g2_p32_hnd_causal_w100_s5", P, F, F, 64, 128, 32, KvLayout::hnd, 4, 2, true,
                       long_prompt());
    c.spec.pattern = window(100, 5);
    v.push_back(c);
  }
  {
    // Window larger than most sequences, sink tokens spanning more than one tile.
    auto c = make_case("prefill_bf16_d96x32_mqa_p1_packed_causal_w1000_s70", P, BF, BF, 96, 32, 1, KvLayout::packed, 6, 1,
                       true, append_rows());
    c.spec.pattern = window(1000, 70);
    v.push_back(c);
  }
  {
    // Non-causal window: future keys stay visible, the past is cut at W.
    auto c = make_case("prefill_bf16_d128_g1_contig_full_w33", P, BF, BF, 128, 128, 0, KvLayout::nhd, 4, 4, false,
                       {{50, 777}, {1, 3}, {64, 64}, {120, 400}});
    c.spec.pattern = window(33, 0);
    v.push_back(c);
  }
  {
    auto c = make_case("decode_bf16_d128_g8_p16_nhd_w128_s4", D, BF, BF, 128, 128, 16, KvLayout::nhd, 16, 2, true,
                       decode_mixed());
    c.spec.pattern = window(128, 4);
    v.push_back(c);
  }
  {
    // Long KV (split-KV) with a window: most of the sequence is outside it.
    auto c = make_case("decode_f16_d64_g4_p64_hnd_w500_s0_long", D, F, F, 64, 64, 64, KvLayout::hnd, 8, 2, false,
                       decode_long());
    c.spec.pattern = window(500, 0);
    v.push_back(c);
  }
  {
    auto c = make_case("decode_bf16_d256_mqa_p1_w1_s3", D, BF, BF, 256, 256, 1, KvLayout::nhd, 4, 1, true,
                       decode_batch({1, 2, 3, 4, 100, 1000}));
    c.spec.pattern = window(1, 3); // the row's own key and three sinks
    v.push_back(c);
  }
  return v;
}

std::vector<PatternCase> sink_cases() {
  std::vector<PatternCase> v;
  PatternSpec sinks;
  sinks.learned_sinks = true;
  {
    auto c = make_case("prefill_bf16_d128_g4_p16_causal", P, BF, BF, 128, 128, 16, KvLayout::nhd, 8, 2, true, mixed(16));
    c.spec.pattern = sinks;
    v.push_back(c);
  }
  {
    auto c = make_case("prefill_f16_d80_g1_contig_full", P, F, F, 80, 80, 0, KvLayout::hnd, 4, 4, false, long_prompt());
    c.spec.pattern = sinks;
    c.spec.pattern.sink_mean = 6.0; // sinks that take a good share of the mass
    v.push_back(c);
  }
  {
    auto c = make_case("decode_f16_d64_g8_p64_long", D, F, F, 64, 64, 64, KvLayout::nhd, 16, 2, false, decode_long());
    c.spec.pattern = sinks;
    v.push_back(c);
  }
  {
    auto c = make_case("decode_bf16_d192x128_g4_p16_packed_batch", D, BF, BF, 192, 128, 16, KvLayout::packed, 8, 2, true,
                       decode_mixed());
    c.spec.pattern = sinks;
    c.spec.pattern.sink_mean = 4.0;
    c.run.with_lse = true;
    v.push_back(c);
  }
  return v;
}

std::vector<PatternCase> softcap_cases() {
  std::vector<PatternCase> v;
  {
    auto c = make_case("prefill_f16_d128_g2_p16_causal_cap5", P, F, F, 128, 128, 16, KvLayout::nhd, 4, 2, true, mixed(16));
    c.spec.scale = static_cast<float>(2.5 / std::sqrt(128.0)); // scores of several units: the cap bites
    c.spec.pattern.soft_cap = 5.0f;
    v.push_back(c);
  }
  {
    auto c = make_case("prefill_bf16_d64_g1_contig_full_cap30", P, BF, BF, 64, 64, 0, KvLayout::nhd, 4, 4, false,
                       {{100, 100}, {1, 40}, {37, 500}});
    c.spec.pattern.soft_cap = 30.0f; // Gemma-2 style: hardly ever reached
    v.push_back(c);
  }
  {
    auto c = make_case("decode_bf16_d256_g4_p32_hnd_cap5", D, BF, BF, 256, 256, 32, KvLayout::hnd, 8, 2, true,
                       decode_long());
    c.spec.scale = static_cast<float>(2.5 / std::sqrt(256.0));
    c.spec.pattern.soft_cap = 5.0f;
    v.push_back(c);
  }
  return v;
}

std::vector<PatternCase> nm_cases() {
  std::vector<PatternCase> v;
  auto nm = [](int32_t n, int32_t m, int32_t dense_sink, int32_t dense_recent) {
    PatternSpec p;
    p.nm_n = n;
    p.nm_m = m;
    p.nm_dense_sink_tokens = dense_sink;
    p.nm_dense_recent_tokens = dense_recent;
    return p;
  };
  {
    auto c = make_case("2of4_prefill_bf16_d128_g4_p16_causal_sink4_recent16", P, BF, BF, 128, 128, 16, KvLayout::nhd, 8, 2,
                       true, mixed(16));
    c.spec.pattern = nm(2, 4, 4, 16);
    v.push_back(c);
  }
  {
    auto c = make_case("4of8_prefill_f16_d192x128_g2_p32_hnd_causal_sink0_recent0", P, F, F, 192, 128, 32, KvLayout::hnd, 4,
                       2, true, long_prompt());
    c.spec.pattern = nm(4, 8, 0, 0);
    v.push_back(c);
  }
  {
    auto c = make_case("8of16_prefill_bf16_d64_g8_p1_packed_causal_sink3_recent50", P, BF, BF, 64, 64, 1, KvLayout::packed,
                       16, 2, true, append_rows());
    c.spec.pattern = nm(8, 16, 3, 50);
    v.push_back(c);
  }
  {
    auto c = make_case("1of4_prefill_f16_d128_g1_p16_causal_peaky", P, F, F, 128, 128, 16, KvLayout::nhd, 4, 4, true,
                       {{200, 200}, {7, 900}, {1, 50}});
    c.spec.scale = static_cast<float>(4.0 / std::sqrt(128.0));
    c.spec.pattern = nm(1, 4, 1, 1);
    v.push_back(c);
  }
  {
    // Non-causal: the contract's pos(i) - j < dense_recent_tokens exempts every later key.
    auto c = make_case("2of4_prefill_bf16_d128_g1_contig_full_sink0_recent0", P, BF, BF, 128, 128, 0, KvLayout::nhd, 4, 4,
                       false, {{50, 777}, {64, 64}, {1, 9}});
    c.spec.pattern = nm(2, 4, 0, 0);
    v.push_back(c);
  }
  {
    auto c = make_case("7of8_prefill_bf16_d128_g4_p16_causal_window300", P, BF, BF, 128, 128, 16, KvLayout::nhd, 8, 2, true,
                       long_prompt());
    c.spec.pattern = nm(7, 8, 2, 8);
    c.spec.pattern.sliding_window = true;
    c.spec.pattern.window = 300;
    v.push_back(c);
  }
  {
    // fp8 KV under the thread-contiguous key order: skewed byte stages, fragments widened in
    // registers, V transposed there; quantized keys make exact score ties common.
    auto c = make_case("8of16_prefill_bf16_e4m3_d128_g4_p16_causal_sink2_recent20", P, BF, E4, 128, 128, 16,
                       KvLayout::nhd, 8, 2, true, mixed(16));
    c.spec.pattern = nm(8, 16, 2, 20);
    v.push_back(c);
  }
  {
    auto c = make_case("4of8_prefill_f16_e5m2_d96x64_g2_p32_hnd_causal_sink0_recent0", P, F, E5, 96, 64, 32, KvLayout::hnd,
                       4, 2, true, long_prompt());
    c.spec.pattern = nm(4, 8, 0, 0);
    v.push_back(c);
  }
  {
    // Scores near 1e-7: distinct in fp32, mostly equal once rounded to f16 (its subnormals), so
    // most pairs of groups leave the f16 network for the exact selection.
    auto c = make_case("8of16_prefill_bf16_d128_g2_p16_causal_f16_ties", P, BF, BF, 128, 128, 16, KvLayout::nhd, 4, 2, true,
                       mixed(16));
    c.spec.value_stddev = 1e-4;
    c.spec.scale = static_cast<float>(1.0 / (1e-8 * std::sqrt(128.0)));
    c.spec.pattern = nm(8, 16, 0, 0);
    v.push_back(c);
  }
  {
    // The same f16 ties for the smaller groups, which take the f16 network first too, with sinks
    // and recent keys exempt on both paths.
    auto c = make_case("2of4_prefill_f16_d64_g2_p16_causal_f16_ties_sink3_recent9", P, F, F, 64, 64, 16, KvLayout::nhd, 4,
                       2, true, mixed(16));
    c.spec.value_stddev = 1e-4;
    c.spec.scale = static_cast<float>(1.0 / (1e-8 * std::sqrt(64.0)));
    c.spec.pattern = nm(2, 4, 3, 9);
    v.push_back(c);
  }
  {
    // The decode family: q_len-1 rows are dense.
    auto c = make_case("2of4_decode_bf16_d128_g8_p16_dense_rows", D, BF, BF, 128, 128, 16, KvLayout::nhd, 16, 2, true,
                       decode_mixed());
    c.spec.pattern = nm(2, 4, 0, 0);
    v.push_back(c);
  }
  return v;
}

std::vector<PatternCase> block_sparse_cases() {
  std::vector<PatternCase> v;
  auto bsp = [](int32_t bq, int32_t bkv, double density, bool per_batch) {
    PatternSpec p;
    p.sparse_block_q = bq;
    p.sparse_block_kv = bkv;
    p.block_density = density;
    p.mask_per_batch = per_batch;
    p.mask_extra_columns = 3;
    return p;
  };
  {
    // A diffusion transformer's shape: non-causal, contiguous KV, one mask for the batch (the
    // shorter sequence sees listed blocks past its end).
    auto c = make_case("q128kv128_bf16_d128_g1_contig_full_broadcast", P, BF, BF, 128, 128, 0, KvLayout::nhd, 4, 4, false,
                       {{1024, 1024}, {300, 300}});
    c.spec.pattern = bsp(128, 128, 0.3, false);
    v.push_back(c);
  }
  {
    auto c = make_case("q128kv128_f16_d128_g4_p16_causal_per_batch_empty_rows", P, F, F, 128, 128, 16, KvLayout::nhd, 8, 2,
                       true, {{700, 700}, {130, 1200}, {1, 300}, {17, 17}});
    c.spec.pattern = bsp(128, 128, 0.4, true);
    c.spec.pattern.mask_empty_rows = 0.15;
    v.push_back(c);
  }
  {
    auto c = make_case("q256kv64_bf16_d64x128_g2_p32_hnd_causal_window_sinks", P, BF, BF, 64, 128, 32, KvLayout::hnd, 4, 2,
                       true, {{600, 900}, {300, 300}, {1, 64}});
    c.spec.pattern = bsp(256, 64, 0.5, true);
    c.spec.pattern.sliding_window = true;
    c.spec.pattern.window = 200;
    c.spec.pattern.sink_tokens = 10;
    v.push_back(c);
  }
  {
    auto c = make_case("q128kv128_bf16_d128_g1_contig_full_unsorted", P, BF, BF, 128, 128, 0, KvLayout::nhd, 4, 4, false,
                       {{512, 1000}, {256, 256}});
    c.spec.pattern = bsp(128, 128, 0.35, true);
    c.spec.pattern.mask_unsorted = true;
    v.push_back(c);
  }
  {
    // Empty rows with learned sinks: o = 0, lse = sink.
    auto c = make_case("q128kv128_f16_d128_g4_p16_full_sinks_empty_rows", P, F, F, 128, 128, 16, KvLayout::packed, 8, 2,
                       false, {{400, 400}, {129, 900}});
    c.spec.pattern = bsp(128, 128, 0.2, false);
    c.spec.pattern.mask_empty_rows = 0.2;
    c.spec.pattern.mask_extra_q_blocks = 2;
    c.spec.pattern.learned_sinks = true;
    v.push_back(c);
  }
  {
    auto c = make_case("q128kv128_bf16_d192x128_g8_p16_causal_e4m3", P, BF, E4, 192, 128, 16, KvLayout::nhd, 8, 1, true,
                       {{640, 640}, {64, 1000}});
    c.spec.pattern = bsp(128, 128, 0.3, true);
    v.push_back(c);
  }
  return v;
}

std::vector<PatternCase> fp8_cases() {
  std::vector<PatternCase> v;
  auto per_head = [](PatternCase c) {
    c.spec.pattern.kv_scale_per_head = true;
    return c;
  };
  v.push_back(make_case("e4m3_prefill_bf16_d128_g4_p16_nhd_causal_tensor", P, BF, E4, 128, 128, 16, KvLayout::nhd, 8, 2,
                        true, mixed(16)));
  v.push_back(per_head(make_case("e5m2_prefill_f16_d192x128_g2_p32_hnd_causal_head", P, F, E5, 192, 128, 32, KvLayout::hnd,
                                 4, 2, true, long_prompt())));
  v.push_back(make_case("e4m3_prefill_f16_d256_g1_contig_full_tensor", P, F, E4, 256, 256, 0, KvLayout::packed, 4, 4, false,
                        {{100, 300}, {1, 1}, {64, 64}}));
  v.push_back(per_head(make_case("e4m3_decode_bf16_d128_g8_p16_packed_head_long", D, BF, E4, 128, 128, 16, KvLayout::packed,
                                 16, 2, true, decode_long())));
  v.push_back(make_case("e5m2_decode_f16_d64_mqa_p1_nhd_tensor", D, F, E5, 64, 64, 1, KvLayout::nhd, 6, 1, false,
                        decode_mixed()));
  v.push_back(per_head(make_case("e5m2_decode_bf16_d96x32_g4_p256_hnd_head", D, BF, E5, 96, 32, 256, KvLayout::hnd, 16, 4,
                                 true, decode_mixed())));
  // Swizzled decode stages (rows of 128 or 256 bytes, templates/smem_rows.cuh): 256-byte rows,
  // whose chunk indices reach the row's fourth address bit; and one-token pages, which copy row by
  // row instead of in runs.
  v.push_back(make_case("e4m3_decode_f16_d256_g4_p8_hnd_swizzled", D, F, E4, 256, 256, 8, KvLayout::hnd, 8, 2, false,
                        decode_mixed()));
  v.push_back(make_case("e5m2_decode_bf16_d128_g4_p1_nhd_swizzled_rowwise", D, BF, E5, 128, 128, 1, KvLayout::nhd, 8, 2,
                        true, decode_mixed()));
  // A GQA group of 16: the decode block's m16 tile is full, so its upper rows (g + 8) run the
  // softmax that groups of up to 8 skip.
  v.push_back(make_case("e4m3_decode_bf16_d128_g16_p16_nhd_upper_rows", D, BF, E4, 128, 128, 16, KvLayout::nhd, 16, 1,
                        false, decode_mixed()));
  // fp8 KV multiplies in f16: bf16 q far above f16's largest value and far below its smallest
  // subnormal, with the softmax scale bringing the scores back to O(1). Without the per-row
  // rescale of q, the first overflows and the second flushes to zero.
  auto q_magnitude = [](PatternCase c, double stddev) {
    c.spec.q_stddev = stddev;
    c.spec.scale = static_cast<float>(1.0 / (stddev * std::sqrt(static_cast<double>(c.spec.head_dim_qk))));
    return c;
  };
  v.push_back(q_magnitude(make_case("e4m3_decode_bf16_d128_g4_p16_nhd_q_2p20", D, BF, E4, 128, 128, 16, KvLayout::nhd, 8,
                                    2, false, decode_mixed()),
                          0x1p20));
  v.push_back(q_magnitude(make_case("e5m2_prefill_bf16_d192x128_g2_p16_nhd_causal_q_2m30", P, BF, E5, 192, 128, 16,
                                    KvLayout::nhd, 4, 2, true, mixed(16)),
                          0x1p-30));
  // Pages shorter than the producer's runs of rows: it widens row by row (a block-table read per
  // row), the copy path that 16-token pages never take.
  v.push_back(make_case("e4m3_prefill_bf16_d192x128_g8_p1_nhd_causal_rowwise", P, BF, E4, 192, 128, 1, KvLayout::nhd, 8, 1,
                        true, mixed(1)));
  v.push_back(per_head(make_case("e5m2_prefill_f16_d128_g2_p2_hnd_full_rowwise_head", P, F, E5, 128, 128, 2, KvLayout::hnd,
                                 4, 2, false, mixed(2))));
  // sm_90a's fp8 prefill default is a producer tile, which widens fp8 to f16 into its stages: the
  // mma.sync kernel (fp8 bytes in shared memory, widened fragments) pinned on two of the cases
  // above, so that it stays tested there too.
  auto pin_mma_sync = [&v](const std::string& name) {
    PatternCase c = *std::find_if(v.begin(), v.end(), [&](const PatternCase& x) { return x.name == name; });
    c.name += "_mma_sync";
    c.tile = {128, c.spec.head_dim_qk <= 128 ? 64 : 32, 4, 1, 2, 1, 2, 0}; // the mma.sync prefill default's shape
    v.push_back(c);
  };
  pin_mma_sync("e4m3_prefill_bf16_d128_g4_p16_nhd_causal_tensor");
  pin_mma_sync("e5m2_prefill_bf16_d192x128_g2_p16_nhd_causal_q_2m30");
  return v;
}

// Window + sink tokens + learned sinks + paging + GQA + 192/128 (MiMo's SWA layer) and friends.
std::vector<PatternCase> composition_cases() {
  std::vector<PatternCase> v;
  {
    auto c = make_case("swa_sinktok_lsink_prefill_bf16_d192x128_g8_p16_hnd", P, BF, BF, 192, 128, 16, KvLayout::hnd, 16, 2,
                       true, mixed(16));
    c.spec.pattern = window(128, 4);
    c.spec.pattern.learned_sinks = true;
    v.push_back(c);
  }
  {
    auto c = make_case("swa_sinktok_lsink_decode_f16_d192x128_g4_p32_packed", D, F, F, 192, 128, 32, KvLayout::packed, 8, 2,
                       true, decode_mixed());
    c.spec.pattern = window(100, 3);
    c.spec.pattern.learned_sinks = true;
    v.push_back(c);
  }
  {
    auto c = make_case("swa_sinktok_lsink_decode_bf16_d192x128_g8_p16_long", D, BF, BF, 192, 128, 16, KvLayout::nhd, 16, 2,
                       true, decode_long());
    c.spec.pattern = window(1000, 64);
    c.spec.pattern.learned_sinks = true;
    v.push_back(c);
  }
  {
    // Gemma-2 style: window + soft cap, with learned sinks and fp8 KV on top.
    auto c = make_case("swa_softcap_lsink_e5m2_prefill_f16_d128_g2_contig", P, F, E5, 128, 128, 0, KvLayout::nhd, 4, 2, true,
                       long_prompt());
    c.spec.pattern = window(256, 0);
    c.spec.pattern.soft_cap = 5.0f;
    c.spec.pattern.learned_sinks = true;
    c.spec.pattern.kv_scale_per_head = true;
    c.spec.scale = static_cast<float>(2.0 / std::sqrt(128.0));
    v.push_back(c);
  }
  {
    auto c = make_case("nm2of4_swa_lsink_prefill_bf16_d192x128_g4_p16", P, BF, BF, 192, 128, 16, KvLayout::nhd, 8, 2, true,
                       mixed(16));
    c.spec.pattern = window(128, 4);
    c.spec.pattern.learned_sinks = true;
    c.spec.pattern.nm_n = 2;
    c.spec.pattern.nm_m = 4;
    c.spec.pattern.nm_dense_recent_tokens = 16;
    v.push_back(c);
  }
  return v;
}

// MiMo-V2.5 at TP-8: 8 q heads and 1 kv head per GPU, 192/128. Full layers causal; SWA layers
// window 128 with learned sinks. bf16 and fp8 (e4m3) KV, both families.
std::vector<PatternCase> mimo_cases() {
  std::vector<PatternCase> v;
  for (bool swa : {false, true})
    for (attnjit_dtype kv : {BF, E4})
      for (attnjit_family fam : {P, D}) {
        std::string name = std::string(swa ? "swa" : "full") + (fam == P ? "_prefill" : "_decode") + "_" +
                           std::string(dtype_name(kv)) + "_kv";
        auto c = make_case(name, fam, BF, kv, 192, 128, 16, KvLayout::nhd, 8, 1, true,
                           fam == P ? std::vector<SeqShape>{{1, 1}, {300, 300}, {17, 1200}, {1, 700}, {128, 129}, {64, 4000}}
                                    : decode_batch({1, 5, 127, 128, 129, 200, 1000, 2049, 4097, 8000}));
        if (swa) {
          c.spec.pattern = window(128, 0);
          c.spec.pattern.learned_sinks = true;
        }
        v.push_back(c);
      }
  return v;
}

// ---- Skip-softmax cases --------------------------------------------------------------------------

PatternCase skip_case(std::string name, attnjit_family fam, attnjit_dtype q, attnjit_dtype kv, float lambda,
                      std::vector<SeqShape> seqs) {
  const bool prefill = fam == P;
  auto c = make_case(std::move(name), fam, q, kv, 128, 128, 16, prefill ? KvLayout::nhd : KvLayout::hnd,
                     prefill ? 8 : 16, 2, true, std::move(seqs));
  c.spec.pattern.skip_threshold = lambda;
  // Data with something to skip: hot keys (key 0 and 1% of the others) score ~12 above the rest.
  c.spec.hot_key_fraction = 0.01;
  c.spec.hot_key_boost = 12.0;
  c.run.skip_stats = true;
  return c;
}

std::string lambda_name(float l) { return l == 1e-3f ? "1em3" : l == 1e-2f ? "1em2" : "1em1"; }

std::vector<PatternCase> skip_cases() {
  std::vector<PatternCase> v;
  for (float lambda : {1e-3f, 1e-2f, 1e-1f}) {
    v.push_back(skip_case("prefill_bf16_d128_g4_p16_causal_lambda" + lambda_name(lambda), P, BF, BF, lambda,
                          {{700, 700}, {64, 2000}, {1, 1500}, {200, 1200}, {9, 9}}));
    v.push_back(skip_case("decode_f16_d128_g8_p16_lambda" + lambda_name(lambda), D, F, F, lambda,
                          decode_batch({5000, 3001, 64, 1, 700})));
  }
  {
    auto c = skip_case("decode_bf16_d128_g8_p16_one_split_lambda1em2", D, BF, BF, 1e-2f, decode_batch({4000, 1000, 65}));
    c.pin_one_split = true;
    v.push_back(c);
  }
  // sm_90a's prefill default for skip-softmax is a warpgroup tile of 64 rows: the mma.sync kernel and
  // a CTA of two warpgroups (128-row query tiles, one vote for both) pinned too.
  for (const auto& [suffix, tile] : {std::pair{"_mma_sync", attnjit_tile_config{128, 64, 4, 1, 2, 1, 2, 0}},
                                     std::pair{"_two_warpgroups", attnjit_tile_config{128, 64, 8, 1, 4, 1, 1, 1}}}) {
    auto c = skip_case(std::string("prefill_bf16_d128_g4_p16_causal_lambda1em2") + suffix, P, BF, BF, 1e-2f,
                       {{700, 700}, {64, 2000}, {1, 1500}, {200, 1200}, {9, 9}});
    c.tile = tile;
    v.push_back(c);
  }
  {
    auto c = skip_case("prefill_bf16_d128_g4_p16_window_sinks_lambda1em2", P, BF, BF, 1e-2f, {{900, 900}, {30, 1500}});
    c.spec.pattern.sliding_window = true;
    c.spec.pattern.window = 400;
    c.spec.pattern.sink_tokens = 4;
    c.spec.pattern.learned_sinks = true;
    v.push_back(c);
  }
  {
    auto c = skip_case("decode_bf16_e4m3_d128_g8_p16_no_stats_lambda1em1", D, BF, E4, 1e-1f, decode_batch({2500, 800, 1}));
    c.run.skip_stats = false;
    v.push_back(c);
  }
  return v;
}

// ---- Registry and plan prewarming ----------------------------------------------------------------

const std::map<std::string, std::vector<PatternCase>>& groups() {
  static const std::map<std::string, std::vector<PatternCase>> g = {
      {"Window", window_cases()},     {"LearnedSinks", sink_cases()},   {"SoftCap", softcap_cases()},
      {"NM", nm_cases()},             {"BlockSparse", block_sparse_cases()}, {"Fp8", fp8_cases()},
      {"Composition", composition_cases()}, {"MiMo", mimo_cases()},   {"SkipSoftmax", skip_cases()},
  };
  return g;
}

std::string plan_name(const std::string& group, const PatternCase& c) { return "pattern_" + group + "_" + c.name; }
attnjit_problem plan_problem(const PatternCase& c) {
  attnjit_problem pb = to_attnjit_problem(c.spec, c.family, false);
  pb.tile = c.tile;
  return pb;
}

// (group, case) of a test name "Group/Suite.Test/case".
const PatternCase* find_case(const std::string& suite, const std::string& test, std::string* group) {
  const std::string g = suite.substr(0, suite.find('/'));
  auto it = groups().find(g);
  if (it == groups().end()) return nullptr;
  const std::string name = test.substr(test.find('/') + 1);
  for (const auto& c : it->second)
    if (c.name == name) {
      if (group) *group = g;
      return &c;
    }
  return nullptr;
}

// Creates the plans of every selected pattern test at once, from a pool of threads.
void prewarm_pattern_plans() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!gpu_info().available || shared_context() == nullptr) return;
    std::vector<std::pair<std::string, attnjit_problem>> todo;
    const ::testing::UnitTest* ut = ::testing::UnitTest::GetInstance();
    for (int s = 0; s < ut->total_test_suite_count(); ++s) {
      const ::testing::TestSuite* suite = ut->GetTestSuite(s);
      for (int i = 0; i < suite->total_test_count(); ++i) {
        const ::testing::TestInfo* ti = suite->GetTestInfo(i);
        if (!ti->should_run()) continue;
        std::string group;
        const PatternCase* c = find_case(suite->name(), ti->name(), &group);
        if (c != nullptr) todo.emplace_back(plan_name(group, *c), plan_problem(*c));
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    prewarm_plans(todo);
    std::cout << "[ plans    ] " << todo.size() << " pattern plans created in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
  });
}

std::string case_name(const ::testing::TestParamInfo<PatternCase>& info) { return info.param.name; }

// ---- The dense-reference patterns ------------------------------------------------------------------

class PatternCaseTest : public ::testing::TestWithParam<PatternCase> {
 public:
  static void SetUpTestSuite() { prewarm_pattern_plans(); }
};

TEST_P(PatternCaseTest, MatchesReference) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const PatternCase& c = GetParam();
  const ::testing::TestInfo* ti = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string group;
  ASSERT_NE(find_case(ti->test_suite_name(), ti->name(), &group), nullptr);
  const HostProblem hp = make_problem(c.spec, fresh_seed());
  SCOPED_TRACE(hp.describe() + " (replay with ATTNJIT_TEST_SEED=" + std::to_string(hp.seed) + ")");
  const PlanSlot& slot = shared_plan(plan_name(group, c), plan_problem(c));
  ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;

  auto ref_future = std::async(std::launch::async, [&hp] { return compute_reference(hp); });
  Stream stream;
  ASSERT_NE(stream.get(), nullptr);
  DeviceProblem dev;
  const Outcome out = run_once(slot.plan, hp, dev, c.run, stream.get());
  const Reference ref = ref_future.get();
  EXPECT_TRUE(matches_reference(hp, ref, out, c.run.with_lse));
  if (out.error.empty()) {
    const Comparison o = compare_output(hp, ref, out.o);
    std::cout << "[ accuracy ] rel_l2 " << o.rel_l2 << " worst_row " << o.worst_row_rel;
    if (c.run.with_lse) std::cout << " lse_max_abs " << compare_lse(hp, ref, out.lse).max_abs;
    if (ref.empty_rows) std::cout << " empty_rows " << ref.empty_rows;
    if (ref.ambiguous) std::cout << " ambiguous " << ref.ambiguous << " (alternates used " << o.alternates_used << ")";
    if (ref.ambiguous_unresolved) std::cout << " UNRESOLVED " << ref.ambiguous_unresolved;
    std::cout << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Window, PatternCaseTest, ::testing::ValuesIn(groups().at("Window")), case_name);
INSTANTIATE_TEST_SUITE_P(LearnedSinks, PatternCaseTest, ::testing::ValuesIn(groups().at("LearnedSinks")), case_name);
INSTANTIATE_TEST_SUITE_P(SoftCap, PatternCaseTest, ::testing::ValuesIn(groups().at("SoftCap")), case_name);
INSTANTIATE_TEST_SUITE_P(NM, PatternCaseTest, ::testing::ValuesIn(groups().at("NM")), case_name);
INSTANTIATE_TEST_SUITE_P(BlockSparse, PatternCaseTest, ::testing::ValuesIn(groups().at("BlockSparse")), case_name);
INSTANTIATE_TEST_SUITE_P(Fp8, PatternCaseTest, ::testing::ValuesIn(groups().at("Fp8")), case_name);
INSTANTIATE_TEST_SUITE_P(Composition, PatternCaseTest, ::testing::ValuesIn(groups().at("Composition")), case_name);
INSTANTIATE_TEST_SUITE_P(MiMo, PatternCaseTest, ::testing::ValuesIn(groups().at("MiMo")), case_name);

// ---- Skip-softmax ----------------------------------------------------------------------------------

struct TileInfo {
  int32_t bm = 0, bn = 0, wm = 0, wn = 0, st = 0, sp = 0, oc = 0;
  bool ok = false;
};

// The tile of attnjit_plan_describe: "<spec>|bm128.bn64.wm8.wn1.st2.sp1.oc2|sm_90a".
TileInfo parse_tile(const std::string& describe) {
  TileInfo t;
  const size_t a = describe.find('|');
  const size_t b = a == std::string::npos ? a : describe.find('|', a + 1);
  if (b == std::string::npos) return t;
  std::stringstream ss(describe.substr(a + 1, b - a - 1));
  std::map<std::string, int32_t> f;
  for (std::string item; std::getline(ss, item, '.');) {
    size_t k = 0;
    while (k < item.size() && std::isalpha(static_cast<unsigned char>(item[k]))) ++k;
    if (k == 0 || k == item.size()) return t;
    f[item.substr(0, k)] = std::atoi(item.c_str() + k);
  }
  for (const char* key : {"bm", "bn", "wm", "wn", "st", "sp"})
    if (!f.count(key)) return t;
  t.bm = f["bm"], t.bn = f["bn"], t.wm = f["wm"], t.wn = f["wn"], t.st = f["st"], t.sp = f["sp"];
  t.oc = f.count("oc") ? f["oc"] : 1;
  t.ok = t.bm > 0 && t.bn > 0 && t.sp > 0;
  return t;
}

std::string describe_of(attnjit_plan plan) {
  const char* d = nullptr;
  if (attnjit_plan_describe(plan, &d) != ATTNJIT_OK || d == nullptr) return "";
  return d;
}

class SkipCaseTest : public ::testing::TestWithParam<PatternCase> {
 public:
  static void SetUpTestSuite() { prewarm_pattern_plans(); }
};

TEST_P(SkipCaseTest, MatchesTileEmulationAndStaysNearDense) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const PatternCase& c = GetParam();
  const HostProblem hp = make_problem(c.spec, fresh_seed());
  SCOPED_TRACE(hp.describe() + " (replay with ATTNJIT_TEST_SEED=" + std::to_string(hp.seed) + ")");
  const PlanSlot* slot = &shared_plan(plan_name("SkipSoftmax", c), plan_problem(c));
  ASSERT_EQ(slot->status, ATTNJIT_OK) << slot->message;
  TileInfo tile = parse_tile(describe_of(slot->plan));
  ASSERT_TRUE(tile.ok) << "cannot read the tile config from attnjit_plan_describe: \"" << describe_of(slot->plan) << "\"";
  if (c.pin_one_split) {
    attnjit_problem pb = to_attnjit_problem(c.spec, c.family, false);
    pb.tile = {tile.bm, tile.bn, tile.wm, tile.wn, tile.st, 1, tile.oc, 0}; // mma.sync: skip-softmax takes no warpgroup tile
    slot = &shared_plan(plan_name("SkipSoftmax", c) + "_pinned", pb);
    ASSERT_EQ(slot->status, ATTNJIT_OK) << slot->message;
    tile = parse_tile(describe_of(slot->plan));
    ASSERT_TRUE(tile.ok);
    ASSERT_EQ(tile.sp, 1) << describe_of(slot->plan);
  }
  SCOPED_TRACE("plan " + describe_of(slot->plan));
  const bool pack = c.family == D;
  // The split-KV partition of this call (each split starts from m = -inf).
  int32_t splits = 0;
  {
    const attnjit_status st = attnjit_plan_num_splits(slot->plan, hp.batch, hp.max_q_len, hp.max_kv_len, &splits);
    ASSERT_EQ(st, ATTNJIT_OK) << status_message(st);
  }
  ASSERT_GE(splits, 1);
  ASSERT_LE(splits, tile.sp);
  if (c.family == P) {
    EXPECT_EQ(splits, 1);
  }

  auto ref_future = std::async(std::launch::async, [&] {
    return compute_skip_reference(hp, make_skip_tiling(tile.bm, tile.bn, pack, splits));
  });
  Stream stream;
  ASSERT_NE(stream.get(), nullptr);
  DeviceProblem dev;
  const Outcome out = run_once(slot->plan, hp, dev, c.run, stream.get());
  const SkipReference sr = ref_future.get();
  ASSERT_TRUE(out.error.empty()) << out.error;

  // Tight: the kernel against the emulation of its own tiles and splits.
  EXPECT_TRUE(matches_reference(hp, sr.ref, out, c.run.with_lse)) << "against the tile emulation (" << splits
                                                                  << " split(s))";

  // The counters: seen = the (query tile, KV tile) pairs of the tile lists (whatever the split),
  // skipped <= seen.
  if (c.run.skip_stats) {
    EXPECT_EQ(out.skip_stats[1], static_cast<unsigned long long>(sr.tiles_seen)) << "tiles seen";
    EXPECT_LE(out.skip_stats[0], out.skip_stats[1]) << "tiles skipped";
  }

  // Bounded, loose: against dense attention, per row no further than the skipped mass allows
  // (plus the kernel's own rounding), and overall likewise.
  const Tolerance tol = pattern_tolerance(hp);
  const int32_t hq = hp.spec.num_q_heads, dv = hp.spec.head_dim_v;
  double err2 = 0, ref2 = 0, bound2 = 0, worst_excess = 0, worst_f = 0;
  int64_t rows_over = 0;
  for (int64_t t = 0; t < hp.total_q; ++t)
    for (int32_t h = 0; h < hq; ++h) {
      const size_t row = static_cast<size_t>(t) * hq + h;
      double e2 = 0, r2 = 0;
      for (int32_t d = 0; d < dv; ++d) {
        const double got = bits_to_float(out.o[hp.o_index(t, h) + d], hp.spec.q_dtype);
        const double want = sr.dense.o_at(t, h, d);
        e2 += (got - want) * (got - want);
        r2 += want * want;
      }
      err2 += e2;
      ref2 += r2;
      bound2 += sr.o_bound[row] * sr.o_bound[row];
      worst_f = std::max(worst_f, sr.dropped_fraction[row]);
      const double allowed = sr.o_bound[row] + tol.row_rel_l2 * std::sqrt(r2) + 1e-6;
      if (std::sqrt(e2) > allowed) {
        ++rows_over;
        worst_excess = std::max(worst_excess, std::sqrt(e2) / allowed);
      }
    }
  const double rel_dense = std::sqrt(err2 / ref2), rel_bound = std::sqrt(bound2 / ref2);
  EXPECT_EQ(rows_over, 0) << "rows further from dense attention than the skipped mass allows (worst by "
                          << worst_excess << "x)";
  EXPECT_LE(rel_dense, rel_bound + tol.rel_l2) << "overall distance to dense attention";
  std::cout << "[ skip     ] lambda " << hp.spec.pattern.skip_threshold << " tile bm" << tile.bm << " bn" << tile.bn
            << " splits " << splits << ": kernel skipped "
            << out.skip_stats[0] << "/" << out.skip_stats[1] << ", emulation " << sr.tiles_skipped << "/"
            << sr.tiles_seen << " (" << sr.ambiguous_decisions << " near the threshold); vs dense rel_l2 " << rel_dense
            << " (bound " << rel_bound << "), worst skipped mass " << worst_f << "\n";
}

INSTANTIATE_TEST_SUITE_P(SkipSoftmax, SkipCaseTest, ::testing::ValuesIn(groups().at("SkipSoftmax")), case_name);

// ---- Refusals, run validation, values ignored when off ---------------------------------------------

// Plan creation refuses what validation refuses, with the field named, and creates nothing.
TEST(PatternRefusals, PlanCreateRefusesInvalidCombinations) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const std::vector<std::string> selectors = {"sparsity", "nm_n", "nm_m", "skip_softmax", "block_sparse"};
  struct Bad {
    const char* what;
    std::function<void(attnjit_problem&)> edit;
    std::vector<std::string> fields;
  };
  const std::vector<Bad> bad = {
      {"N:M + skip", [](attnjit_problem& p) { p.sparsity.nm_n = 2; p.sparsity.nm_m = 4; p.sparsity.skip_softmax = 1; }, selectors},
      {"N:M + block sparse",
       [](attnjit_problem& p) {
         p.sparsity.nm_n = 2, p.sparsity.nm_m = 4, p.sparsity.block_sparse = 1;
         p.sparsity.sparse_block_q = p.sparsity.sparse_block_kv = 128;
       },
       selectors},
      {"skip + block sparse",
       [](attnjit_problem& p) {
         p.sparsity.skip_softmax = 1, p.sparsity.block_sparse = 1;
         p.sparsity.sparse_block_q = p.sparsity.sparse_block_kv = 128;
       },
       selectors},
      {"block sparse, decode family",
       [](attnjit_problem& p) {
         p.family = ATTNJIT_FAMILY_DECODE, p.sparsity.block_sparse = 1;
         p.sparsity.sparse_block_q = p.sparsity.sparse_block_kv = 128;
       },
       {"block_sparse", "family"}},
      {"fp8 q", [](attnjit_problem& p) { p.q_dtype = ATTNJIT_DTYPE_FP8_E4M3; }, {"q_dtype"}},
      {"per-head scales, bf16 KV", [](attnjit_problem& p) { p.kv_scale_per_head = 1; }, {"kv_scale_per_head"}},
      {"nm_m 6", [](attnjit_problem& p) { p.sparsity.nm_n = 2, p.sparsity.nm_m = 6; }, {"nm_m"}},
      {"nm_n 4 of 4", [](attnjit_problem& p) { p.sparsity.nm_n = 4, p.sparsity.nm_m = 4; }, {"nm_n"}},
  };
  for (const Bad& b : bad) {
    ProblemSpec s;
    s.seqs = {{1, 10}};
    attnjit_problem pb = to_attnjit_problem(s, P, false);
    b.edit(pb);
    attnjit_plan plan = nullptr;
    const attnjit_status st = attnjit_plan_create(ctx, &pb, &plan);
    const std::string msg = last_error_text();
    EXPECT_EQ(st, ATTNJIT_ERROR_INVALID_ARGUMENT) << b.what << ": " << msg;
    EXPECT_EQ(plan, nullptr) << b.what;
    EXPECT_TRUE(names_field(msg, b.fields)) << b.what << ": \"" << msg << "\"";
    if (plan != nullptr) attnjit_plan_destroy(plan);
  }
}

struct BadRun {
  std::string what;
  std::function<void(attnjit_run_args&)> edit;
  std::vector<std::string> fields;
};

void expect_refused_runs(const std::string& group, const PatternCase& c, const std::vector<BadRun>& bad) {
  const HostProblem p = make_problem(c.spec, fresh_seed());
  SCOPED_TRACE(group + "/" + c.name + ": " + p.describe());
  const PlanSlot& slot = shared_plan(plan_name(group, c), plan_problem(c));
  ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;
  size_t ws = 0;
  ASSERT_EQ(attnjit_plan_workspace_bytes(slot.plan, &ws), ATTNJIT_OK);
  Stream stream;
  DeviceProblem dev;
  ATTNJIT_CUDA_ASSERT(dev.upload_inputs(p, stream.get()));
  ATTNJIT_CUDA_ASSERT(dev.poison_outputs(p, ws, stream.get()));
  const attnjit_run_args good = make_run_args(p, dev, c.run);
  for (const BadRun& b : bad) {
    attnjit_run_args a = good;
    b.edit(a);
    const attnjit_status st = attnjit_run(slot.plan, &a, stream.get());
    const std::string m = last_error_text();
    EXPECT_EQ(st, ATTNJIT_ERROR_INVALID_ARGUMENT) << b.what << ": " << m;
    EXPECT_TRUE(names_field(m, b.fields)) << b.what << ": the message should name " << b.fields.front() << ": \"" << m
                                          << "\"";
  }
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
  Outcome o;
  ATTNJIT_CUDA_ASSERT(download_outputs(p, dev, false, o));
  size_t written = 0;
  for (uint16_t b : o.o) written += b != kPoison16;
  EXPECT_EQ(written, 0u) << "a refused run wrote its output";
}

const PatternCase& case_of(const std::string& group, const std::string& name) {
  for (const auto& c : groups().at(group))
    if (c.name == name) return c;
  throw std::logic_error("no case " + group + "/" + name);
}

TEST(PatternRunValidation, BadPatternValuesAreRefusedAndNothingRuns) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Window + sink tokens + learned sinks + soft cap + fp8 scales (one plan).
  expect_refused_runs("Composition", case_of("Composition", "swa_softcap_lsink_e5m2_prefill_f16_d128_g2_contig"),
                      {{"window_size 0", [](attnjit_run_args& a) { a.window_size = 0; }, {"window_size"}},
                       {"window_size -5", [](attnjit_run_args& a) { a.window_size = -5; }, {"window_size"}},
                       {"sink_tokens -1", [](attnjit_run_args& a) { a.sink_tokens = -1; }, {"sink_tokens"}},
                       {"soft_cap 0", [](attnjit_run_args& a) { a.soft_cap = 0; }, {"soft_cap"}},
                       {"soft_cap -2", [](attnjit_run_args& a) { a.soft_cap = -2; }, {"soft_cap"}},
                       {"soft_cap NaN", [nan](attnjit_run_args& a) { a.soft_cap = nan; }, {"soft_cap"}}});
  expect_refused_runs("NM", case_of("NM", "2of4_prefill_bf16_d128_g4_p16_causal_sink4_recent16"),
                      {{"nm_dense_sink_tokens -1", [](attnjit_run_args& a) { a.nm_dense_sink_tokens = -1; },
                        {"nm_dense_sink_tokens"}},
                       {"nm_dense_recent_tokens -3", [](attnjit_run_args& a) { a.nm_dense_recent_tokens = -3; },
                        {"nm_dense_recent_tokens"}}});
  expect_refused_runs("SkipSoftmax", groups().at("SkipSoftmax").front(),
                      {{"skip_threshold 0", [](attnjit_run_args& a) { a.skip_threshold = 0; }, {"skip_threshold"}},
                       {"skip_threshold 1", [](attnjit_run_args& a) { a.skip_threshold = 1; }, {"skip_threshold"}},
                       {"skip_threshold -0.1", [](attnjit_run_args& a) { a.skip_threshold = -0.1f; }, {"skip_threshold"}},
                       {"skip_threshold NaN", [nan](attnjit_run_args& a) { a.skip_threshold = nan; }, {"skip_threshold"}}});
  expect_refused_runs(
      "BlockSparse", case_of("BlockSparse", "q128kv128_f16_d128_g4_p16_causal_per_batch_empty_rows"),
      {{"mask_batch 0", [](attnjit_run_args& a) { a.mask_batch = 0; }, {"mask_batch"}},
       {"mask_batch 3 of 4", [](attnjit_run_args& a) { a.mask_batch = 3; }, {"mask_batch"}},
       {"mask_q_blocks 0", [](attnjit_run_args& a) { a.mask_q_blocks = 0; }, {"mask_q_blocks"}},
       {"mask_q_blocks too few", [](attnjit_run_args& a) { a.mask_q_blocks = 5; }, {"mask_q_blocks"}},
       {"mask_max_kv_blocks 0", [](attnjit_run_args& a) { a.mask_max_kv_blocks = 0; }, {"mask_max_kv_blocks"}}});
}

// Null pattern pointers: a run that is not refused would launch a kernel that dereferences null
// and take the whole process's CUDA context down with it, so these run in a child process (this
// binary again, filtered to PatternNullPointerChild) and the parent checks its verdict.
TEST(PatternNullPointerChild, NullPatternPointersAreRefused) {
  if (std::getenv("ATTNJIT_PATTERN_CHILD") == nullptr) GTEST_SKIP() << "runs as the child of PatternRunValidation";
  ATTNJIT_SHARED_CONTEXT(ctx);
  expect_refused_runs("Composition", case_of("Composition", "swa_softcap_lsink_e5m2_prefill_f16_d128_g2_contig"),
                      {{"null sinks", [](attnjit_run_args& a) { a.sinks = nullptr; }, {"sinks"}},
                       {"null k_scale", [](attnjit_run_args& a) { a.k_scale = nullptr; }, {"k_scale"}},
                       {"null v_scale", [](attnjit_run_args& a) { a.v_scale = nullptr; }, {"v_scale"}}});
  expect_refused_runs("BlockSparse", case_of("BlockSparse", "q128kv128_f16_d128_g4_p16_causal_per_batch_empty_rows"),
                      {{"null kv_num_blocks", [](attnjit_run_args& a) { a.kv_num_blocks = nullptr; }, {"kv_num_blocks"}},
                       {"null kv_indices", [](attnjit_run_args& a) { a.kv_indices = nullptr; }, {"kv_indices"}}});
}

TEST(PatternRunValidation, NullPatternPointersAreRefusedInAChildProcess) {
  ATTNJIT_REQUIRE_GPU();
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string log = dir.path() + "/child.log";
  // The shell that std::system starts would read /proc/self/exe as itself: resolve it here.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd = "ATTNJIT_PATTERN_CHILD=1 '" + self + "' --gtest_color=no "
                          "--gtest_filter=PatternNullPointerChild.NullPatternPointersAreRefused > '" + log + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  const std::string out = text.str();
  EXPECT_EQ(rc, 0) << "the child failed (a null pattern pointer was not refused, or the kernel faulted):\n"
                   << out.substr(out.size() > 6000 ? out.size() - 6000 : 0);
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out.substr(out.size() > 6000 ? out.size() - 6000 : 0);
}

// A dense plan reads none of the pattern values: junk in every one of them changes nothing (the
// pointers point at device memory full of NaN / huge values, so a read would show).
TEST(PatternValuesIgnoredWhenOff, JunkPatternArgumentsDoNotChangeADenseRun) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  for (attnjit_family fam : {P, D}) {
    ProblemSpec s;
    s.q_dtype = s.kv_dtype = BF;
    s.num_q_heads = 8;
    s.num_kv_heads = 2;
    s.causal = true;
    s.seqs = fam == P ? std::vector<SeqShape>{{37, 37}, {1, 300}, {5, 260}} : decode_batch({1, 300, 1025});
    const HostProblem p = make_problem(s, fresh_seed());
    SCOPED_TRACE(p.describe());
    const PlanSlot& slot = shared_plan(std::string("pattern_dense_") + (fam == P ? "prefill" : "decode"),
                                       to_attnjit_problem(s, fam, false));
    ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;
    size_t ws = 0;
    ASSERT_EQ(attnjit_plan_workspace_bytes(slot.plan, &ws), ATTNJIT_OK);
    Stream stream;
    DeviceProblem dev;
    ATTNJIT_CUDA_ASSERT(dev.upload_inputs(p, stream.get()));
    ATTNJIT_CUDA_ASSERT(dev.poison_outputs(p, ws, stream.get()));
    DeviceBuffer junk;
    ATTNJIT_CUDA_ASSERT(junk.ensure(4096));
    ATTNJIT_CUDA_ASSERT(cudaMemset(junk.get(), 0xFF, 4096)); // NaN floats, -1 ints
    attnjit_run_args a = make_run_args(p, dev, RunOptions{});
    a.window_size = -7;
    a.sink_tokens = -3;
    a.sinks = junk.as<const float>();
    a.soft_cap = -1.0f;
    a.k_scale = junk.as<const float>();
    a.v_scale = junk.as<const float>();
    a.nm_dense_sink_tokens = -1;
    a.nm_dense_recent_tokens = -1;
    a.skip_threshold = 5.0f;
    a.skip_stats = junk.as<unsigned long long>();
    a.kv_num_blocks = junk.as<const int32_t>();
    a.kv_indices = junk.as<const int32_t>();
    a.mask_batch = -2;
    a.mask_q_blocks = -1;
    a.mask_max_kv_blocks = -1;
    const attnjit_status st = attnjit_run(slot.plan, &a, stream.get());
    ASSERT_EQ(st, ATTNJIT_OK) << status_message(st);
    ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
    Outcome out;
    ATTNJIT_CUDA_ASSERT(download_outputs(p, dev, true, out));
    EXPECT_TRUE(matches_reference(p, compute_reference(p), out, true));
    std::vector<unsigned char> after(4096);
    ATTNJIT_CUDA_ASSERT(cudaMemcpy(after.data(), junk.get(), 4096, cudaMemcpyDeviceToHost));
    EXPECT_TRUE(std::all_of(after.begin(), after.end(), [](unsigned char x) { return x == 0xFF; }))
        << "a dense plan wrote into args.skip_stats";
  }
}

// The block-mask garbage really is reachable data: a kernel that read the entries past a row's
// count would see listed-looking blocks with keys (checked here on the host, so a pass of the
// BlockSparse cases means the kernel did not read them).
TEST(PatternHarness, BlockMaskPaddingWouldChangeTheAnswer) {
  const PatternCase& c = case_of("BlockSparse", "q128kv128_f16_d128_g4_p16_causal_per_batch_empty_rows");
  HostProblem p = make_problem(c.spec, fresh_seed());
  const Reference good = compute_reference(p);
  // Count the padding into every row: what a kernel reading mask_max_kv_blocks entries computes.
  HostProblem greedy = p;
  for (size_t row = 0; row < greedy.kv_num_blocks.size(); ++row) greedy.kv_num_blocks[row] = greedy.mask_max_kv_blocks;
  const Reference bad = compute_reference(greedy);
  std::vector<uint16_t> out = p.poisoned_output();
  std::vector<float> lse = p.poisoned_lse();
  for (int64_t t = 0; t < p.total_q; ++t)
    for (int32_t h = 0; h < p.spec.num_q_heads; ++h) {
      for (int32_t d = 0; d < p.spec.head_dim_v; ++d)
        out[p.o_index(t, h) + d] = float_to_bits(static_cast<float>(bad.o_at(t, h, d)), p.spec.q_dtype);
      lse[static_cast<size_t>(h) * p.total_q + t] = static_cast<float>(bad.lse_at(t, h));
    }
  const Tolerance tol = pattern_tolerance(p);
  EXPECT_FALSE(compare_output(p, good, out).output_ok(tol) && compare_lse(p, good, lse).lse_ok(tol));
}

} // namespace
} // namespace attnjit::testing
