// Philox4x32-10, the one counter-based generator of gencore, shared by the CPU and CUDA kernels.
// It reproduces triton/language/random.py bit for bit in the integers: randint4x (key = the 64-bit
// seed split into lo/hi words, counter = a 64-bit value split into lo/hi words, the two upper counter
// words zero), uint_to_uniform_float and pair_uniform_to_normal (Box-Muller, float32).
//
// gencore's element mapping (docs/reparameterize.md): element i of a call with (seed, offset) takes
// normal number (offset + i) & 3 of randn4x(seed, counter = (offset + i) >> 2). It depends only on
// (seed, offset, i), so block sizes and thread counts never change the noise, and a call on the second
// half of a tensor with offset += n/2 continues the stream of the first half. One Philox call feeds four
// elements (Triton's randn4x), which the measurements in the doc show is ~3x cheaper on the CPU than one
// call per element (tl.randn).
#pragma once
#include <cstdint>

#include "common/vec_math.h"

#if defined(__CUDACC__)
#define GENCORE_UNROLL _Pragma("unroll")
#else
#define GENCORE_UNROLL _Pragma("GCC unroll 10")
#endif

namespace gencore::philox {

constexpr uint32_t kRoundA = 0xD2511F53u;
constexpr uint32_t kRoundB = 0xCD9E8D57u;
constexpr uint32_t kKeyA = 0x9E3779B9u;
constexpr uint32_t kKeyB = 0xBB67AE85u;
constexpr int kRounds = 10;

GENCORE_HD uint32_t mulhi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Ten rounds on the counter (c0..c3) with key (k0, k1), exactly triton.language.random.philox_impl.
GENCORE_HD void philox4x32_10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  GENCORE_UNROLL
  for (int round = 0; round < kRounds; ++round) {
    const uint32_t a0 = c0, a2 = c2;
    c0 = mulhi(kRoundB, a2) ^ c1 ^ k0;
    c2 = mulhi(kRoundA, a0) ^ c3 ^ k1;
    c1 = kRoundB * a2;
    c3 = kRoundA * a0;
    k0 += kKeyA;
    k1 += kKeyB;
  }
}

// triton.language.random.randint4x(seed, counter) for an int64 counter.
GENCORE_HD void randint4x(uint64_t seed, uint64_t counter, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                          uint32_t& r3) {
  r0 = static_cast<uint32_t>(counter);
  r1 = static_cast<uint32_t>(counter >> 32);
  r2 = 0;
  r3 = 0;
  philox4x32_10(r0, r1, r2, r3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// triton.language.random.uint_to_uniform_float for uint32: a float in [0, 1).
GENCORE_HD float uint_to_uniform_float(uint32_t x) {
  const int32_t i = static_cast<int32_t>(x);
  return static_cast<float>(i < 0 ? ~i : i) * 4.6566127342e-10f;
}

// triton.language.random.pair_uniform_to_normal (Box-Muller) in float32, with gencore's vectorizable
// log/sincos (accurate to a few ulp; Triton uses the device's own, so floats agree to that rounding).
GENCORE_HD void pair_uniform_to_normal(float u1, float u2, float& n1, float& n2) {
  u1 = u1 > 1.0e-7f ? u1 : 1.0e-7f;
  const float th = 6.283185307179586f * u2;
  const float r = __builtin_sqrtf(-2.0f * log_f32(u1));
  float s, c;
  sincos_f32(th, s, c);
  n1 = r * c;
  n2 = r * s;
}

// triton.language.random.randn4x(seed, counter): four N(0, 1) floats from one Philox call.
GENCORE_HD void randn4x(uint64_t seed, uint64_t counter, float& n0, float& n1, float& n2, float& n3) {
  uint32_t r0, r1, r2, r3;
  randint4x(seed, counter, r0, r1, r2, r3);
  pair_uniform_to_normal(uint_to_uniform_float(r0), uint_to_uniform_float(r1), n0, n1);
  pair_uniform_to_normal(uint_to_uniform_float(r2), uint_to_uniform_float(r3), n2, n3);
}

}  // namespace gencore::philox
