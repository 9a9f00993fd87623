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

// Element tags: the 16-bit types of q, k, v and o, and the fp8 types of a quantized KV cache.
struct f16 {
  static constexpr int kBytes = 2;
};
struct bf16 {
  static constexpr int kBytes = 2;
};
struct e4m3 {
  static constexpr int kBytes = 1;
};
struct e5m2 {
  static constexpr int kBytes = 1;
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

// Two fp8 values (low byte first) widened exactly to two f16 in one register. Bit moves, so the
// same code runs on sm_80 (which has no fp8 conversion instructions): e5m2 is the top byte of an
// f16; e4m3's exponent bias is 8 below f16's, which one multiply by 2^8 restores (subnormals too).
template <class Fp8> __device__ __forceinline__ u32 fp8x2_to_f16x2(u32 v);
template <> __device__ __forceinline__ u32 fp8x2_to_f16x2<e5m2>(u32 v) {
  return ((v & 0xffu) << 8) | ((v & 0xff00u) << 16);
}
template <> __device__ __forceinline__ u32 fp8x2_to_f16x2<e4m3>(u32 v) {
  const u32 h = ((v & 0x80u) << 8) | ((v & 0x7fu) << 7) | ((v & 0x8000u) << 16) | ((v & 0x7f00u) << 15);
  u32 r;
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(h), "r"(0x5c005c00u)); // x 256.0
  return r;
}

// Two f16 in one register re-encoded as two Elem (exact: every fp8 value fits both types).
template <class Elem> __device__ __forceinline__ u32 f16x2_to(u32 h);
template <> __device__ __forceinline__ u32 f16x2_to<f16>(u32 h) { return h; }
template <> __device__ __forceinline__ u32 f16x2_to<bf16>(u32 h) {
  float lo, hi;
  asm("{.reg .f16 l, h;\n mov.b32 {l, h}, %2;\n cvt.f32.f16 %0, l;\n cvt.f32.f16 %1, h;\n}"
      : "=f"(lo), "=f"(hi) : "r"(h));
  return pack2<bf16>(lo, hi);
}

__device__ __forceinline__ float tanh_approx(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
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
