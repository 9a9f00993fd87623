// A model's attention geometry read straight from its Hugging Face config.json, so that a model
// needs no preset.
//
// Read (from the top level, or from "text_config" when the top level has no attention fields):
//   num_hidden_layers, num_attention_heads, num_key_value_heads           required
//   head_dim            else hidden_size / num_attention_heads (which must divide)
//   v_head_dim          else head_dim (MiMo: 192 for q.k, 128 for v)
// Which layers use a sliding window, in this order of precedence:
//   hybrid_layer_pattern  MiMo: one 0 (full) or 1 (sliding window) per layer; the sliding layers'
//                         geometry from swa_num_attention_heads, swa_num_key_value_heads,
//                         swa_head_dim, swa_v_head_dim (each defaulting to the full layers'
//                         value), the window from sliding_window_size, else sliding_window;
//                         learned sinks where add_swa_attention_sink_bias /
//                         add_full_attention_sink_bias are true
//   layer_types           "full_attention" / "sliding_attention" per layer (gpt-oss, Gemma,
//                         Qwen3-Next style), window from sliding_window
//   sliding_window        set and not disabled by use_sliding_window: false: every layer
// gpt-oss (model_type "gpt_oss") has a learned sink per head in every layer.
// Layers of equal geometry form one layer type ("full", "swa"); attention is causal.
// Every error names the field and says what was expected.
#pragma once

#include <string>
#include <string_view>

#include "tuner/deployment.h"

namespace attnjit::tuner {

// Parses config.json text. `origin` (the path) starts every error message. Throws DeploymentError.
ModelPreset preset_from_hf_config(std::string_view json_text, std::string_view origin);

// Reads and parses the file. Throws DeploymentError.
ModelPreset load_hf_config(const std::string& path);

} // namespace attnjit::tuner
