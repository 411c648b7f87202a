// Test-only C ABI over csrc/cpu/scalar_types.h, loaded with ctypes by tests/test_scalar_types.py
// (compiled there with the extension's flags): the 16-bit storage conversions of the CPU kernels.
#include <cstdint>

#include "cpu/scalar_types.h"

extern "C" {

void probe_half_to_float(const uint16_t* in, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gencore::cpu::load(gencore::cpu::float16{in[i]});
}

void probe_float_to_half(const float* in, uint16_t* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gencore::cpu::store<gencore::cpu::float16>(in[i]).bits;
}

void probe_bfloat16_to_float(const uint16_t* in, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gencore::cpu::load(gencore::cpu::bfloat16{in[i]});
}

void probe_float_to_bfloat16(const float* in, uint16_t* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gencore::cpu::store<gencore::cpu::bfloat16>(in[i]).bits;
}
}
