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
template <class A, class B> inline constexpr bool kSame = false;
template <class A> inline constexpr bool kSame<A, A> = true;

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

// fp8 KV is multiplied in f16, into which e4m3 and e5m2 both widen exactly. Fp8Widen<Fp8> turns
// four fp8 values (one 32-bit word, bytes 0-3) into two f16x2 registers: run pairs bytes 0, 1
// (lo) and 2, 3 (hi); run_strided pairs bytes 0, 2 and 1, 3. The KV scale is not applied here (it
// folds into the softmax scale and the epilogue).
//   e5m2 is the top byte of an f16: one byte permute per pair.
//   e4m3 on sm_89+: one conversion instruction per pair. On sm_80 (no fp8 conversions): a byte
//   permute sign-extends each byte into its 16-bit lane, a shift puts exponent and mantissa in the
//   low bits of f16's fields, a mask keeps them and one sign copy at the top bit, and a packed
//   multiply by 2^(15 - 7) restores the value, subnormals included.
template <class Fp8> struct Fp8Widen;
struct Fp8WidenPermute {
  __device__ __forceinline__ static u32 prmt(u32 v, u32 selector) { // a selector nibble's msb replicates the byte's sign
    u32 r;
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(r) : "r"(v), "r"(selector));
    return r;
  }
};
template <> struct Fp8Widen<e5m2> : Fp8WidenPermute {
  __device__ __forceinline__ static void run(u32 v, u32& lo, u32& hi) {
    lo = prmt(v, 0x1404u); // bytes 0, 1 to the top of the two lanes, zeros below
    hi = prmt(v, 0x3424u);
  }
  __device__ __forceinline__ static void run_strided(u32 v, u32& lo, u32& hi) {
    lo = prmt(v, 0x2404u);
    hi = prmt(v, 0x3414u);
  }
};
template <> struct Fp8Widen<e4m3> : Fp8WidenPermute {
  __device__ __forceinline__ static void run(u32 v, u32& lo, u32& hi) {
#if __CUDA_ARCH__ >= 890
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}"
        : "=r"(lo), "=r"(hi)
        : "r"(v));
#else
    lo = widen_pair(prmt(v, 0x9180u)); // bytes 0, 1 sign-extended into the two lanes
    hi = widen_pair(prmt(v, 0xb3a2u));
#endif
  }
  __device__ __forceinline__ static void run_strided(u32 v, u32& lo, u32& hi) {
#if __CUDA_ARCH__ >= 890
    run(prmt(v, 0x3120u), lo, hi);
#else
    lo = widen_pair(prmt(v, 0xa280u)); // bytes 0, 2 sign-extended into the two lanes
    hi = widen_pair(prmt(v, 0xb391u));
#endif
  }

private:
  __device__ __forceinline__ static u32 widen_pair(u32 sign_extended) {
    u32 r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"((sign_extended << 7) & 0xbf80bf80u), "r"(0x5c005c00u));
    return r;
  }
};

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
// Float min/max in one instruction each (the ternary form leaves NaN handling to a compare and a
// select); a NaN operand yields the other.
__device__ __forceinline__ float fmax_(float a, float b) {
  float r;
  asm("max.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float fmin_(float a, float b) {
  float r;
  asm("min.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
template <class T> __device__ __forceinline__ T min_(T a, T b) { return a < b ? a : b; }
__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }
// bf16 q brought into f16's range, for products in f16 (fp8 KV; KernelTraits::kRescaleQ): a row is
// multiplied by the power of two that puts its largest magnitude in [2^14, 2^15) and its scores by
// the inverse. Exact for bf16's 8 mantissa bits; only elements below 2^-24 of the row's largest
// lose bits, far under bf16's own rounding.
struct Bf16RowToF16 {
  float scale, unscale;
  // The larger magnitude of a bf16x2 word's halves (bf16 magnitudes order as unsigned integers).
  __device__ __forceinline__ static u32 magnitude(u32 bf16x2) { return max_(bf16x2 & 0x7fffu, (bf16x2 >> 16) & 0x7fffu); }
  // largest: the row's largest magnitude, < 2^(E - 126) for its biased exponent E; the factor
  // 2^(141 - E) maps it below 2^15.
  __device__ __forceinline__ explicit Bf16RowToF16(u32 largest) {
    const int shift = min_(141 - static_cast<int>(largest >> 7), 126);
    scale = __int_as_float((127 + shift) << 23);
    unscale = __int_as_float((127 - shift) << 23);
  }
  __device__ __forceinline__ u32 operator()(u32 bf16x2) const {
    return pack2<f16>(__uint_as_float(bf16x2 << 16) * scale, __uint_as_float(bf16x2 & 0xffff0000u) * scale);
  }
};

// A callable that does nothing (a default for optional hooks).
struct NoOp {
  __device__ __forceinline__ void operator()() const {}
};

__host__ __device__ constexpr int log2_exact(int x) { return x <= 1 ? 0 : 1 + log2_exact(x / 2); }
// log2_exact rounds down for other x, so this is the power of two it names (0 below 1).
__host__ __device__ constexpr int largest_power_of_two_at_most(int x) { return x < 1 ? 0 : 1 << log2_exact(x); }

__device__ __forceinline__ u32 smem_addr(const void* p) {
  return static_cast<u32>(__cvta_generic_to_shared(p));
}

} // namespace attnjit
