#include "codegen/emit.h"

#include <fmt/format.h>

#include "codegen/embedded_templates.h"

namespace attnjit {

namespace {
// Bump when the emitted text changes in a way the templates' hash would not show.
constexpr std::string_view kEmitterRevision = "emit-2";
} // namespace

std::string emit_source(const KernelSpec& s, const TileConfig& t) {
  validate(s, t);
  const char* elem = s.q_dtype == DType::f16 ? "attnjit::f16" : "attnjit::bf16";
  return fmt::format(
      R"(// {spec} | {tile}
#include "attention_kernel.cuh"
#include "split_kv_reduce.cuh"

using Traits = attnjit::KernelTraits<{elem}, /*head_dim_qk=*/{dqk}, /*head_dim_v=*/{dv},
    /*page_size=*/{page}, /*paged=*/{paged}, /*causal=*/{causal}, /*decode=*/{decode},
    /*block_m=*/{bm}, /*block_n=*/{bn}, /*warps_m=*/{wm}, /*warps_n=*/{wn}, /*stages=*/{st}>;
static_assert(Traits::kSmemBytes == {smem}, "host and device disagree on shared memory");

extern "C" __global__ void __launch_bounds__(Traits::kThreads, {min_ctas})
{attention}(const __grid_constant__ attnjit::AttentionParams params) {{
  attnjit::attention_kernel<Traits>(params);
}}

extern "C" __global__ void __launch_bounds__({reduce_threads})
{reduce}(const __grid_constant__ attnjit::AttentionParams params) {{
  attnjit::split_kv_reduce<{elem}, {dv}, {reduce_threads}>(params);
}}
)",
      fmt::arg("spec", s.canonical()), fmt::arg("tile", t.canonical()), fmt::arg("elem", elem),
      fmt::arg("dqk", s.head_dim_qk), fmt::arg("dv", s.head_dim_v), fmt::arg("page", s.page_size),
      fmt::arg("paged", s.kv_storage == KvStorage::paged), fmt::arg("causal", s.causal),
      fmt::arg("decode", s.family == KernelFamily::decode), fmt::arg("bm", t.block_m),
      fmt::arg("bn", t.block_n), fmt::arg("wm", t.warps_m), fmt::arg("wn", t.warps_n),
      fmt::arg("st", t.stages), fmt::arg("min_ctas", t.min_ctas_per_sm), fmt::arg("smem", shared_memory_bytes(s, t)),
      fmt::arg("attention", kAttentionEntry), fmt::arg("reduce", kReduceEntry),
      fmt::arg("reduce_threads", kReduceThreads));
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
