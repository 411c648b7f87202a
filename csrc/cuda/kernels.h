// CUDA launchers: raw device pointers, sizes and a stream. No torch headers, so plain `nvcc -c` can
// check every kernel on a machine whose PyTorch has no CUDA. Instantiated for float, double, __half
// and __nv_bfloat16; every launcher returns the launch's cudaError_t.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace gencore::cuda {

// The storage type for each torch dtype, as the glue's dispatch_floating (bindings/glue.h) expects
// (the CUDA twin of cpu::storage_types).
struct storage_types {
  using f32 = float;
  using f64 = double;
  using f16 = __half;
  using bf16 = __nv_bfloat16;
};

// ---- KL(N(mu, exp(logvar)) || N(0, 1)) -------------------------------------------------------------
template <typename S>
cudaError_t kl_normal_forward_none(const S* mu, const S* logvar, S* out, int64_t n, cudaStream_t stream);

// Number of doubles of workspace kl_normal_forward_sum needs for n elements.
int64_t kl_normal_sum_workspace(int64_t n);

// out[0] = scale * sum(term). Two deterministic stages (fixed grid for a given n, fixed-order tree
// reductions): no float atomics, so the same input always gives the same bits.
template <typename S>
cudaError_t kl_normal_forward_sum(const S* mu, const S* logvar, double scale, S* out, double* workspace,
                                  int64_t n, cudaStream_t stream);

template <typename S>
cudaError_t kl_normal_backward(const S* grad, int64_t grad_stride, double scale, const S* mu,
                               const S* logvar, S* dmu, S* dlogvar, int64_t n, cudaStream_t stream);

// ---- BatchNorm + LeakyReLU (DESIGN §3.1) ------------------------------------------------------------
// x is viewed as (n, c, s): layout NCS (channels_last == false: x[(i * c + ch) * s + j]) or NSC
// (channels_last == true: x[(i * s + j) * c + ch]), the same convention as the CPU kernels. Per-channel
// arrays (weight, bias, mean, var, grad_weight, grad_bias) have c entries of the statistics type
// bn_stat_t<S> (double for double storage, else float); weight / bias may be null (weight 1, bias 0).
// Split per-channel reductions with fixed-order combines: no atomics, the same input gives the same bits.
template <typename S> struct bn_stat { using type = float; };
template <> struct bn_stat<double> { using type = double; };
template <typename S> using bn_stat_t = typename bn_stat<S>::type;

// Elements of bn_stat_t workspace both launchers below need for these sizes.
int64_t batch_norm_leaky_relu_workspace(int64_t n, int64_t c, int64_t s, bool channels_last);

// training == true: batch mean and *biased* variance into mean / var, then normalize with them;
// training == false: normalize with mean / var as given (the running statistics).
// y = leaky_relu((x - mean) / sqrt(var + eps) * weight + bias, slope). y may equal x (in-place mode).
template <typename S>
cudaError_t batch_norm_leaky_relu_forward(const S* x, S* y, const bn_stat_t<S>* weight, const bn_stat_t<S>* bias,
                                          bn_stat_t<S>* mean, bn_stat_t<S>* var, int64_t n, int64_t c, int64_t s,
                                          bool channels_last, bool training, double eps, double slope,
                                          bn_stat_t<S>* workspace, cudaStream_t stream);

// Backward. from_output == false: `in` is the forward input x; true: `in` is the forward output y
// (memory-saving mode, slope > 0): z = y > 0 ? y : y / slope, x̂ = (z - bias) / weight. Writes
// dx (not aliasing dy or in), grad_weight = Σ dz·x̂ and grad_bias = Σ dz, dz = dy · (pre > 0 ? 1 : slope).
// With from_output, channels whose weight is 0 get dx = 0 (exact) and a non-finite grad_weight.
template <typename S>
cudaError_t batch_norm_leaky_relu_backward(const S* dy, const S* in, bool from_output, const bn_stat_t<S>* weight,
                                           const bn_stat_t<S>* bias, const bn_stat_t<S>* mean,
                                           const bn_stat_t<S>* var, S* dx, bn_stat_t<S>* grad_weight,
                                           bn_stat_t<S>* grad_bias, int64_t n, int64_t c, int64_t s,
                                           bool channels_last, bool training, double eps, double slope,
                                           bn_stat_t<S>* workspace, cudaStream_t stream);

// ---- Reparameterization z = mu + exp(0.5 * logvar) * eps (eps: common/philox.h, read from `seed`) ---
// seed points to one int64 on the device (drawn there by torch.randint: no host synchronization).
// eps of element i is philox::randn4x(*seed, (offset + i) >> 2)[(offset + i) & 3], as on the CPU.
template <typename S>
cudaError_t reparameterize_forward(const S* mu, const S* logvar, S* z, int64_t n, const int64_t* seed,
                                   uint64_t offset, cudaStream_t stream);

template <typename S>
cudaError_t reparameterize_backward(const S* grad_z, const S* logvar, S* dlogvar, int64_t n, const int64_t* seed,
                                    uint64_t offset, cudaStream_t stream);

template <typename S>
cudaError_t reparameterize_kl_forward_none(const S* mu, const S* logvar, S* z, S* kl, int64_t n,
                                           const int64_t* seed, uint64_t offset, cudaStream_t stream);

// Number of doubles of workspace reparameterize_kl_forward_sum needs for n elements.
int64_t reparameterize_kl_sum_workspace(int64_t n);

// z, and kl_out[0] = scale * sum of the KL terms: fixed grid for a given n, fixed-order tree sums.
template <typename S>
cudaError_t reparameterize_kl_forward_sum(const S* mu, const S* logvar, S* z, double scale, S* kl_out,
                                          double* workspace, int64_t n, const int64_t* seed, uint64_t offset,
                                          cudaStream_t stream);

template <typename S>
cudaError_t reparameterize_kl_backward(const S* grad_z, const S* grad_kl, int64_t kl_stride, double scale,
                                       const S* mu, const S* logvar, S* dmu, S* dlogvar, int64_t n,
                                       const int64_t* seed, uint64_t offset, cudaStream_t stream);

}  // namespace gencore::cuda
