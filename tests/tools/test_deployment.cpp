// Model presets and deployments: the built-in presets, tensor-parallel sharding, the kernel specs
// a deployment needs, and the errors for bad presets.
#include <map>

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
  EXPECT_THAT(builtin_presets(), ::testing::IsSupersetOf({"gpt-oss-120b", "llama-3.1-70b", "llama-3.1-8b",
                                                          "mimo-v2-flash", "mimo-v2.5", "qwen3-32b"}));
  for (const auto& name : builtin_presets()) EXPECT_NO_THROW(load_preset(name)) << name;
}

// Each preset against its model's published config.json (heads, kv heads, head dims, layer counts,
// sliding-window pattern, sinks).
struct Expected {
  std::string name;
  int q, kv, dqk, dv, window;
  bool sinks;
  int layers;
};
void expect_layer(const ModelPreset& m, const Expected& e) {
  const LayerType& l = layer(m, e.name);
  EXPECT_EQ(l.num_q_heads, e.q) << m.name << " " << e.name;
  EXPECT_EQ(l.num_kv_heads, e.kv) << m.name << " " << e.name;
  EXPECT_EQ(l.head_dim_qk, e.dqk) << m.name << " " << e.name;
  EXPECT_EQ(l.head_dim_v, e.dv) << m.name << " " << e.name;
  EXPECT_EQ(l.sliding_window, e.window) << m.name << " " << e.name;
  EXPECT_EQ(l.learned_sinks, e.sinks) << m.name << " " << e.name;
  EXPECT_EQ(l.num_layers, e.layers) << m.name << " " << e.name;
  EXPECT_TRUE(l.causal);
}

TEST(Presets, GeometryMatchesThePublishedConfigs) {
  const std::map<std::string, std::vector<Expected>> expected = {
      {"mimo-v2.5", {{"full", 64, 4, 192, 128, 0, false, 9}, {"swa", 64, 8, 192, 128, 128, true, 39}}},
      {"mimo-v2-flash", {{"full", 64, 4, 192, 128, 0, false, 9}, {"swa", 64, 8, 192, 128, 128, true, 39}}},
      {"llama-3.1-8b", {{"full", 32, 8, 128, 128, 0, false, 32}}},
      {"llama-3.1-70b", {{"full", 64, 8, 128, 128, 0, false, 80}}},
      {"qwen3-32b", {{"full", 64, 8, 128, 128, 0, false, 64}}},
      {"gpt-oss-120b", {{"swa", 64, 8, 64, 64, 128, true, 18}, {"full", 64, 8, 64, 64, 0, true, 18}}},
  };
  for (const auto& [name, layers] : expected) {
    const ModelPreset m = load_preset(name);
    EXPECT_EQ(m.name, name);
    EXPECT_EQ(m.layer_types.size(), layers.size()) << name;
    for (const Expected& e : layers) expect_layer(m, e);
  }
}

TEST(Presets, EveryPresetShardsAtTheTensorParallelSizesItIsServedWith) {
  for (const auto& [name, tps] : std::map<std::string, std::vector<int>>{
           {"mimo-v2.5", {1, 2, 4, 8, 16}}, {"mimo-v2-flash", {1, 2, 4, 8}}, {"llama-3.1-8b", {1, 2, 4, 8}},
           {"llama-3.1-70b", {1, 2, 4, 8}}, {"qwen3-32b", {1, 2, 4, 8}}, {"gpt-oss-120b", {1, 2, 4, 8}}}) {
    for (int tp : tps) {
      const Deployment d = plan_deployment(load_preset(name), {.tensor_parallel = tp});
      EXPECT_EQ(d.needs.size(), 2 * d.model.layer_types.size()) << name << " tp" << tp;
    }
  }
  // gpt-oss: learned sinks in every layer, a window of 128 in half of them.
  const Deployment g = plan_deployment(load_preset("gpt-oss-120b"), {.tensor_parallel = 8});
  ASSERT_EQ(g.needs.size(), 4u);
  for (const KernelNeed& n : g.needs) {
    ASSERT_FALSE(n.skipped()) << n.layer_type << ": " << n.skip_reason;
    EXPECT_TRUE(n.spec->learned_sinks);
    EXPECT_EQ(n.spec->sliding_window, n.layer_type == "swa");
    EXPECT_EQ(n.spec->head_dim_qk, 64);
    EXPECT_EQ(n.heads.num_q_heads, 8);
    EXPECT_EQ(n.heads.num_kv_heads, 1);
  }
  // Llama 70B at TP 16: 8 kv heads over 16 ranks, each replicated twice.
  const RankHeads h = shard_heads(64, 8, 16);
  EXPECT_EQ(h.num_kv_heads, 1);
  EXPECT_TRUE(h.kv_replicated);
  EXPECT_THAT(error_of([] { plan_deployment(load_preset("qwen3-32b"), {.tensor_parallel = 6}); }),
              HasSubstr("num_q_heads (64) is not divisible by the tensor-parallel size 6"));
}

TEST(Presets, MimoLayerTypes) {
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

TEST(Deployment, MimoNeedsDenseKernelsForFullLayersAndWindowedKernelsWithSinksForSwaLayers) {
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
  EXPECT_EQ(prefill.sliding_window, 0);
  for (const KernelNeed& n : {d.needs[2], d.needs[3]}) {
    EXPECT_EQ(n.layer_type, "swa");
    ASSERT_FALSE(n.skipped()) << n.skip_reason;
    // Never served as dense attention: the spec carries the window and the sinks.
    KernelSpec want = paged_spec(n.phase, DType::bf16, 192, 128, 16, true);
    want.sliding_window = true;
    want.learned_sinks = true;
    EXPECT_EQ(*n.spec, want);
    EXPECT_EQ(n.sliding_window, 128);
    EXPECT_EQ(n.heads.num_q_heads, 8);
    EXPECT_EQ(n.heads.num_kv_heads, 1);
    EXPECT_FALSE(n.heads.kv_replicated);
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
  EXPECT_THAT(error_of([] { parse_kv_dtype("int4"); }), HasSubstr("kv_dtype: got 'int4'; allowed: bf16, f16, e4m3 or e5m2"));
  EXPECT_EQ(parse_kv_dtype("f16"), DType::f16);
  EXPECT_EQ(parse_kv_dtype("e4m3"), DType::fp8_e4m3);
  const Deployment fp8 = plan_deployment(load_preset("llama-3.1-8b"), {.kv_dtype = DType::fp8_e5m2});
  EXPECT_EQ(fp8.needs[1].spec->kv_dtype, DType::fp8_e5m2);
  EXPECT_EQ(fp8.needs[1].spec->q_dtype, DType::bf16);
  // A KV dtype other than the q dtype must be fp8: the spec's validation names the field.
  EXPECT_THAT(error_of([] {
                plan_deployment(load_preset("llama-3.1-8b"), {.dtype = DType::bf16, .kv_dtype = DType::f16});
              }),
              HasSubstr("kv_dtype"));
}

TEST(Deployment, GeometryOutsideTheKernelContractIsRefusedNamingTheField) {
  const ModelPreset m = parse_preset(R"({"name": "odd", "layer_types": [{"name": "a", "num_q_heads": 8,
      "num_kv_heads": 8, "head_dim_qk": 72, "head_dim_v": 64, "causal": true}]})", "odd.json");
  const std::string e = error_of([&] { plan_deployment(m, {}); });
  EXPECT_THAT(e, HasSubstr("layer type 'a'"));
  EXPECT_THAT(e, HasSubstr("head_dim_qk: got 72"));
}

TEST(Deployment, PatternsTheKernelsRefuseAreSkippedNeverServedDense) {
  // Learned sinks in a prefill kernel with head dim 256 validate today; a pattern that does not
  // (here: a window on a layer whose geometry is fine) would be skipped with the kernels' reason.
  const ModelPreset m = parse_preset(R"({"name": "w", "layer_types": [{"name": "a", "num_q_heads": 8,
      "num_kv_heads": 8, "head_dim_qk": 64, "head_dim_v": 64, "causal": false, "sliding_window": 32,
      "learned_sinks": true}]})", "w.json");
  const Deployment d = plan_deployment(m, {});
  ASSERT_EQ(d.needs.size(), 2u);
  for (const KernelNeed& n : d.needs) {
    if (n.skipped()) {
      EXPECT_THAT(n.skip_reason, HasSubstr("not supported by the kernels"));
    } else {
      EXPECT_TRUE(n.spec->sliding_window);
      EXPECT_TRUE(n.spec->learned_sinks);
      EXPECT_FALSE(n.spec->causal);
      EXPECT_EQ(n.sliding_window, 32);
    }
  }
}

} // namespace
} // namespace attnjit::tuner
