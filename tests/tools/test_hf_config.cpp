// Reading a model's attention geometry from a Hugging Face config.json (written by the test):
// MiMo's hybrid layer pattern with its own sliding-window geometry and separate v head dim,
// Llama's implicit head dim, gpt-oss's layer_types with sinks, and the errors for missing fields.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tool_runner.h"
#include "tuner/hf_config.h"

namespace attnjit::tuner {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

// The attention fields of MiMo-V2-Flash's config.json (the rest of the file is irrelevant here).
json mimo_config() {
  json pattern = json::array();
  for (int i = 0; i < 48; ++i) pattern.push_back(i == 0 || (i >= 5 && (i - 5) % 6 == 0) ? 0 : 1);
  return {{"architectures", {"MiMoV2FlashForCausalLM"}},
          {"model_type", "mimo_v2_flash"},
          {"hidden_size", 4096},
          {"num_hidden_layers", 48},
          {"num_attention_heads", 64},
          {"num_key_value_heads", 4},
          {"head_dim", 192},
          {"v_head_dim", 128},
          {"swa_num_attention_heads", 64},
          {"swa_num_key_value_heads", 8},
          {"swa_head_dim", 192},
          {"swa_v_head_dim", 128},
          {"sliding_window", 128},
          {"hybrid_layer_pattern", pattern},
          {"add_swa_attention_sink_bias", true},
          {"add_full_attention_sink_bias", false},
          {"partial_rotary_factor", 0.334},
          {"vocab_size", 152576}};
}

json llama_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 4096},
          {"intermediate_size", 14336},
          {"num_hidden_layers", 32},
          {"num_attention_heads", 32},
          {"num_key_value_heads", 8},
          {"max_position_embeddings", 131072},
          {"rope_theta", 500000.0},
          {"torch_dtype", "bfloat16"}};
}

ModelPreset parse(const json& j) { return preset_from_hf_config(j.dump(), "config.json"); }

std::string error_of(const json& j) {
  try {
    parse(j);
  } catch (const DeploymentError& e) {
    return e.what();
  }
  return "";
}

TEST(HfConfig, MimoHybridPatternSeparateVHeadDimAndSinks) {
  const ModelPreset m = parse(mimo_config());
  ASSERT_EQ(m.layer_types.size(), 2u);
  const LayerType& full = m.layer_types[0];
  const LayerType& swa = m.layer_types[1];
  EXPECT_EQ(full.name, "full");
  EXPECT_EQ(full.num_layers, 9);
  EXPECT_EQ(full.num_q_heads, 64);
  EXPECT_EQ(full.num_kv_heads, 4);
  EXPECT_EQ(full.head_dim_qk, 192);
  EXPECT_EQ(full.head_dim_v, 128);
  EXPECT_EQ(full.sliding_window, 0);
  EXPECT_FALSE(full.learned_sinks);
  EXPECT_EQ(swa.name, "swa");
  EXPECT_EQ(swa.num_layers, 39);
  EXPECT_EQ(swa.num_kv_heads, 8);
  EXPECT_EQ(swa.head_dim_qk, 192);
  EXPECT_EQ(swa.head_dim_v, 128);
  EXPECT_EQ(swa.sliding_window, 128);
  EXPECT_TRUE(swa.learned_sinks);
  EXPECT_TRUE(full.causal && swa.causal);
  EXPECT_EQ(m.name, "mimo_v2_flash");

  // It is the mimo-v2-flash preset's geometry.
  const ModelPreset preset = load_preset("mimo-v2-flash");
  ASSERT_EQ(preset.layer_types.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const LayerType &a = m.layer_types[i], &b = preset.layer_types[i];
    EXPECT_EQ(std::tie(a.name, a.num_q_heads, a.num_kv_heads, a.head_dim_qk, a.head_dim_v, a.sliding_window,
                       a.learned_sinks, a.num_layers),
              std::tie(b.name, b.num_q_heads, b.num_kv_heads, b.head_dim_qk, b.head_dim_v, b.sliding_window,
                       b.learned_sinks, b.num_layers));
  }

  // sliding_window_size wins over sliding_window; swa_* fields default to the full layers'.
  json j = mimo_config();
  j["sliding_window_size"] = 256;
  j.erase("swa_v_head_dim");
  j.erase("swa_head_dim");
  j.erase("swa_num_attention_heads");
  const ModelPreset m2 = parse(j);
  EXPECT_EQ(m2.layer_types[1].sliding_window, 256);
  EXPECT_EQ(m2.layer_types[1].head_dim_qk, 192);
  EXPECT_EQ(m2.layer_types[1].head_dim_v, 128);
  EXPECT_EQ(m2.layer_types[1].num_q_heads, 64);
}

TEST(HfConfig, LlamaHeadDimFromHiddenSize) {
  const ModelPreset m = parse(llama_config());
  ASSERT_EQ(m.layer_types.size(), 1u);
  const LayerType& l = m.layer_types[0];
  EXPECT_EQ(l.name, "full");
  EXPECT_EQ(l.num_layers, 32);
  EXPECT_EQ(l.num_q_heads, 32);
  EXPECT_EQ(l.num_kv_heads, 8);
  EXPECT_EQ(l.head_dim_qk, 128);
  EXPECT_EQ(l.head_dim_v, 128);
  EXPECT_EQ(l.sliding_window, 0);
  EXPECT_FALSE(l.learned_sinks);
  // Qwen3 style: explicit head_dim, sliding_window present but disabled.
  json q = llama_config();
  q["model_type"] = "qwen3";
  q["hidden_size"] = 5120;
  q["num_attention_heads"] = 64;
  q["head_dim"] = 128;
  q["sliding_window"] = 4096;
  q["use_sliding_window"] = false;
  const ModelPreset qm = parse(q);
  ASSERT_EQ(qm.layer_types.size(), 1u);
  EXPECT_EQ(qm.layer_types[0].head_dim_qk, 128);
  EXPECT_EQ(qm.layer_types[0].sliding_window, 0);
  // Mistral style: sliding_window on every layer.
  json mi = llama_config();
  mi["sliding_window"] = 4096;
  EXPECT_EQ(parse(mi).layer_types.at(0).sliding_window, 4096);
  // Multimodal wrapper: the text model's fields under text_config.
  json wrapped = {{"model_type", "llava"}, {"text_config", llama_config()}};
  EXPECT_EQ(parse(wrapped).layer_types.at(0).num_q_heads, 32);
}

TEST(HfConfig, GptOssLayerTypesAndSinksInEveryLayer) {
  json types = json::array();
  for (int i = 0; i < 36; ++i) types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
  const json j = {{"model_type", "gpt_oss"}, {"num_hidden_layers", 36}, {"num_attention_heads", 64},
                  {"num_key_value_heads", 8}, {"head_dim", 64}, {"hidden_size", 2880},
                  {"sliding_window", 128}, {"layer_types", types}};
  const ModelPreset m = parse(j);
  ASSERT_EQ(m.layer_types.size(), 2u);
  EXPECT_EQ(m.layer_types[0].name, "swa");
  EXPECT_EQ(m.layer_types[0].sliding_window, 128);
  EXPECT_EQ(m.layer_types[1].name, "full");
  for (const LayerType& l : m.layer_types) {
    EXPECT_TRUE(l.learned_sinks);
    EXPECT_EQ(l.num_layers, 18);
    EXPECT_EQ(l.head_dim_qk, 64);
    EXPECT_EQ(l.num_q_heads, 64);
    EXPECT_EQ(l.num_kv_heads, 8);
  }
  const ModelPreset preset = load_preset("gpt-oss-120b");
  ASSERT_EQ(preset.layer_types.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(preset.layer_types[i].name, m.layer_types[i].name);
    EXPECT_EQ(preset.layer_types[i].sliding_window, m.layer_types[i].sliding_window);
    EXPECT_EQ(preset.layer_types[i].learned_sinks, m.layer_types[i].learned_sinks);
  }
}

TEST(HfConfig, MissingAndBadFieldsAreNamed) {
  auto without = [](json j, const char* key) {
    j.erase(key);
    return j;
  };
  EXPECT_THAT(error_of(without(llama_config(), "num_key_value_heads")), HasSubstr("config.json: num_key_value_heads: missing"));
  EXPECT_THAT(error_of(without(llama_config(), "num_attention_heads")), HasSubstr("num_attention_heads: missing"));
  EXPECT_THAT(error_of(without(llama_config(), "num_hidden_layers")), HasSubstr("num_hidden_layers: missing"));
  EXPECT_THAT(error_of(without(llama_config(), "hidden_size")), HasSubstr("head_dim: missing, and so is hidden_size"));
  json odd = llama_config();
  odd["hidden_size"] = 4000;
  odd["num_attention_heads"] = 48;
  EXPECT_THAT(error_of(odd), HasSubstr("hidden_size (4000) is not a multiple of num_attention_heads (48)"));
  json neg = llama_config();
  neg["num_key_value_heads"] = -8;
  EXPECT_THAT(error_of(neg), HasSubstr("num_key_value_heads: expected a positive integer, got -8"));
  json short_pattern = mimo_config();
  short_pattern["hybrid_layer_pattern"].erase(0);
  EXPECT_THAT(error_of(short_pattern), HasSubstr("hybrid_layer_pattern: has 47 entries; num_hidden_layers is 48"));
  json bad_entry = mimo_config();
  bad_entry["hybrid_layer_pattern"][3] = 2;
  EXPECT_THAT(error_of(bad_entry), HasSubstr("hybrid_layer_pattern[3]: expected 0 (full) or 1 (sliding window), got 2"));
  EXPECT_THAT(error_of(without(mimo_config(), "sliding_window")), HasSubstr("sliding_window_size: missing"));
  json types = llama_config();
  types["layer_types"] = json::array();
  for (int i = 0; i < 32; ++i) types["layer_types"].push_back(i == 5 ? "linear_attention" : "full_attention");
  EXPECT_THAT(error_of(types), HasSubstr("layer_types[5]: 'linear_attention' is not an attention layer"));
  json sinks = mimo_config();
  sinks["add_swa_attention_sink_bias"] = "yes";
  EXPECT_THAT(error_of(sinks), HasSubstr("add_swa_attention_sink_bias: expected true or false"));
  json gqa = llama_config();
  gqa["num_key_value_heads"] = 5;
  EXPECT_THAT(error_of(gqa), HasSubstr("num_key_value_heads: 5 does not divide the 32 q heads"));
  EXPECT_THAT(error_of(json::array()), HasSubstr("expected a JSON object"));
  try {
    preset_from_hf_config("{", "x.json");
    ADD_FAILURE();
  } catch (const DeploymentError& e) {
    EXPECT_THAT(e.what(), HasSubstr("x.json: not valid JSON"));
  }
  EXPECT_THROW(load_hf_config("/nonexistent/config.json"), DeploymentError);
}

TEST(HfConfig, MimoConfigShardsLikeThePreset) {
  testing::TempDir dir;
  const std::string path = dir.file("config.json");
  testing::write_text(path, mimo_config().dump(2));
  const Deployment d = plan_deployment(load_hf_config(path), {.tensor_parallel = 8});
  ASSERT_EQ(d.needs.size(), 4u);
  EXPECT_EQ(d.needs[0].heads.num_q_heads, 8);
  EXPECT_EQ(d.needs[0].heads.num_kv_heads, 1);
  EXPECT_TRUE(d.needs[0].heads.kv_replicated);
  EXPECT_FALSE(d.needs[0].skipped());
  ASSERT_FALSE(d.needs[2].skipped());
  EXPECT_TRUE(d.needs[2].spec->sliding_window);
  EXPECT_TRUE(d.needs[2].spec->learned_sinks);
  EXPECT_EQ(d.needs[2].sliding_window, 128);
  EXPECT_EQ(d.model.origin, path);
  // TP 3 is refused, naming the head count.
  try {
    plan_deployment(load_hf_config(path), {.tensor_parallel = 3});
    ADD_FAILURE();
  } catch (const DeploymentError& e) {
    EXPECT_THAT(e.what(), HasSubstr("num_q_heads (64) is not divisible by the tensor-parallel size 3"));
  }
}

} // namespace
} // namespace attnjit::tuner
