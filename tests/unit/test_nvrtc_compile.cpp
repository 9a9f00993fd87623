// NVRTC compilation of a sampled spec matrix for sm_80 and sm_90a, on a machine with no GPU:
// every head-dim class (equal and unequal pairs), page sizes 1, 16 and 256, both dtypes, paged
// and contiguous storage, both families. Each kernel must compile without spilling.
#include <gtest/gtest.h>

#include <future>

#include <fmt/format.h>

#include "codegen/cubin_info.h"
#include "codegen/emit.h"
#include "codegen/errors.h"
#include "codegen/nvrtc_compiler.h"
#include "runtime/binary_builder.h"

namespace attnjit {
namespace {

struct Case {
  KernelSpec spec;
  std::string arch;
};

std::vector<Case> sampled_matrix() {
  const std::pair<int, int> dims[] = {{16, 16}, {64, 64}, {128, 128}, {192, 128}, {64, 256}, {256, 256}, {96, 32}};
  const int pages[] = {1, 16, 256};
  std::vector<Case> out;
  int i = 0;
  for (const char* arch : {"sm_80", "sm_90a"})
    for (auto fam : {KernelFamily::prefill, KernelFamily::decode})
      for (auto [dqk, dv] : dims) {
        // Rotate the remaining axes through the head-dim classes so each value appears with
        // several head dims and both families without compiling the full product.
        KernelSpec s;
        s.family = fam;
        s.head_dim_qk = dqk;
        s.head_dim_v = dv;
        s.q_dtype = s.kv_dtype = (i % 2) ? DType::f16 : DType::bf16;
        s.causal = (i / 2) % 2;
        if (i % 4 == 3) {
          s.kv_storage = KvStorage::contiguous;
          s.page_size = 1;
        } else {
          s.page_size = pages[i % 3];
        }
        out.push_back({s, arch});
        ++i;
      }
  return out;
}

TEST(NvrtcCompile, SampledMatrixCompilesWithoutSpills) {
  try {
    NvrtcCompiler::instance();
  } catch (const UnsupportedError& e) {
    GTEST_SKIP() << e.what();
  }
  const auto cases = sampled_matrix();
  std::vector<std::future<cache::BinaryRecord>> jobs;
  for (const auto& c : cases)
    jobs.push_back(std::async(std::launch::async, [&c] { return build_binary(c.spec, default_tile(c.spec, c.arch), c.arch); }));
  std::vector<double> ms;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    SCOPED_TRACE(c.spec.canonical() + " " + c.arch);
    cache::BinaryRecord r;
    ASSERT_NO_THROW(r = jobs[i].get());
    EXPECT_GT(r.cubin.size(), 1000u);
    // A tile that caps registers to fit more CTAs per SM trades a little spilling for occupancy on
    // purpose (the trade is measured in bench/RESULTS.md); every other default must not spill.
    const TileConfig tile = default_tile(c.spec, c.arch);
    if (tile.min_ctas_per_sm > 1) EXPECT_LE(r.spill_bytes, 128) << r.compile_log;
    else EXPECT_EQ(r.spill_bytes, 0) << r.compile_log;
    EXPECT_GT(r.registers, 0) << "ptxas resource report missing:\n" << r.compile_log;
    EXPECT_LE(r.registers, 255);
    EXPECT_NE(r.ptx.find(tile.wgmma ? "wgmma.mma_async.sync.aligned.m64n64k16" : "mma.sync.aligned.m16n8k16"),
              std::string::npos);
    EXPECT_EQ(r.arch, c.arch);
    ms.push_back(r.compile_ms);
  }
  std::sort(ms.begin(), ms.end());
  fmt::print("compiled {} kernels: median {:.0f} ms, max {:.0f} ms (parallel {})\n", ms.size(),
             ms[ms.size() / 2], ms.back(), NvrtcCompiler::max_parallel());
}

// The cubin's own register count (what is left when NVRTC answers without a ptxas report) agrees
// with the report, for a kernel with a stack frame and one without.
TEST(NvrtcCompile, CubinResourcesMatchThePtxasReport) {
  try {
    NvrtcCompiler::instance();
  } catch (const UnsupportedError& e) {
    GTEST_SKIP() << e.what();
  }
  KernelSpec capped; // d128 prefill: two CTAs per SM cap it at 255 registers
  KernelSpec wide;
  wide.head_dim_qk = wide.head_dim_v = 256;
  // The mma.sync tile of four warps of 32 rows with too many scores for the cap: the kernel gets a
  // stack frame.
  const TileConfig spilling{.block_m = 128, .block_n = 128, .warps_m = 4, .warps_n = 1, .stages = 2, .max_splits = 1,
                            .min_ctas_per_sm = 2};
  for (auto [spec, tile] : {std::pair{capped, default_tile(capped, "sm_90a")}, std::pair{wide, default_tile(wide, "sm_80")},
                            std::pair{capped, spilling}}) {
    const CompileResult r = NvrtcCompiler::instance().compile(emit_source(spec, tile), "sm_90a");
    const KernelResources reported = parse_ptxas_resources(r.log, kAttentionEntry);
    ASSERT_GT(reported.registers, 0) << r.log;
    const auto from_cubin = resources_from_cubin(r.cubin, kAttentionEntry);
    ASSERT_TRUE(from_cubin.has_value());
    EXPECT_EQ(from_cubin->registers, reported.registers) << tile.canonical();
    EXPECT_EQ(from_cubin->stack_bytes, reported.stack_bytes) << tile.canonical();
    EXPECT_EQ(from_cubin->spill_bytes, -1);
    if (tile == spilling) EXPECT_GT(reported.stack_bytes, 0) << "the frame-size path is not exercised";
  }
  EXPECT_FALSE(resources_from_cubin("not an elf file", kAttentionEntry).has_value());
  const CompileResult r = NvrtcCompiler::instance().compile(emit_source(KernelSpec{}, default_tile(KernelSpec{}, "sm_80")), "sm_80");
  EXPECT_FALSE(resources_from_cubin(r.cubin, "no_such_kernel").has_value());
  EXPECT_FALSE(resources_from_cubin(std::string_view(r.cubin).substr(0, 100), kAttentionEntry).has_value());
}

// How K/V tiles split among their copying threads (tile_load.cuh's KvTileRuns), asserted where the
// device compiler sees the templates: rows whose 16-byte chunks do not divide the team go in runs
// with threads left idle only for teams that allow it (warpgroup tiles), else row by row.
TEST(NvrtcCompile, CopyRunsLeaveThreadsIdleOnlyWhereAllowed) {
  try {
    NvrtcCompiler::instance();
  } catch (const UnsupportedError& e) {
    GTEST_SKIP() << e.what();
  }
  const char* source = R"(
#include "tile_load.cuh"
using namespace attnjit;
// 128-dim bf16 rows (16 chunks) among a producer's 128 threads: 8 runs of 8 rows, none idle.
using D128 = KvTileRuns<64, 256, CopyTeam<128, 256, true>>;
static_assert(D128::kGroups == 8 && D128::kRun == 8 && D128::kActiveThreads == 128, "d128");
// 192-dim K rows (24 chunks) among a producer's 128 threads: 4 runs of 16, 32 threads idle.
using D192 = KvTileRuns<64, 384, CopyTeam<128, 256, true>>;
static_assert(D192::kGroups == 4 && D192::kRun == 16 && D192::kActiveThreads == 96, "d192 producer");
// The same rows among two uniform warpgroups: 8 runs of 8, 64 idle.
using D192Uniform = KvTileRuns<64, 384, CopyTeam<256, 0, true>>;
static_assert(D192Uniform::kGroups == 8 && D192Uniform::kRun == 8 && D192Uniform::kActiveThreads == 192, "d192 uniform");
// A team that may not idle (the mma.sync kernels) copies them row by row.
using D192Rows = KvTileRuns<64, 384, CopyTeam<256, 0, false>>;
static_assert(D192Rows::kRun == 0, "d192 row by row");
extern "C" __global__ void copy_runs_checked() {}
)";
  for (const char* arch : {"sm_80", "sm_90a"}) EXPECT_NO_THROW(NvrtcCompiler::instance().compile(source, arch)) << arch;
}

TEST(NvrtcCompile, RefusesUnknownArch) {
  KernelSpec s;
  for (const char* arch : {"sm_75", "sm_9", "compute_90", "", "sm_90b"})
    EXPECT_THROW(build_binary(s, default_tile(s, "sm_90a"), arch), SpecError) << arch;
}

TEST(NvrtcCompile, KeyChangesWithEveryIdentityField) {
  KernelSpec s;
  const TileConfig t = default_tile(s, "sm_90a");
  const std::string k = binary_key_for(s, t, "sm_90a");
  EXPECT_NE(k, binary_key_for(s, t, "sm_90"));
  KernelSpec s2 = s;
  s2.causal = !s.causal;
  EXPECT_NE(k, binary_key_for(s2, t, "sm_90a"));
  TileConfig t2 = t;
  t2.stages = t.stages + 1;
  EXPECT_NE(k, binary_key_for(s, t2, "sm_90a"));
  t2 = t;
  t2.wgmma = !t.wgmma;
  t2.producer = false;
  EXPECT_NE(k, binary_key_for(s, t2, "sm_90a"));
  t2 = t;
  t2.wgmma = true;
  t2.producer = !t.producer;
  EXPECT_NE(k, binary_key_for(s, t2, "sm_90a"));
  EXPECT_EQ(k, binary_key_for(s, t, "sm_90a"));
}

} // namespace
} // namespace attnjit
