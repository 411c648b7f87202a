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

// ---- BatchNorm + LeakyReLU (DESIGN §3.1) ------------------------------------------------------------
// x is viewed as (n, c, s): layout NCS (channels_last == false: x[(i * c + ch) * s + j]) or NSC
// (channels_last == true: x[(i * s + j) * c + ch]). Per-channel arrays (weight, bias, mean, var,
// grad_weight, grad_bias) have c entries of the compute type (float, or double for double storage);
// weight / bias may be null (affine=False: weight 1, bias 0).
//
// Forward: training == true computes the batch mean and *biased* variance into mean / var, then
// normalizes with them; training == false reads mean / var (the running statistics) and normalizes.
// y = leaky_relu((x - mean) / sqrt(var + eps) * weight + bias, slope); slope == 0 is ReLU exactly
// (relu(-inf) = 0). y may equal x (in-place mode).
template <typename S>
void batch_norm_leaky_relu_forward(const S* x, S* y, const compute_t<S>* weight, const compute_t<S>* bias,
                                   compute_t<S>* mean, compute_t<S>* var, int64_t n, int64_t c, int64_t s,
                                   bool channels_last, bool training, double eps, double slope);

// Backward. from_output == false: `in` is the forward input x. from_output == true: `in` is the forward
// output y (in-place mode, slope > 0), from which z = y > 0 ? y : y / slope and x̂ = (z - bias) / weight
// are rebuilt; channels whose weight is 0 give non-finite results there (the caller recomputes them).
// mean / var are the statistics the forward normalized with. Writes dx (not aliasing dy or in),
// grad_weight = Σ dz·x̂, grad_bias = Σ dz, where dz = dy · (pre > 0 ? 1 : slope).
template <typename S>
void batch_norm_leaky_relu_backward(const S* dy, const S* in, bool from_output, const compute_t<S>* weight,
                                    const compute_t<S>* bias, const compute_t<S>* mean,
                                    const compute_t<S>* var, S* dx, compute_t<S>* grad_weight,
                                    compute_t<S>* grad_bias, int64_t n, int64_t c, int64_t s,
                                    bool channels_last, bool training, double eps, double slope);

}  // namespace gencore::cpu

// ---- Reparameterization z = mu + exp(0.5 * logvar) * eps, eps from Philox (csrc/common/philox.h) ---
// eps of element i is philox::randn4x(seed, (offset + i) >> 2)[(offset + i) & 3]: a function of
// (seed, offset, i) only, so neither the thread count nor the block size changes it. No eps is stored:
// the backward kernels regenerate it from the same (seed, offset).
namespace gencore::cpu {

template <typename S>
void reparameterize_forward(const S* mu, const S* logvar, S* z, int64_t n, uint64_t seed, uint64_t offset);

// dlogvar = 0.5 * grad_z * eps * exp(0.5 * logvar)  (dmu is grad_z itself)
template <typename S>
void reparameterize_backward(const S* grad_z, const S* logvar, S* dlogvar, int64_t n, uint64_t seed,
                             uint64_t offset);

// z as above and, in the same pass, kl[i] = KL term of element i (reduction 'none').
template <typename S>
void reparameterize_kl_forward_none(const S* mu, const S* logvar, S* z, S* kl, int64_t n, uint64_t seed,
                                    uint64_t offset);

// z as above and the sum of the KL terms, accumulated like kl_normal_forward_sum (fixed chunks, double
// across chunks in chunk order): independent of the thread count.
template <typename S>
double reparameterize_kl_forward_sum(const S* mu, const S* logvar, S* z, int64_t n, uint64_t seed,
                                     uint64_t offset);

// dmu = grad_z + kl_grad_mu(gk, mu), dlogvar = 0.5 * grad_z * eps * std + kl_grad_logvar(gk, std^2),
// with gk = grad_kl[i * kl_stride] * scale (kl_stride 0: reduced KL).
template <typename S>
void reparameterize_kl_backward(const S* grad_z, const S* grad_kl, int64_t kl_stride, double scale, const S* mu,
                                const S* logvar, S* dmu, S* dlogvar, int64_t n, uint64_t seed, uint64_t offset);

}  // namespace gencore::cpu
