// Element types and scalar helpers. Kernels include no toolkit headers: conversions are one PTX
// instruction each, and a small include set keeps NVRTC compile time low.
#pragma once

namespace attnjit {

using u16 = unsigned short;
using u32 = unsigned int;
using i64 = long long;

struct alignas(16) u32x4 {
  u32 x, y, z, w;
};

// Element tags for the 16-bit types of q, k, v and o.
struct f16 {
  static constexpr const char* kName = "f16";
};
struct bf16 {
  static constexpr const char* kName = "bf16";
};

// Packs two floats into one 32-bit register of two 16-bit elements, `lo` in the low half.
template <class Elem> __device__ __forceinline__ u32 pack2(float lo, float hi);
template <> __device__ __forceinline__ u32 pack2<bf16>(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <> __device__ __forceinline__ u32 pack2<f16>(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float log2_approx(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
inline constexpr float kLn2 = 0.6931471805599453f;

template <class T> __device__ __forceinline__ T max_(T a, T b) { return a > b ? a : b; }
template <class T> __device__ __forceinline__ T min_(T a, T b) { return a < b ? a : b; }
__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ constexpr int log2_exact(int x) { return x <= 1 ? 0 : 1 + log2_exact(x / 2); }

__device__ __forceinline__ u32 smem_addr(const void* p) {
  return static_cast<u32>(__cvta_generic_to_shared(p));
}

} // namespace attnjit
