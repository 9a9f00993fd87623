// Model presets and deployments: the built-in presets, tensor-parallel sharding, the kernel specs
// a deployment needs, and the errors for bad presets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tool_runner.h"
#include "tuner/deployment.h"

namespace attnjit::tuner {
namespace {

using ::testing::HasSubstr;

KernelSpec paged_spec(KernelFamily family, DType dtype, int dqk, int dv, int page, bool causal) {
  KernelSpec s;
  s.family = family;
  s.q_dtype = s.kv_dtype = dtype;
  s.head_dim_qk = dqk;
  s.head_dim_v = dv;
  s.kv_storage = KvStorage::paged;
  s.page_size = page;
  s.causal = causal;
  return s;
}

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const DeploymentError& e) {
    return e.what();
  }
  return "";
}

const LayerType& layer(const ModelPreset& m, std::string_view name) {
  for (const auto& l : m.layer_types)
    if (l.name == name) return l;
  throw std::runtime_error("no layer type " + std::string(name));
}

TEST(Presets, BuiltInPresetsAreEmbedded) {
  EXPECT_THAT(builtin_presets(), ::testing::IsSupersetOf({"llama-3.1-8b", "mimo-v2.5"}));
  for (const auto& name : builtin_presets()) EXPECT_NO_THROW(load_preset(name)) << name;
}

TEST(Presets, MimoGeometry) {
  const ModelPreset m = load_preset("mimo-v2.5");
  EXPECT_EQ(m.name, "mimo-v2.5");
  ASSERT_EQ(m.layer_types.size(), 2u);
  const LayerType& full = layer(m, "full");
  EXPECT_EQ(full.num_q_heads, 64);
  EXPECT_EQ(full.num_kv_heads, 4);
  EXPECT_EQ(full.head_dim_qk, 192);
  EXPECT_EQ(full.head_dim_v, 128);
  EXPECT_TRUE(full.causal);
  EXPECT_EQ(full.sliding_window, 0);
  EXPECT_FALSE(full.learned_sinks);
  const LayerType& swa = layer(m, "swa");
  EXPECT_EQ(swa.num_q_heads, 64);
  EXPECT_EQ(swa.num_kv_heads, 8);
  EXPECT_EQ(swa.head_dim_qk, 192);
  EXPECT_EQ(swa.head_dim_v, 128);
  EXPECT_EQ(swa.sliding_window, 128);
  EXPECT_TRUE(swa.learned_sinks);
}

TEST(Presets, LlamaGeometry) {
  const ModelPreset m = load_preset("llama-3.1-8b");
  ASSERT_EQ(m.layer_types.size(), 1u);
  const LayerType& l = m.layer_types[0];
  EXPECT_EQ(l.num_q_heads, 32);
  EXPECT_EQ(l.num_kv_heads, 8);
  EXPECT_EQ(l.head_dim_qk, 128);
  EXPECT_EQ(l.head_dim_v, 128);
  EXPECT_TRUE(l.causal);
  EXPECT_EQ(l.num_layers, 32);
}

TEST(Presets, UnknownNameListsTheBuiltIns) {
  const std::string e = error_of([] { load_preset("mimo-v3"); });
  EXPECT_THAT(e, HasSubstr("mimo-v3"));
  EXPECT_THAT(e, HasSubstr("mimo-v2.5"));
}

TEST(Presets, LoadsAFileByPath) {
  testing::TempDir dir;
  const std::string path = dir.file("tiny.json");
  testing::write_text(path, R"({"name": "tiny", "layer_types": [
      {"name": "attn", "num_q_heads": 4, "num_kv_heads": 2, "head_dim_qk": 64, "head_dim_v": 32,
       "causal": false}]})");
  const ModelPreset m = load_preset(path);
  EXPECT_EQ(m.name, "tiny");
  EXPECT_EQ(m.origin, path);
  EXPECT_FALSE(m.layer_types.at(0).causal);
  EXPECT_THAT(error_of([&] { load_preset(dir.file("missing.json")); }), HasSubstr("missing.json"));
}

// Each bad preset is refused with a message that names the field.
TEST(Presets, BadFieldsAreNamed) {
  auto err = [](std::string_view text) { return error_of([&] { parse_preset(text, "test.json"); }); };
  const std::string good_layer =
      R"("name": "a", "num_q_heads": 8, "num_kv_heads": 2, "head_dim_qk": 64, "head_dim_v": 64, "causal": true)";
  auto with_layer = [](const std::string& fields) {
    return R"({"name": "m", "layer_types": [{)" + fields + "}]}";
  };

  EXPECT_THAT(err("{"), HasSubstr("test.json: not valid JSON"));
  EXPECT_THAT(err("[]"), HasSubstr("expected an object"));
  EXPECT_THAT(err(R"({"layer_types": []})"), HasSubstr("test.json: name: missing"));
  EXPECT_THAT(err(R"({"name": "m"})"), HasSubstr("layer_types: missing"));
  EXPECT_THAT(err(R"({"name": "m", "layer_types": []})"), HasSubstr("layer_types: expected a non-empty array"));
  EXPECT_THAT(err(R"({"name": "m", "layer_types": [{}], "extra": 1})"), HasSubstr("extra: unknown field"));
  EXPECT_THAT(err(with_layer(R"("name": "a")")), HasSubstr("layer_types[0].num_q_heads: missing"));
  EXPECT_THAT(err(with_layer(R"("name": "a", "num_q_heads": "8", "num_kv_heads": 2, "head_dim_qk": 64, "head_dim_v": 64, "causal": true)")),
              HasSubstr("layer_types[0].num_q_heads: expected an integer"));
  EXPECT_THAT(err(with_layer(R"("name": "a", "num_q_heads": 8, "num_kv_heads": 0, "head_dim_qk": 64, "head_dim_v": 64, "causal": true)")),
              HasSubstr("layer_types[0].num_kv_heads: expected an integer in [1,"));
  EXPECT_THAT(err(with_layer(R"("name": "a", "num_q_heads": 8, "num_kv_heads": 3, "head_dim_qk": 64, "head_dim_v": 64, "causal": true)")),
              HasSubstr("layer_types[0].num_kv_heads: 3 does not divide num_q_heads (8)"));
  EXPECT_THAT(err(with_layer(R"("name": "a", "num_q_heads": 8, "num_kv_heads": 2, "head_dim_qk": 64.5, "head_dim_v": 64, "causal": true)")),
              HasSubstr("layer_types[0].head_dim_qk"));
  EXPECT_THAT(err(with_layer(R"("name": "a", "num_q_heads": 8, "num_kv_heads": 2, "head_dim_qk": 64, "head_dim_v": 64)")),
              HasSubstr("layer_types[0].causal: missing"));
  EXPECT_THAT(err(with_layer(good_layer + R"(, "sliding_windw": 128)")),
              HasSubstr("layer_types[0].sliding_windw: unknown field"));
  EXPECT_THAT(err(with_layer(good_layer + R"(, "learned_sinks": 1)")),
              HasSubstr("layer_types[0].learned_sinks: expected true or false"));
  EXPECT_THAT(err(R"({"name": "m", "layer_types": [{)" + good_layer + "}, {" + good_layer + "}]}"),
              HasSubstr("layer_types[1].name: 'a' is used by another layer type"));
}

TEST(Sharding, MimoFullAttentionAtTp8ReplicatesItsKvHeads) {
  const RankHeads h = shard_heads(64, 4, 8);
  EXPECT_EQ(h.num_q_heads, 8);
  EXPECT_EQ(h.num_kv_heads, 1);
  EXPECT_TRUE(h.kv_replicated);
}

TEST(Sharding, KvHeadsSplitEvenlyWhenThereAreEnough) {
  const RankHeads h = shard_heads(64, 8, 8);
  EXPECT_EQ(h.num_q_heads, 8);
  EXPECT_EQ(h.num_kv_heads, 1);
  EXPECT_FALSE(h.kv_replicated);
  const RankHeads h2 = shard_heads(32, 8, 2);
  EXPECT_EQ(h2.num_q_heads, 16);
  EXPECT_EQ(h2.num_kv_heads, 4);
  EXPECT_FALSE(h2.kv_replicated);
  const RankHeads h1 = shard_heads(64, 4, 1);
  EXPECT_EQ(h1.num_q_heads, 64);
  EXPECT_EQ(h1.num_kv_heads, 4);
}

TEST(Sharding, Tp16IsFineFor64QHeads) {
  const RankHeads full = shard_heads(64, 4, 16);
  EXPECT_EQ(full.num_q_heads, 4);
  EXPECT_EQ(full.num_kv_heads, 1);
  EXPECT_TRUE(full.kv_replicated);
  const RankHeads swa = shard_heads(64, 8, 16);
  EXPECT_EQ(swa.num_q_heads, 4);
  EXPECT_EQ(swa.num_kv_heads, 1);
  EXPECT_TRUE(swa.kv_replicated);
  EXPECT_NO_THROW(plan_deployment(load_preset("mimo-v2.5"), {.tensor_parallel = 16}));
}

TEST(Sharding, Tp3IsRefusedNamingNumQHeads) {
  const std::string e = error_of([] { shard_heads(64, 4, 3); });
  EXPECT_THAT(e, HasSubstr("num_q_heads (64)"));
  EXPECT_THAT(e, HasSubstr("tensor-parallel size 3"));
  const std::string d = error_of([] { plan_deployment(load_preset("mimo-v2.5"), {.tensor_parallel = 3}); });
  EXPECT_THAT(d, HasSubstr("layer type 'full'"));
  EXPECT_THAT(d, HasSubstr("num_q_heads"));
}

TEST(Sharding, KvHeadsThatDoNotSplitAreRefused) {
  // More kv heads than ranks, not a multiple: 12 kv heads over 8 ranks.
  EXPECT_THAT(error_of([] { shard_heads(96, 12, 8); }), HasSubstr("num_kv_heads (12) is not divisible"));
  // Fewer kv heads than ranks, not a divisor: 4 kv heads replicated over 6 ranks.
  EXPECT_THAT(error_of([] { shard_heads(48, 4, 6); }), HasSubstr("num_kv_heads (4) does not divide"));
  EXPECT_THAT(error_of([] { shard_heads(64, 4, 0); }), HasSubstr("tensor_parallel"));
}

TEST(Deployment, MimoNeedsDenseKernelsForFullLayersAndSkipsSlidingWindowLayers) {
  const Deployment d = plan_deployment(load_preset("mimo-v2.5"), {.tensor_parallel = 8});
  ASSERT_EQ(d.needs.size(), 4u); // 2 layer types x (prefill, decode)
  const KernelNeed& prefill = d.needs[0];
  const KernelNeed& decode = d.needs[1];
  EXPECT_EQ(prefill.layer_type, "full");
  EXPECT_EQ(prefill.phase, KernelFamily::prefill);
  EXPECT_EQ(decode.phase, KernelFamily::decode);
  ASSERT_FALSE(prefill.skipped());
  ASSERT_FALSE(decode.skipped());
  EXPECT_EQ(prefill.spec->canonical(), paged_spec(KernelFamily::prefill, DType::bf16, 192, 128, 16, true).canonical());
  EXPECT_EQ(decode.spec->canonical(), paged_spec(KernelFamily::decode, DType::bf16, 192, 128, 16, true).canonical());
  EXPECT_EQ(prefill.heads.num_q_heads, 8);
  EXPECT_EQ(prefill.heads.num_kv_heads, 1);
  for (const KernelNeed& n : {d.needs[2], d.needs[3]}) {
    EXPECT_EQ(n.layer_type, "swa");
    EXPECT_TRUE(n.skipped()) << "a sliding-window layer must never be compiled as dense attention";
    EXPECT_EQ(n.skip_reason, "sliding window and learned sinks are not supported yet");
  }
}

TEST(Deployment, OptionsReachTheSpecs) {
  const Deployment d =
      plan_deployment(load_preset("llama-3.1-8b"), {.tensor_parallel = 2, .dtype = DType::f16, .page_size = 32});
  ASSERT_EQ(d.needs.size(), 2u);
  EXPECT_EQ(d.needs[0].spec->canonical(), paged_spec(KernelFamily::prefill, DType::f16, 128, 128, 32, true).canonical());
  EXPECT_EQ(d.needs[1].spec->canonical(), paged_spec(KernelFamily::decode, DType::f16, 128, 128, 32, true).canonical());
  EXPECT_EQ(d.needs[0].heads.num_q_heads, 16);
  EXPECT_EQ(d.needs[0].heads.num_kv_heads, 4);
  EXPECT_THAT(error_of([] { plan_deployment(load_preset("llama-3.1-8b"), {.page_size = 24}); }),
              HasSubstr("page_size"));
  EXPECT_THAT(error_of([] { parse_dtype("fp8"); }), HasSubstr("allowed: bf16 or f16"));
}

TEST(Deployment, GeometryOutsideTheKernelContractIsRefusedNamingTheField) {
  const ModelPreset m = parse_preset(R"({"name": "odd", "layer_types": [{"name": "a", "num_q_heads": 8,
      "num_kv_heads": 8, "head_dim_qk": 72, "head_dim_v": 64, "causal": true}]})", "odd.json");
  const std::string e = error_of([&] { plan_deployment(m, {}); });
  EXPECT_THAT(e, HasSubstr("layer type 'a'"));
  EXPECT_THAT(e, HasSubstr("head_dim_qk: got 72"));
}

TEST(Deployment, EachUnsupportedFeatureIsNamed) {
  LayerType l;
  EXPECT_EQ(unsupported_features(l), "");
  l.sliding_window = 4096;
  EXPECT_EQ(unsupported_features(l), "sliding window is not supported yet");
  l.sliding_window = 0;
  l.learned_sinks = true;
  EXPECT_EQ(unsupported_features(l), "learned sinks are not supported yet");
}

} // namespace
} // namespace attnjit::tuner
