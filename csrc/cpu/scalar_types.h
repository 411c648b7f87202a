// Storage types of the CPU kernels and their conversion to and from the float32 compute type.
// float16 and bfloat16 are plain 16-bit patterns converted by branch-free integer and float operations,
// which vectorize everywhere. (GCC 12 does not vectorize loops over _Float16 even with AVX-512 FP16:
// every conversion was a scalar instruction, measured 40 ns/element in reparameterize_kl vs 5 for
// float32; the bit-pattern versions are as fast as bfloat16's.)
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/vec_math.h"

namespace gencore::cpu {

struct bfloat16 {
  uint16_t bits;
};
struct float16 {  // IEEE binary16, as at::Half
  uint16_t bits;
};

// The storage type for each torch dtype, as the glue's dispatch_floating (bindings/glue.h) expects.
struct storage_types {
  using f32 = float;
  using f64 = double;
  using f16 = float16;
  using bf16 = bfloat16;
};

// Compute type: double for double storage, float otherwise.
template <typename S> struct compute_type { using type = float; };
template <> struct compute_type<double> { using type = double; };
template <typename S> using compute_t = typename compute_type<S>::type;

inline float load(float v) { return v; }
inline double load(double v) { return v; }
// Exact: normals rebias the exponent, subnormals are mantissa * 2^-24, built as (0.5 + m * 2^-24) - 0.5
// in float32 (no denormal arithmetic, so flush-to-zero modes cannot change it; no int->float conversion,
// which GCC 12 fails to vectorize in some reduction loops), inf and NaN keep their payload bits.
inline float load(float16 v) {
  const uint32_t em = v.bits & 0x7fffu;
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  const uint32_t subnormal = float_to_bits(bits_to_float(0x3f000000u | em) - 0.5f);
  const uint32_t special = (em << 13) | 0x7f800000u;
  const uint32_t normal = (em << 13) + 0x38000000u;  // exponent bias 15 -> 127
  return bits_to_float(sign | (em < 0x400u ? subnormal : (em >= 0x7c00u ? special : normal)));
}
inline float load(bfloat16 v) { return bits_to_float(static_cast<uint32_t>(v.bits) << 16); }

template <typename S> inline S store(compute_t<S> v);
template <> inline float store<float>(float v) { return v; }
template <> inline double store<double>(double v) { return v; }
// Round to nearest even, as at::Half: overflow gives inf, NaN a quiet NaN. Results below the smallest
// normal half add 0.5f, whose ulp is the half subnormal step, so the float adder does the rounding.
template <> inline float16 store<float16>(float v) {
  const uint32_t u = float_to_bits(v);
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t big = a > 0x7f800000u ? 0x7e00u : 0x7c00u;
  const uint32_t small = float_to_bits(bits_to_float(a) + 0.5f) - 0x3f000000u;
  const uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;  // rebias 127 -> 15, round on 13 bits
  const uint32_t h = a >= 0x47800000u ? big : (a < 0x38800000u ? small : normal);
  return float16{static_cast<uint16_t>(h | sign)};
}
template <> inline bfloat16 store<bfloat16>(float v) {
  // Round to nearest even; NaN stays a (quiet) NaN.
  uint32_t u = float_to_bits(v);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = (u >> 16) | 0x40u;
  return bfloat16{static_cast<uint16_t>(v != v ? nan : rounded)};
}

// Two bfloat16 values in one 32-bit word, the first value in the low half (memory order on a
// little-endian machine). Loops that read bfloat16 data as pairs keep every value in a 32-bit lane
// without any shuffle: the low value is word << 16 and the high one word & 0xffff0000, and two rounded
// results merge with a shift and a bitwise select. Read one at a time, 16-bit values need a widening
// and a narrowing shuffle per vector, which with 512-bit vectors run on one port (VPMOVZXWD, VPERMT2W:
// 3 uops). Measured 2026-11-29, one thread, data in L1, ns per value: normalize 0.28 -> 0.19,
// statistics sums 0.105 -> 0.079, backward dx 0.37 -> 0.28. (float16 as pairs was not faster: its
// conversions dominate.) The kernels read bfloat16 tensors through this type, never the same memory
// as both types in one function. It is not marked may_alias: GCC then kept the unit in memory inside
// OpenMP simd loops and vectorized none of them.
struct bfloat16_pair {
  uint32_t bits;
};
template <>
struct compute_type<bfloat16_pair> {
  using type = float;
};

// How a loop sees one storage unit: kValues values, value(v, e) is the e-th. map(f, x, k...) is the unit
// of f(value, k...) for each value of x, map2(f, x, y, k...) that of f(value of x, value of y, k...).
// (f is called per value rather than filling an array of results: OpenMP simd loops keep a local array
// in memory, one copy per lane, and GCC then does not vectorize them.)
template <typename S>
struct units {
  using C = compute_t<S>;
  static constexpr int kValues = 1;
  static C value(S v, int) { return load(v); }
  template <typename F, typename... K>
  static S map(F&& f, S x, K... k) {
    return store<S>(f(load(x), k...));
  }
  template <typename F, typename... K>
  static S map2(F&& f, S x, S y, K... k) {
    return store<S>(f(load(x), load(y), k...));
  }
};
template <>
struct units<bfloat16_pair> {
  using S = bfloat16_pair;
  static constexpr int kValues = 2;
  static float value(S v, int e) { return bits_to_float(e == 0 ? v.bits << 16 : v.bits & 0xffff0000u); }
  static S join(bfloat16 lo, bfloat16 hi) {
    S out;
    out.bits = static_cast<uint32_t>(lo.bits) | (static_cast<uint32_t>(hi.bits) << 16);
    return out;
  }
  template <typename F, typename... K>
  static S map(F&& f, S x, K... k) {
    return join(store<bfloat16>(f(value(x, 0), k...)), store<bfloat16>(f(value(x, 1), k...)));
  }
  template <typename F, typename... K>
  static S map2(F&& f, S x, S y, K... k) {
    return join(store<bfloat16>(f(value(x, 0), value(y, 0), k...)),
                store<bfloat16>(f(value(x, 1), value(y, 1), k...)));
  }
};

// exp in the compute type: the vectorizable float32 version, libm for double (gradcheck path).
inline float exp_c(float x) { return exp_f32(x); }
inline double exp_c(double x) { return __builtin_exp(x); }

// Calls f(stride) with the stride of a loss gradient as a compile-time constant: 0 (a reduced loss:
// one value read by every element) or 1 (reduction='none'). With a runtime stride GCC vectorized the
// load `grad[i * stride]` as eight scalar inserts per vector, a gather that cost more than the rest of
// the reparameterize_kl backward loop (perf annotate, 128 x 128); with a constant it is a broadcast
// or a plain vector load.
template <typename F>
inline void with_grad_stride(int64_t stride, F&& f) {
  if (stride == 0) {
    f(std::integral_constant<int64_t, 0>{});
  } else {
    f(std::integral_constant<int64_t, 1>{});
  }
}

}  // namespace gencore::cpu
