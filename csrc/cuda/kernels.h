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

}  // namespace gencore::cuda
