// Test-only C ABI over csrc/common/philox.h and vec_math.h, loaded with ctypes by
// tests/test_reparameterize.py (compiled there with the extension's flags), so the shared header's
// integers and transcendentals are checked directly, not only through the ops.
#include <cstdint>

#include "common/philox.h"

extern "C" {

void probe_log(const float* x, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gencore::log_f32(x[i]);
}

void probe_sincos(const float* x, float* s, float* c, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) gencore::sincos_f32(x[i], s[i], c[i]);
}

void probe_exp(const float* x, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gencore::exp_f32(x[i]);
}

// out[4*i + k] = randint4x(seed, counters[i])[k]
void probe_randint4x(uint64_t seed, const uint64_t* counters, uint32_t* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    gencore::philox::randint4x(seed, counters[i], out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]);
  }
}

// Raw Philox4x32-10 on (counter words, key words), for the Random123 known-answer vectors.
void probe_philox(const uint32_t* ctr, const uint32_t* key, uint32_t* out) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  gencore::philox::philox4x32_10(c0, c1, c2, c3, key[0], key[1]);
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// The CPU block generator: out[4*j + k] = randn4x(seed, counter0 + j)[k] for j in [0, n).
void probe_randn4x_block(uint64_t seed, uint64_t counter0, float* out, int64_t n) {
  gencore::philox::randn4x_block(seed, counter0, n, out);
}

// The transcendentals without special cases (Box-Muller's domain).
void probe_log_unchecked(const float* x, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gencore::log_f32<false>(x[i]);
}

void probe_sincos_unchecked(const float* x, float* s, float* c, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) gencore::sincos_f32<false>(x[i], s[i], c[i]);
}

void probe_randn4x(uint64_t seed, const uint64_t* counters, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    gencore::philox::randn4x(seed, counters[i], out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]);
  }
}
}
