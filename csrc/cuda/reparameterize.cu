// Reparameterization sampling (DESIGN §3.2, §3.4) on CUDA: one thread per Philox counter, i.e. per
// four consecutive elements, in a grid-stride loop. The generator, log and sincos come from the same
// host/device headers as the CPU kernels (common/philox.h, common/vec_math.h), so CPU and CUDA eps
// agree to float32 rounding; the op is memory-bound on a GPU, so their few extra FMAs over the
// hardware approximations cost nothing. The KL part uses the shared KL term (common/kl_term.h).
#include "common/kl_term.h"
#include "common/philox.h"
#include "cuda/kernels.h"
#include "cuda/scalar_types.cuh"

namespace gencore::cuda {

namespace {
constexpr int64_t kMaxSumBlocks = 1024;

// The [first group, group count] of n elements starting at stream position offset.
struct Groups {
  uint64_t first;
  int64_t lead;  // elements of the first group before element 0
  int64_t count;
};

inline Groups groups_of(int64_t n, uint64_t offset) {
  const int64_t lead = static_cast<int64_t>(offset & 3u);
  return {offset >> 2, lead, (lead + n + 3) >> 2};
}

inline unsigned group_blocks(int64_t groups) { return elementwise_blocks(groups); }

int64_t sum_blocks(int64_t groups) {
  int64_t blocks = (groups + kThreads * 2 - 1) / (kThreads * 2);
  return blocks < 1 ? 1 : (blocks > kMaxSumBlocks ? kMaxSumBlocks : blocks);
}

__device__ __forceinline__ void group_normals(const int64_t* seed, uint64_t counter, float eps[4]) {
  philox::randn4x(static_cast<uint64_t>(*seed), counter, eps[0], eps[1], eps[2], eps[3]);
}

// Mode: 0 = z only, 1 = z and elementwise KL, 2 = z and per-block KL partial sums.
template <typename S, int Mode>
__global__ void forward_kernel(const S* __restrict__ mu, const S* __restrict__ logvar, S* __restrict__ z,
                               S* __restrict__ kl, double* __restrict__ partial, int64_t n, const int64_t* seed,
                               Groups groups) {
  using C = compute_t<S>;
  __shared__ C shared[Mode == 2 ? kThreads : 1];
  C acc = 0;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups.count;
       g += int64_t(gridDim.x) * blockDim.x) {
    float eps[4];
    group_normals(seed, groups.first + static_cast<uint64_t>(g), eps);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * g + k - groups.lead;
      if (i < 0 || i >= n) continue;
      const C m = load(mu[i]), lv = load(logvar[i]);
      const C sd = exp_c(C(0.5) * lv);
      z[i] = store<S>(m + sd * static_cast<C>(eps[k]));
      if (Mode == 1) kl[i] = store<S>(kl_term_from_var<C>(m, lv, sd * sd));
      if (Mode == 2) acc += kl_term_from_var<C>(m, lv, sd * sd);
    }
  }
  if (Mode == 2) {
    const C total = block_sum(acc, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = static_cast<double>(total);
  }
}

template <typename S>
__global__ void final_sum_kernel(const double* __restrict__ partial, int64_t count, double scale,
                                 S* __restrict__ out) {
  __shared__ double shared[kThreads];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) out[0] = store<S>(static_cast<compute_t<S>>(total * scale));
}

// Backward regenerates eps from (seed, offset) rather than recovering it from z: no mu-sized tensor
// besides mu and logvar is kept, and eps is exact (z - mu cancels when std << |mu|).
template <typename S, bool KL>
__global__ void backward_kernel(const S* __restrict__ grad_z, const S* __restrict__ grad_kl, int64_t kl_stride,
                                double scale, const S* __restrict__ mu, const S* __restrict__ logvar,
                                S* __restrict__ dmu, S* __restrict__ dlogvar, int64_t n, const int64_t* seed,
                                Groups groups) {
  using C = compute_t<S>;
  const C s = static_cast<C>(scale);
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups.count;
       g += int64_t(gridDim.x) * blockDim.x) {
    float eps[4];
    group_normals(seed, groups.first + static_cast<uint64_t>(g), eps);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * g + k - groups.lead;
      if (i < 0 || i >= n) continue;
      const C gz = load(grad_z[i]);
      const C sd = exp_c(C(0.5) * load(logvar[i]));
      C dlv = C(0.5) * gz * static_cast<C>(eps[k]) * sd;
      if (KL) {
        const C gk = load(grad_kl[i * kl_stride]) * s;
        dmu[i] = store<S>(gz + kl_grad_mu<C>(gk, load(mu[i])));
        dlv += kl_grad_logvar<C>(gk, sd * sd);
      }
      dlogvar[i] = store<S>(dlv);
    }
  }
}
}  // namespace

int64_t reparameterize_kl_sum_workspace(int64_t n) { return sum_blocks(groups_of(n, 0).count + 1); }

template <typename S>
cudaError_t reparameterize_forward(const S* mu, const S* logvar, S* z, int64_t n, const int64_t* seed,
                                   uint64_t offset, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const Groups groups = groups_of(n, offset);
  forward_kernel<S, 0><<<group_blocks(groups.count), kThreads, 0, stream>>>(mu, logvar, z, nullptr, nullptr, n,
                                                                             seed, groups);
  return cudaGetLastError();
}

template <typename S>
cudaError_t reparameterize_kl_forward_none(const S* mu, const S* logvar, S* z, S* kl, int64_t n,
                                           const int64_t* seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const Groups groups = groups_of(n, offset);
  forward_kernel<S, 1><<<group_blocks(groups.count), kThreads, 0, stream>>>(mu, logvar, z, kl, nullptr, n, seed,
                                                                             groups);
  return cudaGetLastError();
}

template <typename S>
cudaError_t reparameterize_kl_forward_sum(const S* mu, const S* logvar, S* z, double scale, S* kl_out,
                                          double* workspace, int64_t n, const int64_t* seed, uint64_t offset,
                                          cudaStream_t stream) {
  const Groups groups = groups_of(n, offset);
  // The grid depends on n only (not on offset), so the sum's order is fixed for a given shape.
  const int64_t blocks = reparameterize_kl_sum_workspace(n);
  forward_kernel<S, 2><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(mu, logvar, z, nullptr, workspace,
                                                                                 n, seed, groups);
  final_sum_kernel<S><<<1, kThreads, 0, stream>>>(workspace, blocks, scale, kl_out);
  return cudaGetLastError();
}

template <typename S>
cudaError_t reparameterize_backward(const S* grad_z, const S* logvar, S* dlogvar, int64_t n, const int64_t* seed,
                                    uint64_t offset, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const Groups groups = groups_of(n, offset);
  backward_kernel<S, false><<<group_blocks(groups.count), kThreads, 0, stream>>>(
      grad_z, nullptr, 0, 1.0, nullptr, logvar, nullptr, dlogvar, n, seed, groups);
  return cudaGetLastError();
}

template <typename S>
cudaError_t reparameterize_kl_backward(const S* grad_z, const S* grad_kl, int64_t kl_stride, double scale,
                                       const S* mu, const S* logvar, S* dmu, S* dlogvar, int64_t n,
                                       const int64_t* seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const Groups groups = groups_of(n, offset);
  backward_kernel<S, true><<<group_blocks(groups.count), kThreads, 0, stream>>>(
      grad_z, grad_kl, kl_stride, scale, mu, logvar, dmu, dlogvar, n, seed, groups);
  return cudaGetLastError();
}

#define GENCORE_INSTANTIATE_REPARAM(S)                                                                         \
  template cudaError_t reparameterize_forward<S>(const S*, const S*, S*, int64_t, const int64_t*, uint64_t,    \
                                                 cudaStream_t);                                                \
  template cudaError_t reparameterize_backward<S>(const S*, const S*, S*, int64_t, const int64_t*, uint64_t,   \
                                                  cudaStream_t);                                               \
  template cudaError_t reparameterize_kl_forward_none<S>(const S*, const S*, S*, S*, int64_t, const int64_t*,  \
                                                         uint64_t, cudaStream_t);                              \
  template cudaError_t reparameterize_kl_forward_sum<S>(const S*, const S*, S*, double, S*, double*, int64_t,  \
                                                        const int64_t*, uint64_t, cudaStream_t);               \
  template cudaError_t reparameterize_kl_backward<S>(const S*, const S*, int64_t, double, const S*, const S*,  \
                                                     S*, S*, int64_t, const int64_t*, uint64_t, cudaStream_t);
GENCORE_INSTANTIATE_REPARAM(float)
GENCORE_INSTANTIATE_REPARAM(double)
GENCORE_INSTANTIATE_REPARAM(__half)
GENCORE_INSTANTIATE_REPARAM(__nv_bfloat16)
#undef GENCORE_INSTANTIATE_REPARAM

}  // namespace gencore::cuda
