// Host-side numerics for the tests: fp16/bf16/fp8 <-> float conversion (round to nearest even),
// seeds and random fills.
#pragma once

#include <attnjit/attnjit.h>

#include <cstdint>
#include <random>
#include <string_view>
#include <vector>

namespace attnjit::testing {

// ---- 16-bit float formats -------------------------------------------------------------------

// float -> bf16 bits, round to nearest even; NaN stays NaN (quiet), overflow rounds to +-inf.
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t bits);

// float -> IEEE binary16 bits, round to nearest even, subnormals included; |f| >= 65520 -> inf.
uint16_t float_to_f16(float f);
float f16_to_float(uint16_t bits);

// ---- 8-bit float formats (KV only) --------------------------------------------------------------
// e4m3 ("fn": bias 7, no infinities; S.1111.111 is NaN): largest finite 448, smallest normal 2^-6,
// subnormals m * 2^-9. Encoding rounds to nearest even and saturates: every |f| > 448 (infinity
// included) becomes +-448, as cvt.rn.satfinite does. NaN -> 0x7F (sign kept).
// e5m2 (IEEE-like: bias 15, S.11111.00 is infinity, S.11111.xx NaN): largest finite 57344,
// smallest normal 2^-14, subnormals m * 2^-16; it is the top byte of an IEEE binary16. Encoding
// rounds to nearest even; overflow (|f| >= 61440, halfway to 2^16) gives +-inf unless `saturate`,
// which clamps to +-57344 (infinity included). NaN -> 0x7E (sign kept).
uint8_t float_to_e4m3(float f);
float e4m3_to_float(uint8_t bits);
uint8_t float_to_e5m2(float f, bool saturate = false);
float e5m2_to_float(uint8_t bits);

inline bool is_fp8(attnjit_dtype dtype) { return dtype == ATTNJIT_DTYPE_FP8_E4M3 || dtype == ATTNJIT_DTYPE_FP8_E5M2; }
// Bytes per stored element: 1 for fp8, 2 for f16/bf16.
inline int dtype_bytes(attnjit_dtype dtype) { return is_fp8(dtype) ? 1 : 2; }

// "Bits" of any dtype in a uint16_t: the 16-bit pattern for f16/bf16, the byte (low 8 bits, high
// 8 bits zero) for fp8. fp8 encoding uses the saturating conversions above.
uint16_t float_to_bits(float f, attnjit_dtype dtype);
float bits_to_float(uint16_t bits, attnjit_dtype dtype);

// The value `f` takes once stored in `dtype`.
inline float round_to(float f, attnjit_dtype dtype) {
  return bits_to_float(float_to_bits(f, dtype), dtype);
}

bool is_nan_bits(uint16_t bits, attnjit_dtype dtype);
bool is_inf_bits(uint16_t bits, attnjit_dtype dtype);
bool is_zero_bits(uint16_t bits, attnjit_dtype dtype); // +0 or -0

std::string_view dtype_name(attnjit_dtype dtype); // "f16", "bf16", "e4m3", "e5m2"

// Machine epsilon of the format (distance from 1 to the next value): 2^-10 for f16, 2^-7 for bf16,
// 2^-3 for e4m3, 2^-2 for e5m2.
double dtype_epsilon(attnjit_dtype dtype);

// ---- Poison ---------------------------------------------------------------------------------
// Outputs are filled with these patterns before every run; a value still equal to the pattern
// afterwards was never written. Both are NaNs with a payload no arithmetic produces (a kernel's
// NaN is the canonical 0x7FC0 / 0x7E00 / 0x7FC00000), so "not written" and "written NaN" differ.
inline constexpr uint16_t kPoison16 = 0x7FC1;     // a NaN in both bf16 and f16
inline constexpr uint32_t kPoison32 = 0x7FC00ABCu; // a float NaN
float poison_float();                              // the float whose bits are kPoison32
bool is_poison(float f);

// ---- Seeds and random fills -----------------------------------------------------------------

// A fresh seed for each call (std::random_device), unless $ATTNJIT_TEST_SEED is set, in which
// case every call returns that value (to replay a failure: the tests print the seed they used).
uint64_t fresh_seed();

// xoshiro256** (Blackman & Vigna): fast, and a UniformRandomBitGenerator for std::shuffle.
class Xoshiro256 {
 public:
  using result_type = uint64_t;
  explicit Xoshiro256(uint64_t seed);
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return ~result_type{0}; }
  result_type operator()();

 private:
  uint64_t s_[4];
};

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  double uniform01() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; } // [0, 1)
  double normal(double stddev = 1.0);                                             // Box-Muller
  int64_t uniform_int(int64_t lo, int64_t hi) { // inclusive
    return std::uniform_int_distribution<int64_t>(lo, hi)(engine_);
  }
  Xoshiro256& engine() { return engine_; }

 private:
  Xoshiro256 engine_;
  bool have_spare_ = false;
  double spare_ = 0;
};

// A normal(0, stddev) sample rounded to `dtype`, redrawn until the stored value is neither zero
// nor subnormal-flushed to zero (so a missing term never hides behind a zero input).
uint16_t random_nonzero_bits(Rng& rng, attnjit_dtype dtype, double stddev = 1.0);

void fill_random(std::vector<uint16_t>& v, attnjit_dtype dtype, Rng& rng, double stddev = 1.0);

// Counter-based draws: the value for (seed, stream, index) is a pure function of the three, so
// tensors can be filled in any order (and in parallel) with layout-independent contents.
uint64_t counter_hash(uint64_t seed, uint64_t stream, uint64_t index);
// normal(0, stddev) rounded to dtype, never zero (redrawn with a salted index until it is not).
uint16_t counter_normal_bits(uint64_t seed, uint64_t stream, uint64_t index, attnjit_dtype dtype, double stddev);
// |x| uniform in [magnitude/2, magnitude], random sign.
uint16_t counter_garbage_bits(uint64_t seed, uint64_t stream, uint64_t index, attnjit_dtype dtype, double magnitude);

// "Garbage" for memory a kernel must not read: values with |x| uniform in [magnitude/2, magnitude]
// and a random sign (never zero, cheap to draw).
void fill_garbage(std::vector<uint16_t>& v, attnjit_dtype dtype, Rng& rng, double magnitude);

} // namespace attnjit::testing
