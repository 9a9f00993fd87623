// Shape buckets (how a runtime call maps to the bucket it was tuned for), tuning keys, and the
// runtime's lookup of tuned winners.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cache/store.h"
#include "runtime/tuned_tiles.h"
#include "tool_runner.h"

namespace attnjit {
namespace {

TEST(Buckets, EdgesArePowersOfFourFromTheFirstEdge) {
  EXPECT_EQ(bucket_edge(1, 1, 1024), 1);
  EXPECT_EQ(bucket_edge(2, 1, 1024), 4);
  EXPECT_EQ(bucket_edge(4, 1, 1024), 4);
  EXPECT_EQ(bucket_edge(5, 1, 1024), 16);
  EXPECT_EQ(bucket_edge(1000, 1, 1024), 1024);
  EXPECT_EQ(bucket_edge(5000, 1, 1024), 1024) << "above the last edge: the last bucket";
  EXPECT_EQ(bucket_edge(1, 256, 1 << 20), 256);
  EXPECT_EQ(bucket_edge(257, 256, 1 << 20), 1024);
  EXPECT_EQ(bucket_edge(4096, 256, 1 << 20), 4096);
  EXPECT_EQ(bucket_edge(4097, 256, 1 << 20), 16384);
}

TEST(Buckets, DecodeMapsBatchKvAndPackedRows) {
  // The header's example: 20 sequences of at most 3000 keys, 8 q heads per kv head.
  EXPECT_EQ(decode_bucket(20, 1, 3000, 8).name(), "decode:r8:b64:kv4096");
  EXPECT_EQ(decode_bucket(1, 1, 1, 1).name(), "decode:r1:b1:kv256");
  EXPECT_EQ(decode_bucket(256, 1, 32768, 8).name(), "decode:r8:b256:kv65536");
  EXPECT_EQ(decode_bucket(257, 1, 32769, 8).name(), "decode:r8:b1024:kv65536");
  EXPECT_EQ(decode_bucket(100000, 1, 10'000'000, 8).name(), "decode:r8:b1024:kv1048576");
  // Rows: q length x group, a power of two, at most 256.
  EXPECT_EQ(decode_bucket(1, 2, 100, 8).rows, 16);
  EXPECT_EQ(decode_bucket(1, 1, 100, 6).rows, 8);
  EXPECT_EQ(decode_bucket(1, 64, 100, 16).rows, 256);
  EXPECT_EQ(shape_bucket(KernelFamily::decode, 3, 1, 900, 4), decode_bucket(3, 1, 900, 4));
}

TEST(Buckets, PrefillMapsQueryAndKvLengthsAndKvIsNeverBelowQ) {
  EXPECT_EQ(prefill_bucket(1, 1).name(), "prefill:q64:kv256");
  EXPECT_EQ(prefill_bucket(64, 64).name(), "prefill:q64:kv256");
  EXPECT_EQ(prefill_bucket(65, 4000).name(), "prefill:q256:kv4096");
  EXPECT_EQ(prefill_bucket(4096, 4096).name(), "prefill:q4096:kv4096");
  EXPECT_EQ(prefill_bucket(4097, 4097).name(), "prefill:q16384:kv16384");
  EXPECT_EQ(prefill_bucket(2000, 100).name(), "prefill:q4096:kv4096") << "KV is at least the q bucket";
  EXPECT_EQ(shape_bucket(KernelFamily::prefill, 7, 300, 9000, 8), prefill_bucket(300, 9000));
}

TEST(Buckets, NamesParseBackAndOnlyCanonicalNamesParse) {
  for (const ShapeBucket& b : {decode_bucket(20, 1, 3000, 8), decode_bucket(1, 1, 1 << 20, 1),
                               prefill_bucket(65, 4000), prefill_bucket(1 << 18, 1 << 20)}) {
    const auto back = parse_bucket(b.name());
    ASSERT_TRUE(back.has_value()) << b.name();
    EXPECT_EQ(*back, b);
  }
  for (const char* bad : {"", "decode", "decode:r8:b64", "decode:r8:b63:kv4096", "decode:r3:b64:kv4096",
                          "decode:r8:b64:kv4096x", "prefill:q100:kv4096", "prefill:q1024:kv256", "train:q64:kv256",
                          "decode:r8:b-4:kv4096"})
    EXPECT_FALSE(parse_bucket(bad).has_value()) << bad;
}

KernelSpec spec(KernelFamily f) {
  KernelSpec s;
  s.family = f;
  s.head_dim_qk = 192;
  s.head_dim_v = 128;
  s.causal = true;
  return s;
}

const TuningDevice kH100{"NVIDIA H100 80GB HBM3", 132, "sm_90a"};

TEST(TuningKey, StableAndSensitiveToEachPart) {
  const KernelSpec s = spec(KernelFamily::decode);
  const ShapeBucket b = decode_bucket(16, 1, 4096, 8);
  const std::string key = tuning_key(s, kH100, b);
  EXPECT_EQ(key.size(), 16u);
  EXPECT_EQ(key, tuning_key(s, kH100, b));
  EXPECT_EQ(key, tuning_key(s, kH100, decode_bucket(13, 1, 4000, 8))) << "same bucket, same key";
  // The recipe of the design: spec (no tile), device name, SM count, arch, bucket.
  EXPECT_EQ(key, stable_hash_hex("attnjit-tuning-1\n" + s.canonical() + "\nNVIDIA H100 80GB HBM3\n132\nsm_90a\n" + b.name()));
  KernelSpec other = s;
  other.page_size = 32;
  EXPECT_NE(key, tuning_key(other, kH100, b));
  EXPECT_NE(key, tuning_key(s, {"NVIDIA H100 PCIe", 132, "sm_90a"}, b));
  EXPECT_NE(key, tuning_key(s, {kH100.name, 114, "sm_90a"}, b));
  EXPECT_NE(key, tuning_key(s, {kH100.name, 132, "sm_90"}, b));
  EXPECT_NE(key, tuning_key(s, kH100, decode_bucket(17, 1, 4096, 8)));
  EXPECT_NE(key, tuning_key(s, kH100, decode_bucket(16, 1, 4096, 16)));
}

void put_winner(cache::Store& store, const KernelSpec& s, const ShapeBucket& b, const std::string& tile, double us) {
  cache::WinnerRecord w;
  w.tuning_key = tuning_key(s, kH100, b);
  w.tile = tile;
  w.spec = s.canonical();
  w.median_us = us;
  w.device_name = kH100.name;
  w.arch = kH100.arch;
  w.sm_count = kH100.sm_count;
  w.bucket = b.name();
  store.put_winner(w);
}

TEST(TunedTiles, PlanLookupVotesOverTheBucketsItCanSee) {
  testing::TempDir dir;
  const std::string path = dir.file("tuned.sqlite");
  const KernelSpec d = spec(KernelFamily::decode);
  const std::string a = "bm16.bn64.wm1.wn4.st3.sp128.oc2", b = "bm16.bn128.wm1.wn8.st2.sp32.oc1";
  {
    auto store = cache::Store::open(path);
    put_winner(*store, d, decode_bucket(64, 1, 1024, 8), a, 10);
    put_winner(*store, d, decode_bucket(64, 1, 4096, 8), b, 20);
    put_winner(*store, d, decode_bucket(64, 1, 16384, 8), a, 40);
    put_winner(*store, d, decode_bucket(1, 1, 16384, 8), b, 5);     // another batch bucket
    put_winner(*store, d, decode_bucket(64, 1, 65536, 16), b, 5);   // another group
    put_winner(*store, d, decode_bucket(64, 1, 1 << 20, 8), "bm16.bn64.wm1.wn4.st9.sp32.oc2", 1); // invalid tile
  }
  auto layered = cache::LayeredStore::open(path, "");
  std::vector<std::string> warnings;
  auto warn = [&](std::string_view m) { warnings.emplace_back(m); };
  // 64 q / 8 kv heads, batch up to 50 (bucket b64): a wins two of the three valid buckets.
  auto t = tuned_tile_for_plan(*layered, d, kH100, 64, 8, 50, 50, warn);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->tile.canonical(), a);
  EXPECT_EQ(t->bucket, "decode:r8:b64:kv16384") << "the largest bucket it wins";
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], ::testing::HasSubstr("st9"));
  // The exact-bucket lookup.
  auto exact = tuned_tile_for_bucket(*layered, d, kH100, decode_bucket(50, 1, 3000, 8));
  ASSERT_TRUE(exact.has_value());
  EXPECT_EQ(exact->tile.canonical(), b);
  EXPECT_DOUBLE_EQ(exact->median_us, 20);
  // Nothing tuned for this batch bucket, spec or device: the caller uses default_tile.
  EXPECT_FALSE(tuned_tile_for_plan(*layered, d, kH100, 64, 8, 300, 300).has_value());
  EXPECT_FALSE(tuned_tile_for_plan(*layered, spec(KernelFamily::prefill), kH100, 64, 8, 50, 4096).has_value());
  EXPECT_FALSE(tuned_tile_for_plan(*layered, d, {"NVIDIA A100-SXM4-80GB", 108, "sm_80"}, 64, 8, 50, 50).has_value());
}

TEST(TunedTiles, PrefillPlanLooksAtEveryQueryBucketUpToItsTokenBound) {
  testing::TempDir dir;
  const std::string path = dir.file("tuned.sqlite");
  const KernelSpec p = spec(KernelFamily::prefill);
  {
    auto store = cache::Store::open(path);
    put_winner(*store, p, prefill_bucket(16384, 16384), "bm128.bn64.wm8.wn1.st2.sp1.oc1", 900);
    put_winner(*store, p, prefill_bucket(1024, 1024), "bm128.bn32.wm8.wn1.st2.sp1.oc2", 30);
  }
  auto layered = cache::LayeredStore::open(path, "");
  // A plan for at most 2048 tokens sees q buckets up to 4096: only the q1024 winner.
  auto small = tuned_tile_for_plan(*layered, p, kH100, 8, 1, 4, 2048);
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->tile.canonical(), "bm128.bn32.wm8.wn1.st2.sp1.oc2");
  // One tile each: the tie goes to the bucket with the larger KV.
  auto big = tuned_tile_for_plan(*layered, p, kH100, 8, 1, 4, 65536);
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->tile.canonical(), "bm128.bn64.wm8.wn1.st2.sp1.oc1");
}

} // namespace
} // namespace attnjit
