// CPU kernels: raw pointers and sizes only. Each is instantiated for float, double, float16, bfloat16.
#pragma once
#include <cstdint>

#include "cpu/scalar_types.h"

namespace gencore::cpu {

// ---- KL(N(mu, exp(logvar)) || N(0, 1)) -------------------------------------------------------------
// out[i] = -0.5 * (1 + logvar[i] - mu[i]^2 - exp(logvar[i]))
template <typename S>
void kl_normal_forward_none(const S* mu, const S* logvar, S* out, int64_t n);

// Sum of the elementwise term, accumulated in float32 lanes inside fixed 16Ki-element chunks and in
// double across chunks, in chunk order: the result does not depend on the number of threads.
template <typename S>
double kl_normal_forward_sum(const S* mu, const S* logvar, int64_t n);

// dmu = g * scale * mu, dlogvar = 0.5 * g * scale * (exp(logvar) - 1), with g = grad[i * grad_stride]
// (grad_stride 0: one scalar gradient for a reduced loss).
template <typename S>
void kl_normal_backward(const S* grad, int64_t grad_stride, double scale, const S* mu, const S* logvar,
                        S* dmu, S* dlogvar, int64_t n);

}  // namespace gencore::cpu
