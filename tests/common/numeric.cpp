#include "numeric.h"

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
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

uint16_t float_to_bits(float f, attnjit_dtype dtype) {
  return dtype == ATTNJIT_DTYPE_BF16 ? float_to_bf16(f) : float_to_f16(f);
}

float bits_to_float(uint16_t bits, attnjit_dtype dtype) {
  return dtype == ATTNJIT_DTYPE_BF16 ? bf16_to_float(bits) : f16_to_float(bits);
}

bool is_nan_bits(uint16_t bits, attnjit_dtype dtype) {
  if (dtype == ATTNJIT_DTYPE_BF16) return (bits & 0x7F80u) == 0x7F80u && (bits & 0x007Fu) != 0;
  return (bits & 0x7C00u) == 0x7C00u && (bits & 0x03FFu) != 0;
}

bool is_inf_bits(uint16_t bits, attnjit_dtype dtype) {
  if (dtype == ATTNJIT_DTYPE_BF16) return (bits & 0x7FFFu) == 0x7F80u;
  return (bits & 0x7FFFu) == 0x7C00u;
}

std::string_view dtype_name(attnjit_dtype dtype) {
  switch (dtype) {
  case ATTNJIT_DTYPE_F16: return "f16";
  case ATTNJIT_DTYPE_BF16: return "bf16";
  }
  return "dtype?";
}

double dtype_epsilon(attnjit_dtype dtype) {
  return dtype == ATTNJIT_DTYPE_BF16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10);
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
    if ((b & 0x7FFFu) != 0 && !is_inf_bits(b, dtype)) return b;
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
    if ((b & 0x7FFFu) != 0 && !is_inf_bits(b, dtype)) return b;
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
