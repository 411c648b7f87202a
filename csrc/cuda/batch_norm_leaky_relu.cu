// Fused BatchNorm + LeakyReLU on CUDA (DESIGN §3.1, docs/batch_norm_leaky_relu_gpu.md).
//
// x is viewed as (n, c, s) in one of two layouts:
//   NCS (contiguous): one block group per channel; the channel's n*s values are cut into chunks of the
//       flattened (i, j) index, each block walks its chunk with a cursor (no division per element).
//   NSC (channels-last): rows of c values; a block owns up to kThreads channels (one column per thread,
//       several row groups when c is small) and a chunk of rows.
// Reductions are split: one block per (channel group, chunk) writes a partial (Welford n/mean/M2 for the
// statistics, Σdz and Σdz·x̂ for backward), then one thread per channel merges the chunks in a fixed
// order. Chunk counts depend on the sizes only, and every tree has a fixed shape: no atomics, the same
// input gives the same bits. Loads and stores are 16-byte vectors when the rows (NCS) or channel runs
// (NSC) are multiples of the vector and the pointers are aligned.
#include <cstdint>
#include <type_traits>

#include "cuda/kernels.h"
#include "cuda/scalar_types.cuh"

namespace gencore::cuda {

namespace {
// Aim for about this many blocks in the split passes (a few waves on current GPUs), but never a chunk
// of fewer than kMinChunkElems values.
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kMinChunkElems = 4096;
// NCS chunk lengths are multiples of this (the widest vector, 8 halves), so chunks start on a vector.
constexpr int64_t kChunkAlign = 8;

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// How a launch walks the tensor; a function of the sizes only.
struct Plan {
  int64_t n, c, s, m;  // m = n * s values per channel
  bool channels_last;
  int64_t groups;      // NCS: c (one per channel); NSC: channel blocks of kThreads channels
  int64_t chunks;      // chunks per group
  int64_t chunk_len;   // NCS: values of the flattened (i, j) index per chunk; NSC: rows per chunk
};

Plan make_plan(int64_t n, int64_t c, int64_t s, bool channels_last) {
  Plan p{n, c, s, n * s, channels_last, 0, 1, 1};
  if (channels_last) {
    p.groups = cdiv(c, kThreads);
    const int64_t width = c < kThreads ? c : kThreads;
    const int64_t most = cdiv(p.m * width, kMinChunkElems);
    int64_t chunks = p.groups > 0 ? cdiv(kTargetBlocks, p.groups) : 1;
    chunks = chunks > most ? most : chunks;
    p.chunk_len = cdiv(p.m, chunks < 1 ? 1 : chunks);
    if (p.chunk_len < 1) p.chunk_len = 1;
  } else {
    p.groups = c;
    const int64_t most = cdiv(p.m, kMinChunkElems);
    int64_t chunks = c > 0 ? cdiv(kTargetBlocks, c) : 1;
    chunks = chunks > most ? most : chunks;
    p.chunk_len = cdiv(cdiv(p.m, chunks < 1 ? 1 : chunks), kChunkAlign) * kChunkAlign;
    if (p.chunk_len < kChunkAlign) p.chunk_len = kChunkAlign;
  }
  p.chunks = cdiv(p.m, p.chunk_len);
  if (p.chunks < 1) p.chunks = 1;
  return p;
}

// ---- vectors ----------------------------------------------------------------------------------------
template <typename S, int VEC>
struct alignas(sizeof(S) * VEC) Pack {
  S v[VEC];
};

template <typename S, int VEC>
__device__ __forceinline__ Pack<S, VEC> load_pack(const S* p) {
  return *reinterpret_cast<const Pack<S, VEC>*>(p);
}

template <typename S, int VEC>
__device__ __forceinline__ void store_pack(S* p, const Pack<S, VEC>& v) {
  *reinterpret_cast<Pack<S, VEC>*>(p) = v;
}

// ---- per-thread states and their fixed-order merges ---------------------------------------------------
template <typename T>
struct Welford {
  T n, mean, m2;
};

template <typename T>
__device__ __forceinline__ void welford_add(Welford<T>& a, T v) {
  a.n += T(1);
  const T d = v - a.mean;
  a.mean += d / a.n;
  a.m2 += d * (v - a.mean);
}

// Chan et al.: exact merge of two (count, mean, M2) summaries.
template <typename T>
__device__ __forceinline__ Welford<T> merge(const Welford<T>& a, const Welford<T>& b) {
  const T n = a.n + b.n;
  if (n == T(0)) return a;
  const T delta = b.mean - a.mean;
  const T frac = b.n / n;
  return {n, a.mean + delta * frac, a.m2 + b.m2 + delta * delta * a.n * frac};
}

template <typename T>
struct Sums {
  T dz, dz_xhat;  // Σ dz and Σ dz·x̂, dz = dy · (pre > 0 ? 1 : slope)
};

template <typename T>
__device__ __forceinline__ Sums<T> merge(const Sums<T>& a, const Sums<T>& b) {
  return {a.dz + b.dz, a.dz_xhat + b.dz_xhat};
}

// Tree over the `rows` row groups of a block whose thread t is (row group t / width, column t % width):
// afterwards row group 0 holds each column's merge. Fixed shape, so deterministic. All threads call it.
template <typename V>
__device__ __forceinline__ V tree_reduce(V v, V* shared, int row, int width, int rows) {
  const int t = threadIdx.x;
  shared[t] = v;
  __syncthreads();
  int span = 1;
  while (span < rows) span <<= 1;
  for (int stride = span >> 1; stride > 0; stride >>= 1) {
    if (row < stride && row + stride < rows) shared[t] = merge(shared[t], shared[t + stride * width]);
    __syncthreads();
  }
  const V out = shared[t];
  __syncthreads();  // shared is reused by the next call
  return out;
}

// ---- per-channel parameters and the activation ------------------------------------------------------
template <typename T>
struct Channel {
  T mean, invstd, weight, bias;
};

template <typename T>
__device__ __forceinline__ Channel<T> channel(const T* mean, const T* var, const T* weight, const T* bias,
                                              int64_t ch, T eps) {
  return {mean[ch], T(1) / sqrt(var[ch] + eps), weight ? weight[ch] : T(1), bias ? bias[ch] : T(0)};
}

// x̂ and the activation mask (pre > 0), from x or, in the memory-saving mode, from y (slope > 0: y > 0
// exactly where pre > 0; pre == 0 takes the slope branch, as torch's leaky_relu backward).
template <typename T>
__device__ __forceinline__ T xhat_of(T v, const Channel<T>& p, T slope, bool from_output, bool& positive) {
  if (from_output) {
    positive = v > T(0);
    const T z = positive ? v : v / slope;
    return (z - p.bias) / p.weight;
  }
  const T xhat = (v - p.mean) * p.invstd;
  const T pre = xhat * p.weight + p.bias;  // same expression as the forward
  // ReLU (slope == 0) is torch's threshold_backward: only pre <= 0 is blocked, so NaN passes.
  positive = slope == T(0) ? !(pre <= T(0)) : pre > T(0);
  return xhat;
}

// torch's activations: relu(-inf) = 0 (not -inf * 0 = NaN), NaN passes through both.
template <typename T>
__device__ __forceinline__ T activate(T pre, T slope) {
  if (slope == T(0)) return pre <= T(0) ? T(0) : pre;
  return pre > T(0) ? pre : pre * slope;
}

// dz; for ReLU exactly 0 where blocked, even for an inf/NaN dy.
template <typename T>
__device__ __forceinline__ T activation_grad(T dy, bool positive, T slope) {
  return positive ? dy : (slope == T(0) ? T(0) : dy * slope);
}

// ---- walks ------------------------------------------------------------------------------------------
// NCS: calls f(offset) for each VEC-wide unit of channel ch's chunk k owned by this thread. The cursor
// (i, j) advances by blockDim per step with one compare instead of a division.
template <int VEC, typename F>
__device__ __forceinline__ void walk_ncs(const Plan& p, int64_t ch, int64_t k, F&& f) {
  const int64_t sv = p.s / VEC;
  const int64_t begin = k * p.chunk_len / VEC;
  const int64_t stop = (k + 1) * p.chunk_len < p.m ? (k + 1) * p.chunk_len : p.m;
  const int64_t end = stop / VEC;
  int64_t u = begin + threadIdx.x;
  if (u >= end) return;
  int64_t i = u / sv;
  int64_t j = u - i * sv;
  const int64_t step_i = blockDim.x / sv;
  const int64_t step_j = blockDim.x - step_i * sv;
  const int64_t row = p.c * p.s;
  const int64_t base = ch * p.s;
  for (; u < end; u += blockDim.x) {
    f(i * row + base + j * VEC);
    j += step_j;
    i += step_i;
    if (j >= sv) {
      j -= sv;
      ++i;
    }
  }
}

// NSC: thread t owns VEC consecutive channels (column t % width) and row group t / width of its block.
struct NscThread {
  int width, rows, column, row;
  int64_t ch;   // first channel of this thread
  bool active;  // owns real channels
};

template <int VEC>
__device__ __forceinline__ NscThread nsc_thread(const Plan& p, int64_t group) {
  const int64_t channels = p.c < kThreads ? p.c : kThreads;  // channels per block; a multiple of VEC
  NscThread t;
  t.width = static_cast<int>(channels / VEC);
  t.rows = kThreads / t.width;
  t.column = threadIdx.x % t.width;
  t.row = threadIdx.x / t.width;
  t.ch = group * channels + int64_t(t.column) * VEC;
  t.active = t.row < t.rows && t.ch < p.c;
  return t;
}

template <typename F>
__device__ __forceinline__ void walk_nsc(const Plan& p, const NscThread& t, int64_t k, F&& f) {
  if (!t.active) return;
  const int64_t begin = k * p.chunk_len;
  const int64_t end = begin + p.chunk_len < p.m ? begin + p.chunk_len : p.m;
  for (int64_t r = begin + t.row; r < end; r += t.rows) f(r * p.c + t.ch);
}

// ---- statistics -------------------------------------------------------------------------------------
template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads) stats_ncs_kernel(const S* x, Plan p, compute_t<S>* part) {
  using T = compute_t<S>;
  __shared__ Welford<T> shared[kThreads];
  const int64_t ch = blockIdx.x / p.chunks, k = blockIdx.x % p.chunks;
  Welford<T> acc{T(0), T(0), T(0)};
  walk_ncs<VEC>(p, ch, k, [&](int64_t off) {
    const Pack<S, VEC> v = load_pack<S, VEC>(x + off);
#pragma unroll
    for (int e = 0; e < VEC; ++e) welford_add(acc, load(v.v[e]));
  });
  acc = tree_reduce(acc, shared, threadIdx.x, 1, kThreads);
  if (threadIdx.x == 0) {
    const int64_t idx = ch * p.chunks + k, stride = p.c * p.chunks;
    part[idx] = acc.n;
    part[stride + idx] = acc.mean;
    part[2 * stride + idx] = acc.m2;
  }
}

template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads) stats_nsc_kernel(const S* x, Plan p, compute_t<S>* part) {
  using T = compute_t<S>;
  __shared__ Welford<T> shared[kThreads];
  const int64_t group = blockIdx.x / p.chunks, k = blockIdx.x % p.chunks;
  const NscThread t = nsc_thread<VEC>(p, group);
  Welford<T> acc[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) acc[e] = {T(0), T(0), T(0)};
  walk_nsc(p, t, k, [&](int64_t off) {
    const Pack<S, VEC> v = load_pack<S, VEC>(x + off);
#pragma unroll
    for (int e = 0; e < VEC; ++e) welford_add(acc[e], load(v.v[e]));
  });
  const int64_t stride = p.c * p.chunks;
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    const Welford<T> r = tree_reduce(acc[e], shared, t.row, t.width, t.rows);
    if (t.active && t.row == 0) {
      const int64_t idx = (t.ch + e) * p.chunks + k;
      part[idx] = r.n;
      part[stride + idx] = r.mean;
      part[2 * stride + idx] = r.m2;
    }
  }
}

template <typename T>
__global__ void stats_combine_kernel(const T* part, int64_t c, int64_t chunks, T* mean, T* var) {
  const int64_t ch = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (ch >= c) return;
  const int64_t stride = c * chunks;
  Welford<T> acc{T(0), T(0), T(0)};
  for (int64_t k = 0; k < chunks; ++k) {  // fixed order
    const int64_t idx = ch * chunks + k;
    acc = merge(acc, Welford<T>{part[idx], part[stride + idx], part[2 * stride + idx]});
  }
  mean[ch] = acc.mean;
  var[ch] = acc.m2 / acc.n;  // biased; 0/0 = NaN for an empty batch
}

// ---- normalize + activate ---------------------------------------------------------------------------
// x and y may be the same buffer (in-place mode): each thread reads a unit before writing it.
template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads)
    normalize_ncs_kernel(const S* x, S* y, Plan p, const compute_t<S>* mean, const compute_t<S>* var,
                         const compute_t<S>* weight, const compute_t<S>* bias, compute_t<S> eps,
                         compute_t<S> slope) {
  using T = compute_t<S>;
  const int64_t ch = blockIdx.x / p.chunks, k = blockIdx.x % p.chunks;
  const Channel<T> q = channel(mean, var, weight, bias, ch, eps);
  walk_ncs<VEC>(p, ch, k, [&](int64_t off) {
    const Pack<S, VEC> v = load_pack<S, VEC>(x + off);
    Pack<S, VEC> out;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const T pre = (load(v.v[e]) - q.mean) * q.invstd * q.weight + q.bias;
      out.v[e] = store<S>(activate(pre, slope));
    }
    store_pack<S, VEC>(y + off, out);
  });
}

template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads)
    normalize_nsc_kernel(const S* x, S* y, Plan p, const compute_t<S>* mean, const compute_t<S>* var,
                         const compute_t<S>* weight, const compute_t<S>* bias, compute_t<S> eps,
                         compute_t<S> slope) {
  using T = compute_t<S>;
  const int64_t group = blockIdx.x / p.chunks, k = blockIdx.x % p.chunks;
  const NscThread t = nsc_thread<VEC>(p, group);
  if (!t.active) return;
  Channel<T> q[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) q[e] = channel(mean, var, weight, bias, t.ch + e, eps);
  walk_nsc(p, t, k, [&](int64_t off) {
    const Pack<S, VEC> v = load_pack<S, VEC>(x + off);
    Pack<S, VEC> out;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const T pre = (load(v.v[e]) - q[e].mean) * q[e].invstd * q[e].weight + q[e].bias;
      out.v[e] = store<S>(activate(pre, slope));
    }
    store_pack<S, VEC>(y + off, out);
  });
}

// ---- backward ---------------------------------------------------------------------------------------
struct BackwardArgs {
  bool training, from_output;
  double eps, slope;
};

template <typename T>
__device__ __forceinline__ void accumulate(Sums<T>& acc, T dy, T v, const Channel<T>& q, T slope,
                                           bool from_output) {
  bool positive;
  const T xhat = xhat_of(v, q, slope, from_output, positive);
  const T dz = activation_grad(dy, positive, slope);
  acc.dz += dz;
  acc.dz_xhat += dz * xhat;
}

template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads)
    backward_partial_ncs_kernel(const S* __restrict__ dy, const S* __restrict__ in, Plan p,
                                const compute_t<S>* mean, const compute_t<S>* var, const compute_t<S>* weight,
                                const compute_t<S>* bias, BackwardArgs a, compute_t<S>* part) {
  using T = compute_t<S>;
  __shared__ Sums<T> shared[kThreads];
  const int64_t ch = blockIdx.x / p.chunks, k = blockIdx.x % p.chunks;
  const Channel<T> q = channel(mean, var, weight, bias, ch, T(a.eps));
  const T slope = T(a.slope);
  Sums<T> acc{T(0), T(0)};
  walk_ncs<VEC>(p, ch, k, [&](int64_t off) {
    const Pack<S, VEC> g = load_pack<S, VEC>(dy + off);
    const Pack<S, VEC> v = load_pack<S, VEC>(in + off);
#pragma unroll
    for (int e = 0; e < VEC; ++e) accumulate(acc, load(g.v[e]), load(v.v[e]), q, slope, a.from_output);
  });
  acc = tree_reduce(acc, shared, threadIdx.x, 1, kThreads);
  if (threadIdx.x == 0) {
    part[ch * p.chunks + k] = acc.dz;
    part[p.c * p.chunks + ch * p.chunks + k] = acc.dz_xhat;
  }
}

template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads)
    backward_partial_nsc_kernel(const S* __restrict__ dy, const S* __restrict__ in, Plan p,
                                const compute_t<S>* mean, const compute_t<S>* var, const compute_t<S>* weight,
                                const compute_t<S>* bias, BackwardArgs a, compute_t<S>* part) {
  using T = compute_t<S>;
  __shared__ Sums<T> shared[kThreads];
  const int64_t group = blockIdx.x / p.chunks, k = blockIdx.x % p.chunks;
  const NscThread t = nsc_thread<VEC>(p, group);
  const T slope = T(a.slope);
  Channel<T> q[VEC];
  Sums<T> acc[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    q[e] = t.active ? channel(mean, var, weight, bias, t.ch + e, T(a.eps)) : Channel<T>{T(0), T(1), T(1), T(0)};
    acc[e] = {T(0), T(0)};
  }
  walk_nsc(p, t, k, [&](int64_t off) {
    const Pack<S, VEC> g = load_pack<S, VEC>(dy + off);
    const Pack<S, VEC> v = load_pack<S, VEC>(in + off);
#pragma unroll
    for (int e = 0; e < VEC; ++e) accumulate(acc[e], load(g.v[e]), load(v.v[e]), q[e], slope, a.from_output);
  });
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    const Sums<T> r = tree_reduce(acc[e], shared, t.row, t.width, t.rows);
    if (t.active && t.row == 0) {
      const int64_t idx = (t.ch + e) * p.chunks + k;
      part[idx] = r.dz;
      part[p.c * p.chunks + idx] = r.dz_xhat;
    }
  }
}

template <typename T>
__global__ void backward_combine_kernel(const T* part, int64_t c, int64_t chunks, T* grad_weight, T* grad_bias) {
  const int64_t ch = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (ch >= c) return;
  Sums<T> acc{T(0), T(0)};
  for (int64_t k = 0; k < chunks; ++k) {  // fixed order
    acc = merge(acc, Sums<T>{part[ch * chunks + k], part[c * chunks + ch * chunks + k]});
  }
  grad_bias[ch] = acc.dz;
  grad_weight[ch] = acc.dz_xhat;
}

// dx = w·invstd·(dz − Σdz/m − x̂·Σdz·x̂/m) with batch statistics, w·invstd·dz with running ones.
template <typename T>
__device__ __forceinline__ T grad_input(T dy, T v, const Channel<T>& q, T slope, T mean_dz, T mean_dz_xhat,
                                        const BackwardArgs& a) {
  bool positive;
  const T xhat = xhat_of(v, q, slope, a.from_output, positive);
  const T dz = activation_grad(dy, positive, slope);
  const T scale = q.weight * q.invstd;
  // weight == 0 in the memory-saving mode: x̂ is not recoverable, but its coefficient is exactly 0.
  if (a.from_output && scale == T(0)) return T(0);
  return a.training ? scale * (dz - mean_dz - xhat * mean_dz_xhat) : scale * dz;
}

template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads)
    backward_input_ncs_kernel(const S* __restrict__ dy, const S* __restrict__ in, S* __restrict__ dx, Plan p,
                              const compute_t<S>* mean, const compute_t<S>* var, const compute_t<S>* weight,
                              const compute_t<S>* bias, const compute_t<S>* grad_weight,
                              const compute_t<S>* grad_bias, BackwardArgs a) {
  using T = compute_t<S>;
  const int64_t ch = blockIdx.x / p.chunks, k = blockIdx.x % p.chunks;
  const Channel<T> q = channel(mean, var, weight, bias, ch, T(a.eps));
  const T slope = T(a.slope);
  const T inv_m = T(1) / T(p.m);
  const T mean_dz = grad_bias[ch] * inv_m, mean_dz_xhat = grad_weight[ch] * inv_m;
  walk_ncs<VEC>(p, ch, k, [&](int64_t off) {
    const Pack<S, VEC> g = load_pack<S, VEC>(dy + off);
    const Pack<S, VEC> v = load_pack<S, VEC>(in + off);
    Pack<S, VEC> out;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      out.v[e] = store<S>(grad_input(load(g.v[e]), load(v.v[e]), q, slope, mean_dz, mean_dz_xhat, a));
    }
    store_pack<S, VEC>(dx + off, out);
  });
}

template <typename S, int VEC>
__global__ void __launch_bounds__(kThreads)
    backward_input_nsc_kernel(const S* __restrict__ dy, const S* __restrict__ in, S* __restrict__ dx, Plan p,
                              const compute_t<S>* mean, const compute_t<S>* var, const compute_t<S>* weight,
                              const compute_t<S>* bias, const compute_t<S>* grad_weight,
                              const compute_t<S>* grad_bias, BackwardArgs a) {
  using T = compute_t<S>;
  const int64_t group = blockIdx.x / p.chunks, k = blockIdx.x % p.chunks;
  const NscThread t = nsc_thread<VEC>(p, group);
  if (!t.active) return;
  const T slope = T(a.slope);
  const T inv_m = T(1) / T(p.m);
  Channel<T> q[VEC];
  T mean_dz[VEC], mean_dz_xhat[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    q[e] = channel(mean, var, weight, bias, t.ch + e, T(a.eps));
    mean_dz[e] = grad_bias[t.ch + e] * inv_m;
    mean_dz_xhat[e] = grad_weight[t.ch + e] * inv_m;
  }
  walk_nsc(p, t, k, [&](int64_t off) {
    const Pack<S, VEC> g = load_pack<S, VEC>(dy + off);
    const Pack<S, VEC> v = load_pack<S, VEC>(in + off);
    Pack<S, VEC> out;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      out.v[e] = store<S>(grad_input(load(g.v[e]), load(v.v[e]), q[e], slope, mean_dz[e], mean_dz_xhat[e], a));
    }
    store_pack<S, VEC>(dx + off, out);
  });
}

// ---- launch helpers ---------------------------------------------------------------------------------
template <typename S>
constexpr int kVec = static_cast<int>(16 / sizeof(S));

bool aligned16(const void* ptr) { return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// 16-byte vectors when every row (NCS) / channel run (NSC) is a whole number of vectors and all
// element pointers are aligned.
template <typename S>
bool use_vectors(const Plan& p, const void* a, const void* b, const void* c = nullptr) {
  const int64_t run = p.channels_last ? p.c : p.s;
  return run % kVec<S> == 0 && aligned16(a) && aligned16(b) && aligned16(c);
}

unsigned blocks_of(const Plan& p) { return static_cast<unsigned>(p.groups * p.chunks); }
unsigned combine_blocks(int64_t c) { return static_cast<unsigned>(cdiv(c, kThreads)); }

template <typename S, int VEC>
void launch_stats(const S* x, const Plan& p, compute_t<S>* part, cudaStream_t stream) {
  if (p.channels_last) {
    stats_nsc_kernel<S, VEC><<<blocks_of(p), kThreads, 0, stream>>>(x, p, part);
  } else {
    stats_ncs_kernel<S, VEC><<<blocks_of(p), kThreads, 0, stream>>>(x, p, part);
  }
}

template <typename S, int VEC>
void launch_normalize(const S* x, S* y, const Plan& p, const compute_t<S>* mean, const compute_t<S>* var,
                      const compute_t<S>* weight, const compute_t<S>* bias, double eps, double slope,
                      cudaStream_t stream) {
  using T = compute_t<S>;
  if (p.channels_last) {
    normalize_nsc_kernel<S, VEC><<<blocks_of(p), kThreads, 0, stream>>>(x, y, p, mean, var, weight, bias, T(eps),
                                                                         T(slope));
  } else {
    normalize_ncs_kernel<S, VEC><<<blocks_of(p), kThreads, 0, stream>>>(x, y, p, mean, var, weight, bias, T(eps),
                                                                         T(slope));
  }
}

template <typename S, int VEC>
void launch_backward(const S* dy, const S* in, S* dx, const Plan& p, const compute_t<S>* mean,
                     const compute_t<S>* var, const compute_t<S>* weight, const compute_t<S>* bias,
                     compute_t<S>* grad_weight, compute_t<S>* grad_bias, const BackwardArgs& a,
                     compute_t<S>* part, cudaStream_t stream) {
  using T = compute_t<S>;
  if (p.channels_last) {
    backward_partial_nsc_kernel<S, VEC><<<blocks_of(p), kThreads, 0, stream>>>(dy, in, p, mean, var, weight, bias,
                                                                                a, part);
  } else {
    backward_partial_ncs_kernel<S, VEC><<<blocks_of(p), kThreads, 0, stream>>>(dy, in, p, mean, var, weight, bias,
                                                                                a, part);
  }
  backward_combine_kernel<T><<<combine_blocks(p.c), kThreads, 0, stream>>>(part, p.c, p.chunks, grad_weight,
                                                                           grad_bias);
  if (p.m == 0) return;
  if (p.channels_last) {
    backward_input_nsc_kernel<S, VEC><<<blocks_of(p), kThreads, 0, stream>>>(dy, in, dx, p, mean, var, weight,
                                                                              bias, grad_weight, grad_bias, a);
  } else {
    backward_input_ncs_kernel<S, VEC><<<blocks_of(p), kThreads, 0, stream>>>(dy, in, dx, p, mean, var, weight,
                                                                              bias, grad_weight, grad_bias, a);
  }
}
}  // namespace

int64_t batch_norm_leaky_relu_workspace(int64_t n, int64_t c, int64_t s, bool channels_last) {
  const Plan p = make_plan(n, c, s, channels_last);
  return 3 * p.c * p.chunks;
}

template <typename S>
cudaError_t batch_norm_leaky_relu_forward(const S* x, S* y, const bn_stat_t<S>* weight, const bn_stat_t<S>* bias,
                                          bn_stat_t<S>* mean, bn_stat_t<S>* var, int64_t n, int64_t c, int64_t s,
                                          bool channels_last, bool training, double eps, double slope,
                                          bn_stat_t<S>* workspace, cudaStream_t stream) {
  static_assert(std::is_same<bn_stat_t<S>, compute_t<S>>::value, "statistics type == compute type");
  using T = compute_t<S>;
  const Plan p = make_plan(n, c, s, channels_last);
  if (p.c == 0) return cudaSuccess;
  const bool vec = use_vectors<S>(p, x, y);
  if (training) {
    if (vec) {
      launch_stats<S, kVec<S>>(x, p, workspace, stream);
    } else {
      launch_stats<S, 1>(x, p, workspace, stream);
    }
    stats_combine_kernel<T><<<combine_blocks(p.c), kThreads, 0, stream>>>(workspace, p.c, p.chunks, mean, var);
  }
  if (p.m > 0) {
    if (vec) {
      launch_normalize<S, kVec<S>>(x, y, p, mean, var, weight, bias, eps, slope, stream);
    } else {
      launch_normalize<S, 1>(x, y, p, mean, var, weight, bias, eps, slope, stream);
    }
  }
  return cudaGetLastError();
}

template <typename S>
cudaError_t batch_norm_leaky_relu_backward(const S* dy, const S* in, bool from_output, const bn_stat_t<S>* weight,
                                           const bn_stat_t<S>* bias, const bn_stat_t<S>* mean,
                                           const bn_stat_t<S>* var, S* dx, bn_stat_t<S>* grad_weight,
                                           bn_stat_t<S>* grad_bias, int64_t n, int64_t c, int64_t s,
                                           bool channels_last, bool training, double eps, double slope,
                                           bn_stat_t<S>* workspace, cudaStream_t stream) {
  const Plan p = make_plan(n, c, s, channels_last);
  if (p.c == 0) return cudaSuccess;
  const BackwardArgs a{training, from_output, eps, slope};
  if (use_vectors<S>(p, dy, in, dx)) {
    launch_backward<S, kVec<S>>(dy, in, dx, p, mean, var, weight, bias, grad_weight, grad_bias, a, workspace,
                                stream);
  } else {
    launch_backward<S, 1>(dy, in, dx, p, mean, var, weight, bias, grad_weight, grad_bias, a, workspace, stream);
  }
  return cudaGetLastError();
}

#define GENCORE_INSTANTIATE_BN(S)                                                                              \
  template cudaError_t batch_norm_leaky_relu_forward<S>(const S*, S*, const bn_stat_t<S>*, const bn_stat_t<S>*, \
                                                        bn_stat_t<S>*, bn_stat_t<S>*, int64_t, int64_t, int64_t, \
                                                        bool, bool, double, double, bn_stat_t<S>*,            \
                                                        cudaStream_t);                                         \
  template cudaError_t batch_norm_leaky_relu_backward<S>(                                                      \
      const S*, const S*, bool, const bn_stat_t<S>*, const bn_stat_t<S>*, const bn_stat_t<S>*,                 \
      const bn_stat_t<S>*, S*, bn_stat_t<S>*, bn_stat_t<S>*, int64_t, int64_t, int64_t, bool, bool, double,   \
      double, bn_stat_t<S>*, cudaStream_t);
GENCORE_INSTANTIATE_BN(float)
GENCORE_INSTANTIATE_BN(double)
GENCORE_INSTANTIATE_BN(__half)
GENCORE_INSTANTIATE_BN(__nv_bfloat16)
#undef GENCORE_INSTANTIATE_BN

}  // namespace gencore::cuda
