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

#if !defined(__CUDACC__) && (defined(__AVX512F__) || defined(__AVX2__))
#include <immintrin.h>  // the CPU block generator at the end of this file
#endif

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
// The clamped u1 is in [1e-7, 1] and the angle in [0, 2 pi] (uint_to_uniform_float can round up to 1), so
// the transcendentals skip their special cases.
GENCORE_HD void pair_uniform_to_normal(float u1, float u2, float& n1, float& n2) {
  u1 = u1 > 1.0e-7f ? u1 : 1.0e-7f;
  const float th = 6.283185307179586f * u2;
  const float r = __builtin_sqrtf(-2.0f * log_f32<false>(u1));
  float s, c;
  sincos_f32<false>(th, s, c);
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


// ---- CPU: many consecutive counters at once -----------------------------------------------------------
// The portable functions above auto-vectorize, but GCC turns the 32x32->64 multiplies of mulhi into
// 64x64 multiplies (vpmullq, several uops each) and leaves each vector's ten dependent rounds
// latency-bound. The block functions below run the same rounds with explicit even/odd-lane 32-bit
// multiplies (one vpmuludq gives both the high and the low word of two lanes) on four independent
// vectors at a time: ~2x less generator time per normal on AVX-512 (benchmarks/native/philox_mapping.cpp).
// They produce exactly the integers of randint4x (tests/test_reparameterize.py compares them).
#if !defined(__CUDACC__)

#if defined(__AVX512F__)
struct CounterLanes {  // 16 uint32 lanes
  using V = __m512i;
  static constexpr int kWidth = 16;
  static V set1(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static V iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  static V add(V a, V b) { return _mm512_add_epi32(a, b); }
  static V xor3(V a, V b, V c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }
  // Even lanes multiply in place; odd lanes are moved down first. The halves are put back with masked
  // in-lane shuffles (port 5) rather than shifts and blends, which would compete with the multiplies
  // (measured: 1.3x faster). The all-ones-mask maskz_ forms compile to the plain instructions; the plain
  // intrinsics trip GCC 12's false -Wmaybe-uninitialized on _mm512_undefined_epi32() (GCC bug 105593).
  static void mulhilo(V a, V k, V& hi, V& lo) {
    const V even = _mm512_maskz_mul_epu32(0xFF, a, k);  // lanes 0, 2, ...: 64-bit products
    const V odd = _mm512_maskz_mul_epu32(0xFF, _mm512_maskz_shuffle_epi32(0xFFFF, a, _MM_PERM_DDBB), k);
    hi = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_DDBB);  // even lanes <- high words
    lo = _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CCAA);  // odd lanes <- low words
  }
  static void store(uint32_t* p, V v) { _mm512_storeu_si512(p, v); }
};
#define GENCORE_PHILOX_LANES 1
#elif defined(__AVX2__)
struct CounterLanes {  // 8 uint32 lanes
  using V = __m256i;
  static constexpr int kWidth = 8;
  static V set1(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static V iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V xor3(V a, V b, V c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
  static void mulhilo(V a, V k, V& hi, V& lo) {
    const V even = _mm256_mul_epu32(a, k);
    const V odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), k);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  }
  static void store(uint32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<V*>(p), v); }
};
#define GENCORE_PHILOX_LANES 1
#endif

// r0..r3[j] = randint4x(seed, counter0 + j) for j in [0, count): planar output, exact integers.
// Not inlined: it is called once per 256 counters and uses explicit vectors, whatever the caller's
// vectorization options.
__attribute__((noinline)) inline void randint4x_block(uint64_t seed, uint64_t counter0, int64_t count, uint32_t* r0, uint32_t* r1,
                            uint32_t* r2, uint32_t* r3) {
  int64_t j = 0;
#if defined(GENCORE_PHILOX_LANES)
  using L = CounterLanes;
  using V = L::V;
  constexpr int kVectors = 4;  // independent dependency chains in flight: hides the multiply latency
  constexpr int64_t kStep = kVectors * L::kWidth;
  const V mul_a = L::set1(kRoundA), mul_b = L::set1(kRoundB), iota = L::iota();
  for (; j + kStep <= count; j += kStep) {
    const uint64_t base = counter0 + static_cast<uint64_t>(j);
    if (static_cast<uint32_t>(base) > 0xFFFFFFFFu - (kStep - 1)) {  // the low word wraps in this step:
      for (int64_t i = j; i < j + kStep; ++i) {                   // rare (every 2^32 counters), portable path
        randint4x(seed, counter0 + static_cast<uint64_t>(i), r0[i], r1[i], r2[i], r3[i]);
      }
      continue;
    }
    V c0[kVectors], c1[kVectors], c2[kVectors], c3[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      c0[v] = L::add(L::set1(static_cast<uint32_t>(base) + static_cast<uint32_t>(v * L::kWidth)), iota);
      c1[v] = L::set1(static_cast<uint32_t>(base >> 32));
      c2[v] = L::set1(0);
      c3[v] = L::set1(0);
    }
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < kRounds; ++round) {
      const V key0 = L::set1(k0), key1 = L::set1(k1);
      for (int v = 0; v < kVectors; ++v) {
        V hi_b, lo_b, hi_a, lo_a;
        L::mulhilo(c2[v], mul_b, hi_b, lo_b);
        L::mulhilo(c0[v], mul_a, hi_a, lo_a);
        c0[v] = L::xor3(hi_b, c1[v], key0);
        c2[v] = L::xor3(hi_a, c3[v], key1);
        c1[v] = lo_b;
        c3[v] = lo_a;
      }
      k0 += kKeyA;
      k1 += kKeyB;
    }
    for (int v = 0; v < kVectors; ++v) {
      const int64_t at = j + v * L::kWidth;
      L::store(r0 + at, c0[v]);
      L::store(r1 + at, c1[v]);
      L::store(r2 + at, c2[v]);
      L::store(r3 + at, c3[v]);
    }
  }
#endif
  for (int64_t i = j; i < count; ++i) {
    randint4x(seed, counter0 + static_cast<uint64_t>(i), r0[i], r1[i], r2[i], r3[i]);
  }
}

// Box-Muller is compute-bound (log, sqrt, sincos): on AVX-512 machines it runs ~1.3-1.5x faster with
// 512-bit vectors than with GCC's default 256-bit preference, so only this loop asks for them. It is a
// separate function because inlined next to randint4x_block it compiles to slower code (measured 1.3x).
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#define GENCORE_WIDE_VECTORS __attribute__((noinline, target("prefer-vector-width=512")))
#else
#define GENCORE_WIDE_VECTORS __attribute__((noinline))
#endif

// out[4j + k] = the normals of the integers r0..r3[j] (randn4x's Box-Muller), for j in [0, count).
GENCORE_WIDE_VECTORS inline void normals_from_ints(const uint32_t* __restrict__ r0, const uint32_t* __restrict__ r1,
                                                   const uint32_t* __restrict__ r2, const uint32_t* __restrict__ r3,
                                                   int64_t count, float* __restrict__ out) {
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) {
    pair_uniform_to_normal(uint_to_uniform_float(r0[j]), uint_to_uniform_float(r1[j]), out[4 * j], out[4 * j + 1]);
    pair_uniform_to_normal(uint_to_uniform_float(r2[j]), uint_to_uniform_float(r3[j]), out[4 * j + 2],
                           out[4 * j + 3]);
  }
}
#undef GENCORE_WIDE_VECTORS

// out[4j + k] = randn4x(seed, counter0 + j)[k] for j in [0, count), through L1-resident chunks.
inline void randn4x_block(uint64_t seed, uint64_t counter0, int64_t count, float* out) {
  constexpr int64_t kChunk = 256;  // counters per pass: 4 KiB of integers
  alignas(64) uint32_t r[4 * kChunk];
  for (int64_t c = 0; c < count; c += kChunk) {
    const int64_t m = count - c < kChunk ? count - c : kChunk;
    randint4x_block(seed, counter0 + static_cast<uint64_t>(c), m, r, r + kChunk, r + 2 * kChunk, r + 3 * kChunk);
    normals_from_ints(r, r + kChunk, r + 2 * kChunk, r + 3 * kChunk, m, out + 4 * c);
  }
}
#endif  // !__CUDACC__

}  // namespace gencore::philox
