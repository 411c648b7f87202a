// Storage types of the CPU kernels and their conversion to and from the float32 compute type.
// float16 is GCC's native _Float16 (F16C / AVX-512 FP16 conversions when the target has them);
// bfloat16 is a plain 16-bit pattern converted by shifts, which vectorizes everywhere.
#pragma once
#include <cstdint>

#include "common/vec_math.h"

namespace gencore::cpu {

struct bfloat16 {
  uint16_t bits;
};
using float16 = _Float16;

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
inline float load(float16 v) { return static_cast<float>(v); }
inline float load(bfloat16 v) { return bits_to_float(static_cast<uint32_t>(v.bits) << 16); }

template <typename S> inline S store(compute_t<S> v);
template <> inline float store<float>(float v) { return v; }
template <> inline double store<double>(double v) { return v; }
template <> inline float16 store<float16>(float v) { return static_cast<float16>(v); }
template <> inline bfloat16 store<bfloat16>(float v) {
  // Round to nearest even; NaN stays a (quiet) NaN.
  uint32_t u = float_to_bits(v);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = (u >> 16) | 0x40u;
  return bfloat16{static_cast<uint16_t>(v != v ? nan : rounded)};
}

// exp in the compute type: the vectorizable float32 version, libm for double (gradcheck path).
inline float exp_c(float x) { return exp_f32(x); }
inline double exp_c(double x) { return __builtin_exp(x); }

}  // namespace gencore::cpu
