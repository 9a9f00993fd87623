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
// registers: lo holds bytes 0 and 2, hi bytes 1 and 3. One byte permute sign-extends a byte into
// each 16-bit lane; a shift moves its exponent and mantissa into the low bits of the target's
// exponent and mantissa fields, where a mask keeps them and one sign copy at the top bit; one
// packed multiply by 2^(target bias - fp8 bias) then restores the value (subnormals included).
// Four instructions per pair on every arch from sm_80 (no fp8 conversion instructions needed);
// e5m2 -> f16 is one permute, e5m2 being the top byte of an f16.
template <class Fp8, class Elem> struct Fp8Widen;
template <class Elem, int kShift, u32 kMask, u32 kRebias> struct Fp8WidenBits {
  __device__ __forceinline__ static void run(u32 v, u32& lo, u32& hi) {
    lo = pair<0xa280u, 0x2404u>(v);
    hi = pair<0xb391u, 0x3414u>(v);
  }

private:
  // kSignExtend: bytes b and b + 2 sign-extended into the two 16-bit lanes; kToTop: the same bytes
  // at the top of the lanes, zeros below.
  template <u32 kSignExtend, u32 kToTop> __device__ __forceinline__ static u32 pair(u32 v) {
    if constexpr (kShift == 8) return prmt(v, kToTop);
    else return mul2(Elem{}, (prmt(v, kSignExtend) << kShift) & kMask, kRebias);
  }
  __device__ __forceinline__ static u32 prmt(u32 v, u32 selector) { // a selector nibble's msb replicates the byte's sign
    u32 r;
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(r) : "r"(v), "r"(selector));
    return r;
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
// Shift and mask per pair: the 7 bits below an fp8 sign land under the target's sign bit.
// e4m3 (bias 7, 3 mantissa bits) -> f16 (bias 15): << 7, x 2^8; -> bf16 (bias 127): << 4, x 2^120.
template <> struct Fp8Widen<e4m3, f16> : Fp8WidenBits<f16, 7, 0xbf80bf80u, 0x5c005c00u> {};
template <> struct Fp8Widen<e4m3, bf16> : Fp8WidenBits<bf16, 4, 0x87f087f0u, 0x7b807b80u> {};
// e5m2 (bias 15, 2 mantissa bits) is the top byte of an f16 (<< 8, x 1); -> bf16: << 5, x 2^112.
template <> struct Fp8Widen<e5m2, f16> : Fp8WidenBits<f16, 8, 0xff00ff00u, 0x3c003c00u> {};
template <> struct Fp8Widen<e5m2, bf16> : Fp8WidenBits<bf16, 5, 0x8fe08fe0u, 0x77807780u> {};

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
