// Unit tests of the problem generator: block tables, strides, garbage.
#include "problem.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <stdexcept>

namespace attnjit::testing {
namespace {

ProblemSpec small_spec(KvLayout layout, attnjit_kv_storage storage, int32_t page) {
  ProblemSpec s;
  s.q_dtype = s.kv_dtype = ATTNJIT_DTYPE_BF16;
  s.head_dim_qk = 32;
  s.head_dim_v = 16;
  s.num_q_heads = 4;
  s.num_kv_heads = 2;
  s.storage = storage;
  s.page_size = page;
  s.layout = layout;
  s.seqs = {{1, 1}, {3, 40}, {17, 17}, {1, 100}, {5, 33}};
  return s;
}

TEST(Problem, BlockTableIsAShuffledAssignmentWithGarbagePadding) {
  ProblemSpec s = small_spec(KvLayout::nhd, ATTNJIT_KV_PAGED, 4);
  s.extra_blocks = 5;
  s.block_table_padding = 3;
  const HostProblem p = make_problem(s, fresh_seed());
  SCOPED_TRACE(p.describe());
  ASSERT_EQ(p.block_table_stride, 25 + 3); // ceil(100 / 4) + padding
  std::set<int32_t> used;
  bool identity = true;
  int32_t expect_next = 0;
  for (int32_t b = 0; b < p.batch; ++b) {
    const int32_t nb = (s.seqs[b].kv_len + 3) / 4;
    for (int32_t i = 0; i < p.block_table_stride; ++i) {
      const int32_t blk = p.block_table[b * p.block_table_stride + i];
      ASSERT_GE(blk, 0);
      ASSERT_LT(blk, p.num_blocks);
      if (i < nb) {
        EXPECT_TRUE(used.insert(blk).second) << "block " << blk << " used twice";
        identity = identity && blk == expect_next++;
      } else {
        // Padding: in range, but a block that only holds garbage.
        EXPECT_NE(std::find(p.unused_blocks.begin(), p.unused_blocks.end(), blk), p.unused_blocks.end());
      }
    }
  }
  EXPECT_EQ(static_cast<int32_t>(used.size() + p.unused_blocks.size()), p.num_blocks);
  EXPECT_EQ(static_cast<int32_t>(p.unused_blocks.size()), 5);
  for (int32_t u : p.unused_blocks) EXPECT_EQ(used.count(u), 0u);
  EXPECT_FALSE(identity) << "blocks were assigned in order; the shuffle did nothing";
}

TEST(Problem, StridesDescribeEachLayout) {
  const int32_t page = 8, hkv = 2, dqk = 32, dv = 16;
  {
    const HostProblem p = make_problem(small_spec(KvLayout::nhd, ATTNJIT_KV_PAGED, page), 1);
    EXPECT_EQ(p.k_stride_head, dqk);
    EXPECT_EQ(p.k_stride_token, hkv * dqk);
    EXPECT_EQ(p.k_stride_block, page * hkv * dqk);
    EXPECT_EQ(p.v_stride_head, dv);
    EXPECT_EQ(p.v_stride_token, hkv * dv);
    EXPECT_EQ(p.v_stride_block, page * hkv * dv);
    EXPECT_EQ(p.v_offset, 0);
    EXPECT_EQ(p.k_data.size(), static_cast<size_t>(p.num_blocks) * page * hkv * dqk);
    EXPECT_EQ(p.v_data.size(), static_cast<size_t>(p.num_blocks) * page * hkv * dv);
  }
  {
    const HostProblem p = make_problem(small_spec(KvLayout::hnd, ATTNJIT_KV_PAGED, page), 1);
    EXPECT_EQ(p.k_stride_token, dqk);
    EXPECT_EQ(p.k_stride_head, page * dqk);
    EXPECT_EQ(p.k_stride_block, hkv * page * dqk);
    EXPECT_EQ(p.v_stride_token, dv);
    EXPECT_EQ(p.v_stride_head, page * dv);
  }
  {
    const HostProblem p = make_problem(small_spec(KvLayout::packed, ATTNJIT_KV_PAGED, page), 1);
    const int32_t w = dqk + dv;
    EXPECT_TRUE(p.v_data.empty());
    EXPECT_EQ(p.v_offset, dqk);
    EXPECT_EQ(p.k_stride_head, w);
    EXPECT_EQ(p.v_stride_head, w);
    EXPECT_EQ(p.k_stride_token, hkv * w);
    EXPECT_EQ(p.k_stride_block, page * hkv * w);
    EXPECT_EQ(p.v_stride_block, p.k_stride_block);
    EXPECT_EQ(p.k_data.size(), static_cast<size_t>(p.num_blocks) * page * hkv * w);
  }
  {
    ProblemSpec s = small_spec(KvLayout::hnd, ATTNJIT_KV_CONTIGUOUS, 0);
    s.extra_tokens = 7;
    const HostProblem p = make_problem(s, 1);
    const int64_t rows = p.total_kv + 7;
    EXPECT_EQ(p.k_stride_block, 0);
    EXPECT_EQ(p.k_stride_token, dqk);
    EXPECT_EQ(p.k_stride_head, rows * dqk);
    EXPECT_TRUE(p.block_table.empty());
    EXPECT_EQ(p.cu_seqlens_k, (std::vector<int32_t>{0, 1, 41, 58, 158, 191}));
    EXPECT_EQ(p.k_index(2, 3, 1), (41 + 3) * dqk + 1 * rows * dqk);
  }
}

TEST(Problem, LogicalDataDoesNotDependOnLayoutOrStorage) {
  const uint64_t seed = fresh_seed();
  const HostProblem base = make_problem(small_spec(KvLayout::nhd, ATTNJIT_KV_PAGED, 16), seed);
  SCOPED_TRACE(base.describe());
  struct Variant { KvLayout layout; attnjit_kv_storage storage; int32_t page; };
  for (Variant var : {Variant{KvLayout::hnd, ATTNJIT_KV_PAGED, 16}, Variant{KvLayout::packed, ATTNJIT_KV_PAGED, 1},
                      Variant{KvLayout::nhd, ATTNJIT_KV_PAGED, 256}, Variant{KvLayout::nhd, ATTNJIT_KV_CONTIGUOUS, 0},
                      Variant{KvLayout::packed, ATTNJIT_KV_CONTIGUOUS, 0}}) {
    ProblemSpec s = small_spec(var.layout, var.storage, var.page);
    s.q_token_padding = 16;
    const HostProblem p = make_problem(s, seed);
    SCOPED_TRACE(p.describe());
    for (int64_t t = 0; t < p.total_q; ++t)
      for (int32_t h = 0; h < 4; ++h)
        for (int32_t d = 0; d < 32; ++d) ASSERT_EQ(p.q_value(t, h, d), base.q_value(t, h, d));
    for (int32_t b = 0; b < p.batch; ++b)
      for (int64_t j = 0; j < s.seqs[b].kv_len; ++j)
        for (int32_t h = 0; h < 2; ++h) {
          for (int32_t d = 0; d < 32; ++d) ASSERT_EQ(p.k_value(b, j, h, d), base.k_value(b, j, h, d));
          for (int32_t d = 0; d < 16; ++d) ASSERT_EQ(p.v_value(b, j, h, d), base.v_value(b, j, h, d));
        }
  }
}

TEST(Problem, InputsAreNeverZeroAndGarbageIsLarge) {
  ProblemSpec s = small_spec(KvLayout::nhd, ATTNJIT_KV_PAGED, 16);
  s.q_dtype = s.kv_dtype = ATTNJIT_DTYPE_F16;
  const HostProblem p = make_problem(s, fresh_seed());
  for (uint16_t b : p.q) ASSERT_NE(b & 0x7FFF, 0);
  for (uint16_t b : p.k_data) ASSERT_NE(b & 0x7FFF, 0);
  for (uint16_t b : p.v_data) ASSERT_NE(b & 0x7FFF, 0);
  // An unused block holds garbage with magnitudes in [8, 16]: far above the data (stddev 1).
  double sum2 = 0;
  int64_t n = 0;
  const int64_t base = static_cast<int64_t>(p.unused_blocks[0]) * p.k_stride_block;
  for (int64_t i = 0; i < p.k_stride_block; ++i, ++n) {
    const double x = bits_to_float(p.k_data[base + i], s.kv_dtype);
    sum2 += x * x;
  }
  EXPECT_GT(sum2 / n, 16.0);
}

TEST(Problem, RejectsShapesOutsideTheContract) {
  ProblemSpec s = small_spec(KvLayout::nhd, ATTNJIT_KV_PAGED, 16);
  s.seqs = {{5, 4}};
  EXPECT_THROW(make_problem(s, 1), std::invalid_argument); // q_len > kv_len
  s.seqs = {{0, 0}};
  EXPECT_THROW(make_problem(s, 1), std::invalid_argument); // kv_len 0
  s.seqs = {{1, 1}};
  s.num_q_heads = 6;
  s.num_kv_heads = 4;
  EXPECT_THROW(make_problem(s, 1), std::invalid_argument);
  s.num_kv_heads = 3;
  s.extra_blocks = 0;
  EXPECT_THROW(make_problem(s, 1), std::invalid_argument);
}

TEST(Problem, OutputBuffersHaveGuardsAndPadding) {
  ProblemSpec s = small_spec(KvLayout::nhd, ATTNJIT_KV_PAGED, 16);
  s.o_token_padding = 8;
  const HostProblem p = make_problem(s, 1);
  EXPECT_EQ(p.o_stride_head, 16);
  EXPECT_EQ(p.o_stride_token, 4 * 16 + 8);
  EXPECT_GT(p.o_elems, p.total_q * p.o_stride_token);
  EXPECT_GT(p.lse_elems, 4 * p.total_q);
  for (uint16_t b : p.poisoned_output()) ASSERT_EQ(b, kPoison16);
  for (float f : p.poisoned_lse()) ASSERT_TRUE(is_poison(f));
}

} // namespace
} // namespace attnjit::testing
