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

namespace gencore {

// log(x): x = 2^e * m with m in [sqrt(1/2), sqrt(2)), f = m - 1, degree-9 polynomial (Cephes logf
// coefficients) and e*ln2 added in two parts. Subnormals are rescaled by 2^23 first; x < 0 and NaN give
// NaN, +-0 gives -inf, +inf gives +inf. Accuracy: <= 2 ulp (tests/test_reparameterize.py measures it).
// kSpecialCases = false drops the subnormal, zero, negative, inf and NaN handling: exact for positive
// normal finite x only (Box-Muller's u in [1e-7, 1]), where it halves the generator's cost.
template <bool kSpecialCases = true>
GENCORE_HD float log_f32(float x) {
  const bool tiny = kSpecialCases && x < 1.17549435e-38f;  // subnormal (or <= 0: overwritten below)
  const float xs = tiny ? x * 8388608.0f : x;
  const uint32_t u = float_to_bits(xs);
  int32_t e = static_cast<int32_t>((u >> 23) & 0xffu) - 126 - (tiny ? 23 : 0);
  const float m = bits_to_float((u & 0x007fffffu) | 0x3f000000u);  // in [0.5, 1)
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1 : e;
  const float f = low ? m + m - 1.0f : m - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float ef = static_cast<float>(e);
  float y = p * f * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  float r = f + y;
  r = r + ef * 0.693359375f;
  if constexpr (kSpecialCases) {
    r = x == 0.0f ? -__builtin_inff() : r;
    r = x < 0.0f ? __builtin_nanf("") : r;
    r = x == __builtin_inff() ? x : r;
    r = x != x ? x : r;
  }
  return r;
}

// sin(x) and cos(x) together: x = j*pi/2 + r with a three-part Cody-Waite reduction, Cephes sinf/cosf
// polynomials on |r| <= pi/4, quadrant chosen by j mod 4 without branches. Accuracy: <= 2 ulp of the
// result's magnitude away from the zeros and <= 2 ulp(1) absolute error, for |x| <= 8192 (Box-Muller
// only needs [0, 2*pi)); larger finite |x| gives values in [-1, 1] of decreasing accuracy (meaningless
// beyond ~2^20); +-inf and NaN give NaN. kSpecialCases = false drops the clamps and the inf/NaN
// handling: the same values for finite |x| <= 8192 (Box-Muller's angle is in [0, 2 pi]), at less cost.
template <bool kSpecialCases = true>
GENCORE_HD void sincos_f32(float x, float& sin_out, float& cos_out) {
  float jf = __builtin_rintf(x * 0.636619772367581343f);
  if constexpr (kSpecialCases) {
    jf = jf > 1073741824.0f ? 1073741824.0f : (jf < -1073741824.0f ? -1073741824.0f : jf);  // int-safe
  }
  float r = x - jf * 1.5703125f;
  r = r - jf * 4.837512969970703125e-4f;
  r = r - jf * 7.54978995489188216e-8f;
  if constexpr (kSpecialCases) {  // a no-op wherever the reduction is accurate; keeps huge |x| finite
    r = r > 0.8f ? 0.8f : (r < -0.8f ? -0.8f : r);
  }
  const int32_t q = static_cast<int32_t>(jf);
  const float r2 = r * r;
  float ps = -1.9515295891e-4f;
  ps = ps * r2 + 8.3321608736e-3f;
  ps = ps * r2 - 1.6666654611e-1f;
  ps = ps * r2 * r + r;
  float pc = 2.443315711809948e-5f;
  pc = pc * r2 - 1.388731625493765e-3f;
  pc = pc * r2 + 4.166664568298827e-2f;
  pc = pc * r2 * r2 - 0.5f * r2 + 1.0f;
  const bool swap = (q & 1) != 0;
  float s = swap ? pc : ps;
  float c = swap ? ps : pc;
  s = (q & 2) != 0 ? -s : s;
  c = ((q + 1) & 2) != 0 ? -c : c;
  if constexpr (kSpecialCases) {
    const bool bad = x != x || x == __builtin_inff() || x == -__builtin_inff();
    s = bad ? __builtin_nanf("") : s;
    c = bad ? __builtin_nanf("") : c;
  }
  sin_out = s;
  cos_out = c;
}

}  // namespace gencore
