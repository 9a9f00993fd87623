#include "numeric.h"

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

namespace attnjit::testing {

uint16_t float_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u); // quiet NaN
  // Round to nearest even on the 16 bits dropped; a carry out of the mantissa bumps the exponent,
  // which is right (and turns the largest finite values into infinity).
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7FFFu + lsb;
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t float_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u); // NaN
  // 65504 is the largest f16; 65520 is halfway to the next power of two and rounds (to even) up.
  if (ax >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  if (ax < 0x38800000u) { // below 2^-14: subnormal result, in units of 2^-24
    // 2^-25 (0x33000000) is exactly half a unit and rounds to even, i.e. to zero.
    if (ax <= 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = ax >> 23;                      // 102..112
    const uint32_t m = (ax & 0x7FFFFFu) | 0x800000u; // value = m * 2^(e - 150)
    const uint32_t shift = 126u - e;                 // 14..24: units = m >> shift
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q; // may carry into the smallest normal: fine
    return static_cast<uint16_t>(sign | q);
  }
  const uint32_t e16 = (ax >> 23) - 112u; // rebias 127 -> 15
  const uint32_t mant = ax & 0x7FFFFFu;
  uint32_t r = (e16 << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

float f16_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exp = (bits >> 10) & 0x1Fu;
  const uint32_t mant = bits & 0x3FFu;
  if (exp == 0x1Fu) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  if (exp == 0) { // zero or subnormal: mant * 2^-24, exact in float
    const float mag = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -mag : mag;
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

namespace {

// Round-to-nearest-even encoding of a finite, non-negative `a` (exact: float -> double is exact
// and every step below is a power-of-two scaling or an integer rounding) into a small float
// format with `mant_bits` stored mantissa bits, exponent bias `bias`, and smallest normal
// exponent 1 - bias. Returns (exponent field << mant_bits) | mantissa, possibly one past the
// largest finite code (the caller handles overflow).
uint32_t encode_small_float(double a, int mant_bits, int bias) {
  const int emin = 1 - bias;
  const double mant_scale = std::ldexp(1.0, mant_bits);
  if (a < std::ldexp(1.0, emin)) {
    // Subnormal: units of 2^(emin - mant_bits); a carry into 2^emin gives the smallest normal code.
    return static_cast<uint32_t>(std::nearbyint(std::ldexp(a, mant_bits - emin)));
  }
  int e = 0;
  const double fr = std::frexp(a, &e); // a = fr * 2^e, fr in [0.5, 1)
  --e;                                 // a = (2 fr) * 2^e, 2 fr in [1, 2)
  uint32_t q = static_cast<uint32_t>(std::nearbyint((2.0 * fr - 1.0) * mant_scale));
  if (q == static_cast<uint32_t>(mant_scale)) { // rounded up to the next binade
    q = 0;
    ++e;
  }
  return (static_cast<uint32_t>(e + bias) << mant_bits) | q;
}

} // namespace

uint8_t float_to_e4m3(float f) {
  const bool neg = std::signbit(f);
  const uint8_t sign = neg ? 0x80u : 0u;
  if (std::isnan(f)) return static_cast<uint8_t>(sign | 0x7Fu);
  const double a = std::fabs(static_cast<double>(f));
  if (a > 448.0) return static_cast<uint8_t>(sign | 0x7Eu); // saturate (infinity included)
  const uint32_t code = encode_small_float(a, 3, 7);          // at most 0x7E: 448 is the largest
  return static_cast<uint8_t>(sign | code);
}

float e4m3_to_float(uint8_t bits) {
  const bool neg = (bits & 0x80u) != 0;
  const uint32_t exp = (bits >> 3) & 0xFu, mant = bits & 0x7u;
  float mag;
  if (exp == 0xFu && mant == 0x7u) {
    mag = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    mag = std::ldexp(static_cast<float>(mant), -9);
  } else {
    mag = std::ldexp(static_cast<float>(8 + mant), static_cast<int>(exp) - 7 - 3);
  }
  return neg ? -mag : mag;
}

uint8_t float_to_e5m2(float f, bool saturate) {
  const bool neg = std::signbit(f);
  const uint8_t sign = neg ? 0x80u : 0u;
  if (std::isnan(f)) return static_cast<uint8_t>(sign | 0x7Eu);
  const double a = std::fabs(static_cast<double>(f));
  uint32_t code = std::isinf(a) ? 0x7Cu : encode_small_float(a, 2, 15);
  if (code >= 0x7Cu) code = saturate ? 0x7Bu : 0x7Cu; // overflow: 57344 or infinity
  return static_cast<uint8_t>(sign | code);
}

float e5m2_to_float(uint8_t bits) {
  const bool neg = (bits & 0x80u) != 0;
  const uint32_t exp = (bits >> 2) & 0x1Fu, mant = bits & 0x3u;
  float mag;
  if (exp == 0x1Fu) {
    mag = mant == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    mag = std::ldexp(static_cast<float>(mant), -16);
  } else {
    mag = std::ldexp(static_cast<float>(4 + mant), static_cast<int>(exp) - 15 - 2);
  }
  return neg ? -mag : mag;
}

uint16_t float_to_bits(float f, attnjit_dtype dtype) {
  switch (dtype) {
  case ATTNJIT_DTYPE_BF16: return float_to_bf16(f);
  case ATTNJIT_DTYPE_FP8_E4M3: return float_to_e4m3(f);
  case ATTNJIT_DTYPE_FP8_E5M2: return float_to_e5m2(f);
  default: return float_to_f16(f);
  }
}

float bits_to_float(uint16_t bits, attnjit_dtype dtype) {
  switch (dtype) {
  case ATTNJIT_DTYPE_BF16: return bf16_to_float(bits);
  case ATTNJIT_DTYPE_FP8_E4M3: return e4m3_to_float(static_cast<uint8_t>(bits));
  case ATTNJIT_DTYPE_FP8_E5M2: return e5m2_to_float(static_cast<uint8_t>(bits));
  default: return f16_to_float(bits);
  }
}

bool is_nan_bits(uint16_t bits, attnjit_dtype dtype) {
  switch (dtype) {
  case ATTNJIT_DTYPE_BF16: return (bits & 0x7F80u) == 0x7F80u && (bits & 0x007Fu) != 0;
  case ATTNJIT_DTYPE_FP8_E4M3: return (bits & 0x7Fu) == 0x7Fu;
  case ATTNJIT_DTYPE_FP8_E5M2: return (bits & 0x7Cu) == 0x7Cu && (bits & 0x03u) != 0;
  default: return (bits & 0x7C00u) == 0x7C00u && (bits & 0x03FFu) != 0;
  }
}

bool is_zero_bits(uint16_t bits, attnjit_dtype dtype) {
  return is_fp8(dtype) ? (bits & 0x7Fu) == 0 : (bits & 0x7FFFu) == 0;
}

bool is_inf_bits(uint16_t bits, attnjit_dtype dtype) {
  switch (dtype) {
  case ATTNJIT_DTYPE_BF16: return (bits & 0x7FFFu) == 0x7F80u;
  case ATTNJIT_DTYPE_FP8_E4M3: return false; // no infinities
  case ATTNJIT_DTYPE_FP8_E5M2: return (bits & 0x7Fu) == 0x7Cu;
  default: return (bits & 0x7FFFu) == 0x7C00u;
  }
}

std::string_view dtype_name(attnjit_dtype dtype) {
  switch (dtype) {
  case ATTNJIT_DTYPE_F16: return "f16";
  case ATTNJIT_DTYPE_BF16: return "bf16";
  case ATTNJIT_DTYPE_FP8_E4M3: return "e4m3";
  case ATTNJIT_DTYPE_FP8_E5M2: return "e5m2";
  }
  return "dtype?";
}

double dtype_epsilon(attnjit_dtype dtype) {
  switch (dtype) {
  case ATTNJIT_DTYPE_BF16: return std::ldexp(1.0, -7);
  case ATTNJIT_DTYPE_FP8_E4M3: return std::ldexp(1.0, -3);
  case ATTNJIT_DTYPE_FP8_E5M2: return std::ldexp(1.0, -2);
  default: return std::ldexp(1.0, -10);
  }
}

float poison_float() { return std::bit_cast<float>(kPoison32); }

bool is_poison(float f) { return std::bit_cast<uint32_t>(f) == kPoison32; }

uint64_t fresh_seed() {
  if (const char* env = std::getenv("ATTNJIT_TEST_SEED"); env != nullptr && *env != '\0') {
    return std::strtoull(env, nullptr, 0);
  }
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
} // namespace

Xoshiro256::Xoshiro256(uint64_t seed) {
  for (auto& w : s_) w = splitmix64(seed);
}

Xoshiro256::result_type Xoshiro256::operator()() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::normal(double stddev) {
  if (have_spare_) {
    have_spare_ = false;
    return spare_ * stddev;
  }
  const double u1 = 1.0 - uniform01(); // (0, 1]
  const double u2 = uniform01();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double a = 6.283185307179586 * u2;
  spare_ = r * std::sin(a);
  have_spare_ = true;
  return r * std::cos(a) * stddev;
}

uint16_t random_nonzero_bits(Rng& rng, attnjit_dtype dtype, double stddev) {
  for (;;) {
    const uint16_t b = float_to_bits(static_cast<float>(rng.normal(stddev)), dtype);
    if (!is_zero_bits(b, dtype) && !is_inf_bits(b, dtype) && !is_nan_bits(b, dtype)) return b;
  }
}

void fill_random(std::vector<uint16_t>& v, attnjit_dtype dtype, Rng& rng, double stddev) {
  for (auto& x : v) x = random_nonzero_bits(rng, dtype, stddev);
}

uint64_t counter_hash(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t x = seed ^ (stream * 0xD6E8FEB86659FD93ull);
  uint64_t h = splitmix64(x);
  x = h ^ index;
  return splitmix64(x);
}

uint16_t counter_normal_bits(uint64_t seed, uint64_t stream, uint64_t index, attnjit_dtype dtype, double stddev) {
  for (uint64_t salt = 0;; ++salt) {
    const uint64_t h1 = counter_hash(seed, stream + (salt << 32), index);
    uint64_t x = h1;
    const uint64_t h2 = splitmix64(x);
    const double u1 = 1.0 - static_cast<double>(h1 >> 11) * 0x1.0p-53; // (0, 1]
    const double u2 = static_cast<double>(h2 >> 11) * 0x1.0p-53;
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    const uint16_t b = float_to_bits(static_cast<float>(z * stddev), dtype);
    if (!is_zero_bits(b, dtype) && !is_inf_bits(b, dtype) && !is_nan_bits(b, dtype)) return b;
  }
}

uint16_t counter_garbage_bits(uint64_t seed, uint64_t stream, uint64_t index, attnjit_dtype dtype, double magnitude) {
  const uint64_t r = counter_hash(seed, stream, index);
  const double mag = magnitude * (0.5 + 0.5 * static_cast<double>(r >> 11) * 0x1.0p-53);
  return float_to_bits(static_cast<float>((r & 1) ? -mag : mag), dtype);
}

void fill_garbage(std::vector<uint16_t>& v, attnjit_dtype dtype, Rng& rng, double magnitude) {
  for (auto& x : v) {
    const uint64_t r = rng.engine()();
    const double mag = magnitude * (0.5 + 0.5 * static_cast<double>(r >> 11) * 0x1.0p-53);
    x = float_to_bits(static_cast<float>((r & 1) ? -mag : mag), dtype);
  }
}

} // namespace attnjit::testing
