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

// Type selection (no <type_traits> under NVRTC's small include set).
template <bool kCond, class A, class B> struct Select {
  using type = A;
};
template <class A, class B> struct Select<false, A, B> {
  using type = B;
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

// Four fp8 values (one 32-bit word, bytes 0-3) widened exactly to four 16-bit Elem values in two
// registers: lo holds bytes 0 and 2, hi bytes 1 and 3. Bytes 1 and 3 already sit at the top of
// the word's 16-bit lanes, and a shift by 8 puts bytes 0 and 2 there (no byte permutes). Per lane
// the fp8 exponent and mantissa are shifted under the target's sign bit, and one packed multiply
// by 2^(target bias - fp8 bias) restores the value (subnormals included); the shift and the
// multiply drop out where the fp8 format is the target's top byte (e5m2 -> f16). About nine
// instructions per word on every arch from sm_80 (no fp8 conversion instructions needed).
template <class Fp8, class Elem> struct Fp8Widen;
template <class Elem, int kShift, u32 kMask, u32 kRebias> struct Fp8WidenBits {
  __device__ __forceinline__ static void run(u32 v, u32& lo, u32& hi) {
    lo = top_bytes(v << 8);
    hi = top_bytes(v);
  }

private:
  // The two bytes at bits 8-15 and 24-31 of t as two Elem values; bits 0-7 and 16-23 of t shift
  // out of kMask for every format pair below, so they need no clearing first.
  __device__ __forceinline__ static u32 top_bytes(u32 t) {
    if constexpr (kShift == 0 && kRebias == 0x3c003c00u) return t & (0x80008000u | kMask);
    else return mul2(Elem{}, (t & 0x80008000u) | ((t >> kShift) & kMask), kRebias);
  }
  __device__ __forceinline__ static u32 mul2(f16, u32 a, u32 b) {
    u32 r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
  }
  __device__ __forceinline__ static u32 mul2(bf16, u32 a, u32 b) {
    u32 r; // fma with -0 addend: bf16x2 multiply on sm_80 too
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(0x80008000u));
    return r;
  }
};
// e4m3 (bias 7, 3 mantissa bits) -> f16 (bias 15): shift 1, x 2^8; -> bf16 (bias 127): shift 4, x 2^120.
template <> struct Fp8Widen<e4m3, f16> : Fp8WidenBits<f16, 1, 0x3f803f80u, 0x5c005c00u> {};
template <> struct Fp8Widen<e4m3, bf16> : Fp8WidenBits<bf16, 4, 0x07f007f0u, 0x7b807b80u> {};
// e5m2 (bias 15, 2 mantissa bits) is the top byte of an f16 (shift 0, x 1); -> bf16: shift 3, x 2^112.
template <> struct Fp8Widen<e5m2, f16> : Fp8WidenBits<f16, 0, 0x7f007f00u, 0x3c003c00u> {};
template <> struct Fp8Widen<e5m2, bf16> : Fp8WidenBits<bf16, 3, 0x0fe00fe0u, 0x77807780u> {};

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
