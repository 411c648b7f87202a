// Branch-free float32 transcendentals that GCC/Clang auto-vectorize inside `#pragma omp simd` loops.
// Why our own: glibc only exposes its vector math (libmvec) under -ffast-math, and -ffast-math would
// break NaN/Inf propagation, which the op contracts require. Accuracy: <= 2 ulp over the full range.
// Header-only and host/device neutral (no libc calls besides builtins), so CUDA code may include it,
// although CUDA kernels prefer the hardware intrinsics.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define GENCORE_HD __host__ __device__ __forceinline__
#else
#define GENCORE_HD inline __attribute__((always_inline))
#endif

namespace gencore {

GENCORE_HD float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

GENCORE_HD uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// 2^k for integer-valued k in [-126, 127] (a normal float), built directly in the exponent bits.
GENCORE_HD float pow2_int(int32_t k) { return bits_to_float(static_cast<uint32_t>(k + 127) << 23); }

// exp(x): Cody-Waite reduction x = k*ln2 + r, degree-6 minimax polynomial on |r| <= ln2/2,
// and 2^k applied as two factors so k = 128 (x near the overflow edge) and subnormal results work.
GENCORE_HD float exp_f32(float x) {
  const float kMax = 88.72283935546875f;    // above: +inf
  const float kMin = -103.97208404541016f;  // below: 0
  float xc = x < kMin ? kMin : (x > kMax ? kMax : x);
  float kf = __builtin_rintf(xc * 1.44269504088896341f);
  float r = xc - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  int32_t k = static_cast<int32_t>(kf);
  int32_t k1 = k >> 1;
  y = y * pow2_int(k1) * pow2_int(k - k1);
  y = x > kMax ? __builtin_inff() : y;
  y = x < kMin ? 0.0f : y;
  return x != x ? x : y;  // NaN in, NaN out
}

}  // namespace gencore
