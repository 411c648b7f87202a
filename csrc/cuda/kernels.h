// CUDA launchers: raw device pointers, sizes and a stream. No torch headers, so plain `nvcc -c` can
// check every kernel on a machine whose PyTorch has no CUDA. Instantiated for float, double, __half
// and __nv_bfloat16; every launcher returns the launch's cudaError_t.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace gencore::cuda {

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
