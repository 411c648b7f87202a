#include "common/kl_term.h"
#include "cuda/kernels.h"
#include "cuda/scalar_types.cuh"

namespace gencore::cuda {

namespace {
constexpr int64_t kMaxSumBlocks = 1024;

template <typename C>
__device__ __forceinline__ C kl_term(C m, C lv) {
  return kl_term_from_var<C>(m, lv, exp_c(lv));
}

int64_t sum_blocks(int64_t n) {
  int64_t blocks = (n + kThreads * 4 - 1) / (kThreads * 4);
  return blocks < 1 ? 1 : (blocks > kMaxSumBlocks ? kMaxSumBlocks : blocks);
}

template <typename S>
__global__ void kl_none_kernel(const S* __restrict__ mu, const S* __restrict__ logvar, S* __restrict__ out,
                               int64_t n) {
  using C = compute_t<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = store<S>(kl_term<C>(load(mu[i]), load(logvar[i])));
  }
}

template <typename S>
__global__ void kl_partial_sum_kernel(const S* __restrict__ mu, const S* __restrict__ logvar,
                                      double* __restrict__ partial, int64_t n) {
  using C = compute_t<S>;
  __shared__ C shared[kThreads];
  C acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    acc += kl_term<C>(load(mu[i]), load(logvar[i]));
  }
  C total = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = static_cast<double>(total);
}

template <typename S>
__global__ void kl_final_sum_kernel(const double* __restrict__ partial, int64_t count, double scale,
                                    S* __restrict__ out) {
  __shared__ double shared[kThreads];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  double total = block_sum(acc, shared);
  if (threadIdx.x == 0) out[0] = store<S>(static_cast<compute_t<S>>(total * scale));
}

template <typename S>
__global__ void kl_backward_kernel(const S* __restrict__ grad, int64_t grad_stride, double scale,
                                   const S* __restrict__ mu, const S* __restrict__ logvar, S* __restrict__ dmu,
                                   S* __restrict__ dlogvar, int64_t n) {
  using C = compute_t<S>;
  const C s = static_cast<C>(scale);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const C g = load(grad[i * grad_stride]) * s;
    dmu[i] = store<S>(kl_grad_mu<C>(g, load(mu[i])));
    dlogvar[i] = store<S>(kl_grad_logvar<C>(g, exp_c(load(logvar[i]))));
  }
}
}  // namespace

int64_t kl_normal_sum_workspace(int64_t n) { return sum_blocks(n); }

template <typename S>
cudaError_t kl_normal_forward_none(const S* mu, const S* logvar, S* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  kl_none_kernel<S><<<elementwise_blocks(n), kThreads, 0, stream>>>(mu, logvar, out, n);
  return cudaGetLastError();
}

template <typename S>
cudaError_t kl_normal_forward_sum(const S* mu, const S* logvar, double scale, S* out, double* workspace,
                                  int64_t n, cudaStream_t stream) {
  const int64_t blocks = sum_blocks(n);
  kl_partial_sum_kernel<S><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(mu, logvar, workspace, n);
  kl_final_sum_kernel<S><<<1, kThreads, 0, stream>>>(workspace, blocks, scale, out);
  return cudaGetLastError();
}

template <typename S>
cudaError_t kl_normal_backward(const S* grad, int64_t grad_stride, double scale, const S* mu,
                               const S* logvar, S* dmu, S* dlogvar, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  kl_backward_kernel<S><<<elementwise_blocks(n), kThreads, 0, stream>>>(grad, grad_stride, scale, mu, logvar,
                                                                         dmu, dlogvar, n);
  return cudaGetLastError();
}

#define GENCORE_INSTANTIATE_KL(S)                                                                        \
  template cudaError_t kl_normal_forward_none<S>(const S*, const S*, S*, int64_t, cudaStream_t);         \
  template cudaError_t kl_normal_forward_sum<S>(const S*, const S*, double, S*, double*, int64_t,        \
                                                cudaStream_t);                                           \
  template cudaError_t kl_normal_backward<S>(const S*, int64_t, double, const S*, const S*, S*, S*, int64_t, \
                                             cudaStream_t);
GENCORE_INSTANTIATE_KL(float)
GENCORE_INSTANTIATE_KL(double)
GENCORE_INSTANTIATE_KL(__half)
GENCORE_INSTANTIATE_KL(__nv_bfloat16)
#undef GENCORE_INSTANTIATE_KL

}  // namespace gencore::cuda
