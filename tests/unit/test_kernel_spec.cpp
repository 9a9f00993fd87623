// KernelSpec validation, canonical strings and the default tile heuristic.
#include <gtest/gtest.h>

#include "codegen/errors.h"
#include "codegen/kernel_spec.h"

namespace attnjit {
namespace {

KernelSpec base() { return KernelSpec{}; }

std::string error_of(const KernelSpec& s) {
  try {
    validate(s);
  } catch (const SpecError& e) {
    return e.what();
  }
  return "";
}

TEST(KernelSpec, AcceptsEveryHeadDimPairAndPageSize) {
  for (int dqk = 16; dqk <= 256; dqk += 16)
    for (int dv = 16; dv <= 256; dv += 16) {
      KernelSpec s = base();
      s.head_dim_qk = dqk;
      s.head_dim_v = dv;
      EXPECT_NO_THROW(validate(s)) << dqk << "/" << dv;
    }
  for (int page = 1; page <= 256; page *= 2) {
    KernelSpec s = base();
    s.page_size = page;
    EXPECT_NO_THROW(validate(s)) << page;
  }
}

TEST(KernelSpec, RefusesBadHeadDimsNamingTheField) {
  for (int d : {0, 8, 24, 100, 272, -16}) {
    KernelSpec s = base();
    s.head_dim_qk = d;
    const std::string e = error_of(s);
    EXPECT_NE(e.find("head_dim_qk"), std::string::npos) << e;
    EXPECT_NE(e.find("multiple of 16 in [16, 256]"), std::string::npos) << e;
    s = base();
    s.head_dim_v = d;
    EXPECT_NE(error_of(s).find("head_dim_v"), std::string::npos);
  }
}

TEST(KernelSpec, RefusesBadPageSizes) {
  for (int page : {0, 3, 12, 512, -1}) {
    KernelSpec s = base();
    s.page_size = page;
    const std::string e = error_of(s);
    EXPECT_NE(e.find("page_size"), std::string::npos) << e;
    EXPECT_NE(e.find("power of two in [1, 256]"), std::string::npos) << e;
  }
  KernelSpec s = base();
  s.kv_storage = KvStorage::contiguous;
  s.page_size = 16;
  EXPECT_NE(error_of(s).find("contiguous"), std::string::npos);
}

TEST(KernelSpec, RefusesMixedDtypes) {
  KernelSpec s = base();
  s.q_dtype = DType::f16;
  s.kv_dtype = DType::bf16;
  EXPECT_NE(error_of(s).find("kv_dtype"), std::string::npos);
}

TEST(KernelSpec, CanonicalRoundTripsAndSeparatesEveryAxis) {
  std::set<std::string> seen;
  for (auto fam : {KernelFamily::prefill, KernelFamily::decode})
    for (auto dt : {DType::f16, DType::bf16})
      for (int page : {1, 16, 256})
        for (bool causal : {false, true}) {
          KernelSpec s = base();
          s.family = fam;
          s.q_dtype = s.kv_dtype = dt;
          s.page_size = page;
          s.causal = causal;
          EXPECT_EQ(parse_spec(s.canonical()), s);
          EXPECT_TRUE(seen.insert(s.canonical()).second) << s.canonical();
        }
  EXPECT_THROW(parse_spec("attn;fam=sideways;q=bf16"), SpecError);
  EXPECT_THROW(parse_spec("not a spec"), SpecError);
}

TEST(KernelSpec, StableHashIsStable) {
  // A fixed value: the hash keys the on-disk cache, so it must not change between builds.
  EXPECT_EQ(stable_hash_hex("attnjit"), stable_hash_hex("attnjit"));
  EXPECT_NE(stable_hash_hex("attnjit"), stable_hash_hex("attnjiT"));
  EXPECT_EQ(stable_hash_hex("").size(), 16u);
}

TEST(TileConfig, DefaultIsValidForEverySpec) {
  for (auto fam : {KernelFamily::prefill, KernelFamily::decode})
    for (int dqk = 16; dqk <= 256; dqk += 16)
      for (int dv = 16; dv <= 256; dv += 16) {
        KernelSpec s = base();
        s.family = fam;
        s.head_dim_qk = dqk;
        s.head_dim_v = dv;
        for (const char* arch : {"sm_80", "sm_86", "sm_90a"}) {
          const TileConfig t = default_tile(s, arch);
          EXPECT_NO_THROW(validate(s, t)) << s.canonical() << " " << t.canonical();
          EXPECT_LE(shared_memory_bytes(s, t) * t.min_ctas_per_sm, max_shared_memory_bytes(arch) + 1024)
              << s.canonical() << " " << arch;
          EXPECT_EQ(parse_tile(t.canonical()), t);
        }
      }
}

TEST(TileConfig, RefusesInconsistentTiles) {
  KernelSpec s = base();
  TileConfig t = default_tile(s, "sm_90a");
  auto err = [&](TileConfig x) {
    try {
      validate(s, x);
    } catch (const SpecError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  TileConfig x = t;
  x.warps_m = 3;
  EXPECT_NE(err(x).find("tile.warps_m"), std::string::npos);
  x = t;
  x.block_m = 48;
  EXPECT_NE(err(x).find("tile.block_m"), std::string::npos);
  x = t;
  x.stages = 1;
  EXPECT_NE(err(x).find("tile.stages"), std::string::npos);
  x = {.block_m = 64, .block_n = 64, .warps_m = 4, .warps_n = 2, .stages = 2, .max_splits = 1, .min_ctas_per_sm = 1};
  EXPECT_NE(err(x).find("prefill"), std::string::npos);
  x.warps_m = 8;
  x.block_m = 128;
  EXPECT_NE(err(x).find("at most 8 warps"), std::string::npos);
  x = t;
  x.block_n = 256;
  x.stages = 5;
  EXPECT_NE(err(x).find("shared memory"), std::string::npos);
  // Launch bounds leave each thread at least 64 registers: 8 warps allow 4 CTAs per SM.
  x = t;
  x.warps_m = 8;
  x.block_m = 128;
  ASSERT_EQ(x.threads(), 256);
  x.min_ctas_per_sm = 5;
  EXPECT_NE(err(x).find("tile.min_ctas_per_sm"), std::string::npos);
  EXPECT_NE(err(x).find("1 to 4 for 256 threads"), std::string::npos);
}

TEST(TileConfig, OccupancyBoundScalesWithThreads) {
  KernelSpec s = base();
  s.family = KernelFamily::decode;
  TileConfig t = parse_tile("bm16.bn32.wm1.wn2.st2.sp64.oc8"); // 64 threads: up to 16 CTAs per SM
  EXPECT_NO_THROW(validate(s, t));
  t.min_ctas_per_sm = 16;
  EXPECT_NO_THROW(validate(s, t));
  t.min_ctas_per_sm = 17;
  EXPECT_THROW(validate(s, t), SpecError);
  t.min_ctas_per_sm = 0;
  EXPECT_THROW(validate(s, t), SpecError);
}

} // namespace
} // namespace attnjit
