#include "codegen/emit.h"

#include <fmt/format.h>

#include "codegen/embedded_templates.h"
#include "codegen/errors.h"

namespace attnjit {

namespace {
// Bump when the emitted text changes in a way the templates' hash would not show.
constexpr std::string_view kEmitterRevision = "emit-3";
} // namespace

namespace {
const char* element_tag(DType d) {
  switch (d) {
    case DType::f16: return "attnjit::f16";
    case DType::bf16: return "attnjit::bf16";
    case DType::fp8_e4m3: return "attnjit::e4m3";
    case DType::fp8_e5m2: return "attnjit::e5m2";
  }
  return "?";
}
} // namespace

std::string emit_source(const KernelSpec& s, const TileConfig& t) {
  validate(s, t);
  // Every axis of the spec appears once, in `Spec`; every tuner choice once, in `Tile`.
  return fmt::format(
      R"(// {spec} | {tile}
#include "attention_kernel.cuh"
#include "split_kv_reduce.cuh"

struct Spec {{
  using Elem = {elem};
  using KvElem = {kv_elem};
  static constexpr int kHeadDimQK = {dqk}, kHeadDimV = {dv}, kPageSize = {page};
  static constexpr bool kPaged = {paged}, kCausal = {causal}, kDecode = {decode};
  static constexpr bool kSlidingWindow = {window}, kLearnedSinks = {sinks}, kSoftCap = {cap};
  static constexpr int kNmN = {nm_n}, kNmM = {nm_m};
  static constexpr bool kSkipSoftmax = {skip}, kBlockSparse = {bsp};
  static constexpr int kSparseBlockQ = {bsq}, kSparseBlockKV = {bskv};
  static constexpr bool kKvScalePerHead = {kv_scale_head};
}};
struct Tile {{
  static constexpr int kBlockM = {bm}, kBlockN = {bn}, kWarpsM = {wm}, kWarpsN = {wn}, kStages = {st};
  static constexpr bool kWgmma = {wg}, kProducer = {producer};
}};
using Traits = attnjit::KernelTraits<Spec, Tile>;
static_assert(Traits::kSmemBytes == {smem}, "host and device disagree on shared memory");

extern "C" __global__ void __launch_bounds__(Traits::kCtaThreads, {min_ctas})
{attention}(const __grid_constant__ attnjit::AttentionParams params) {{
  attnjit::attention_kernel<Traits>(params);
}}

extern "C" __global__ void __launch_bounds__({reduce_threads})
{reduce}(const __grid_constant__ attnjit::AttentionParams params) {{
  attnjit::split_kv_reduce<{elem}, {dv}, {sinks}, {reduce_threads}>(params);
}}
)",
      fmt::arg("spec", s.canonical()), fmt::arg("tile", t.canonical()), fmt::arg("elem", element_tag(s.q_dtype)),
      fmt::arg("kv_elem", element_tag(s.kv_dtype)), fmt::arg("dqk", s.head_dim_qk), fmt::arg("dv", s.head_dim_v),
      fmt::arg("page", s.page_size), fmt::arg("paged", s.kv_storage == KvStorage::paged),
      fmt::arg("causal", s.causal), fmt::arg("decode", s.family == KernelFamily::decode),
      fmt::arg("window", s.sliding_window), fmt::arg("sinks", s.learned_sinks), fmt::arg("cap", s.soft_cap),
      fmt::arg("nm_n", s.nm_n), fmt::arg("nm_m", s.nm_m), fmt::arg("skip", s.skip_softmax),
      fmt::arg("bsp", s.block_sparse), fmt::arg("bsq", s.sparse_block_q), fmt::arg("bskv", s.sparse_block_kv),
      fmt::arg("kv_scale_head", s.kv_scale_per_head), fmt::arg("bm", t.block_m), fmt::arg("bn", t.block_n),
      fmt::arg("wm", t.warps_m), fmt::arg("wn", t.warps_n), fmt::arg("st", t.stages), fmt::arg("wg", t.wgmma),
      fmt::arg("producer", t.producer),
      fmt::arg("min_ctas", t.min_ctas_per_sm), fmt::arg("smem", shared_memory_bytes(s, t)),
      fmt::arg("attention", kAttentionEntry), fmt::arg("reduce", kReduceEntry),
      fmt::arg("reduce_threads", kReduceThreads));
}

std::string emit_block_mask_source(DType dtype) {
  if (dtype != DType::f16 && dtype != DType::bf16)
    throw SpecError(fmt::format("dtype: got {}; allowed: f16 or bf16", to_string(dtype)));
  return fmt::format(R"(// block mask builder | {elem}
#include "block_mask.cuh"

extern "C" __global__ void __launch_bounds__(attnjit::kBlockMaskThreads)
{entry}(const __grid_constant__ attnjit::BlockMaskParams params) {{
  attnjit::build_block_mask<{elem}>(params);
}}
)",
                     fmt::arg("elem", element_tag(dtype)), fmt::arg("entry", kBlockMaskEntry));
}

const std::string& codegen_version() {
  static const std::string version = [] {
    std::string all(kEmitterRevision);
    for (const auto& f : detail::embedded_templates()) {
      all += '\0';
      all += f.name;
      all += '\0';
      all += f.content;
    }
    return stable_hash_hex(all);
  }();
  return version;
}

} // namespace attnjit
