// Reparameterization sampling (DESIGN §3.2, §3.4) on the CPU: Philox noise generated per block of
// kBlock elements into an L1-resident buffer (one vectorized randn4x per 4 elements), then consumed by
// a vectorized elementwise loop. The KL part reuses the shared KL term (common/kl_term.h).
#include <vector>

#include "common/kl_term.h"
#include "common/philox.h"
#include "cpu/kernels.h"

// Local copies of the lambdas' captured pointers, marked restrict: the kernels' outputs never alias
// their inputs (the glue allocates them), and without it the captures are reloaded every iteration.
#define GENCORE_RESTRICT __restrict__

namespace gencore::cpu {

namespace {
constexpr int64_t kGrain = 1 << 12;  // elements per task and per KL partial sum (fixed: determinism);
                                     // 4 Ki elements are ~8 us of generator work (~2 ns/element)
constexpr int64_t kBlock = 1024;     // elements whose noise is generated at once (4 KiB of float)
// Smallest call split across threads: 32 Ki elements (~60 us of generator work on one core). Below it
// a second thread saves little once the parallel region's start is paid, and on a busy machine
// (benchmarks next to other jobs) a region that waits for a descheduled thread cost 4-16 ms at 128x128.
// The result does not depend on it: tasks and partial sums stay kGrain-sized.
constexpr int64_t kParallelMin = 1 << 15;

// Writes the normals of elements [first, first + count) of the stream `seed` into buf (which holds
// count + 3 floats) and returns the address of element `first`'s normal. Counters are whole groups
// of four, so an unaligned `first` starts inside its group.
const float* normals(uint64_t seed, uint64_t first, int64_t count, float* buf) {
  const int64_t lead = static_cast<int64_t>(first & 3u);
  philox::randn4x_block(seed, first >> 2, (lead + count + 3) >> 2, buf);
  return buf + lead;
}

// Runs body(task, begin, end, eps) over [0, n) in blocks, in parallel over fixed kGrain-element tasks;
// eps[k] is the normal of element begin + k.
template <typename Body>
void for_each_noise_block(int64_t n, uint64_t seed, uint64_t offset, Body&& body) {
  const int64_t tasks = (n + kGrain - 1) / kGrain;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t t = 0; t < tasks; ++t) {
    alignas(64) float buf[kBlock + 4];
    const int64_t end = t * kGrain + kGrain < n ? t * kGrain + kGrain : n;
    for (int64_t b = t * kGrain; b < end; b += kBlock) {
      const int64_t e = b + kBlock < end ? b + kBlock : end;
      body(t, b, e, normals(seed, offset + static_cast<uint64_t>(b), e - b, buf));
    }
  }
}

template <typename C>
inline C half_exp(C lv) {
  return exp_c(C(0.5) * lv);
}
}  // namespace

template <typename S>
void reparameterize_forward(const S* mu, const S* logvar, S* z, int64_t n, uint64_t seed, uint64_t offset) {
  using C = compute_t<S>;
  for_each_noise_block(n, seed, offset, [=](int64_t, int64_t b, int64_t e, const float* eps) {
    const S* GENCORE_RESTRICT m = mu;
    const S* GENCORE_RESTRICT lv = logvar;
    S* GENCORE_RESTRICT out = z;
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      out[i] = store<S>(load(m[i]) + half_exp<C>(load(lv[i])) * static_cast<C>(eps[i - b]));
    }
  });
}

// Backward regenerates eps from (seed, offset) instead of recovering it as (z - mu) / std from the
// output: recovery would keep z alive for backward (a third mu-sized tensor) and loses all precision
// when std << |mu| (z - mu cancels; in bfloat16 z holds 8 bits), while regeneration gives the exact eps
// of the forward. It costs ~5 ns/element of generator work on one core, measured in
// benchmarks/native/philox_mapping.cpp (docs/reparameterize.md).
template <typename S>
void reparameterize_backward(const S* grad_z, const S* logvar, S* dlogvar, int64_t n, uint64_t seed,
                             uint64_t offset) {
  using C = compute_t<S>;
  for_each_noise_block(n, seed, offset, [=](int64_t, int64_t b, int64_t e, const float* eps) {
    const S* GENCORE_RESTRICT gz = grad_z;
    const S* GENCORE_RESTRICT lv = logvar;
    S* GENCORE_RESTRICT dlv = dlogvar;
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      dlv[i] = store<S>(C(0.5) * load(gz[i]) * static_cast<C>(eps[i - b]) * half_exp<C>(load(lv[i])));
    }
  });
}

template <typename S>
void reparameterize_kl_forward_none(const S* mu, const S* logvar, S* z, S* kl, int64_t n, uint64_t seed,
                                    uint64_t offset) {
  using C = compute_t<S>;
  for_each_noise_block(n, seed, offset, [=](int64_t, int64_t b, int64_t e, const float* eps) {
    const S* GENCORE_RESTRICT mp = mu;
    const S* GENCORE_RESTRICT lvp = logvar;
    S* GENCORE_RESTRICT zp = z;
    S* GENCORE_RESTRICT klp = kl;
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const C m = load(mp[i]), lv = load(lvp[i]);
      const C sd = half_exp<C>(lv);
      zp[i] = store<S>(m + sd * static_cast<C>(eps[i - b]));
      klp[i] = store<S>(kl_term_from_var<C>(m, lv, sd * sd));
    }
  });
}

template <typename S>
double reparameterize_kl_forward_sum(const S* mu, const S* logvar, S* z, int64_t n, uint64_t seed,
                                     uint64_t offset) {
  using C = compute_t<S>;
  const int64_t tasks = (n + kGrain - 1) / kGrain;
  std::vector<double> partial(static_cast<size_t>(tasks), 0.0);
  double* partial_sums = partial.data();
  for_each_noise_block(n, seed, offset, [=](int64_t t, int64_t b, int64_t e, const float* eps) {
    const S* GENCORE_RESTRICT mp = mu;
    const S* GENCORE_RESTRICT lvp = logvar;
    S* GENCORE_RESTRICT zp = z;
    C acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = b; i < e; ++i) {
      const C m = load(mp[i]), lv = load(lvp[i]);
      const C sd = half_exp<C>(lv);
      zp[i] = store<S>(m + sd * static_cast<C>(eps[i - b]));
      acc += kl_term_from_var<C>(m, lv, sd * sd);
    }
    partial_sums[t] += static_cast<double>(acc);  // task t's blocks run in order
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

template <typename S>
void reparameterize_kl_backward(const S* grad_z, const S* grad_kl, int64_t kl_stride, double scale, const S* mu,
                                const S* logvar, S* dmu, S* dlogvar, int64_t n, uint64_t seed, uint64_t offset) {
  using C = compute_t<S>;
  const C s = static_cast<C>(scale);
  with_grad_stride(kl_stride, [&](auto stride) {
    for_each_noise_block(n, seed, offset, [=](int64_t, int64_t b, int64_t e, const float* eps) {
      const S* GENCORE_RESTRICT gzp = grad_z;
      const S* GENCORE_RESTRICT gkp = grad_kl;
      const S* GENCORE_RESTRICT mp = mu;
      const S* GENCORE_RESTRICT lvp = logvar;
      S* GENCORE_RESTRICT dmp = dmu;
      S* GENCORE_RESTRICT dlvp = dlogvar;
#pragma omp simd
      for (int64_t i = b; i < e; ++i) {
        const C gz = load(gzp[i]);
        const C gk = load(gkp[i * stride]) * s;
        const C sd = half_exp<C>(load(lvp[i]));
        dmp[i] = store<S>(gz + kl_grad_mu<C>(gk, load(mp[i])));
        dlvp[i] = store<S>(C(0.5) * gz * static_cast<C>(eps[i - b]) * sd + kl_grad_logvar<C>(gk, sd * sd));
      }
    });
  });
}

#define GENCORE_INSTANTIATE_REPARAM(S)                                                                      \
  template void reparameterize_forward<S>(const S*, const S*, S*, int64_t, uint64_t, uint64_t);             \
  template void reparameterize_backward<S>(const S*, const S*, S*, int64_t, uint64_t, uint64_t);            \
  template void reparameterize_kl_forward_none<S>(const S*, const S*, S*, S*, int64_t, uint64_t, uint64_t); \
  template double reparameterize_kl_forward_sum<S>(const S*, const S*, S*, int64_t, uint64_t, uint64_t);    \
  template void reparameterize_kl_backward<S>(const S*, const S*, int64_t, double, const S*, const S*, S*, \
                                              S*, int64_t, uint64_t, uint64_t);
GENCORE_INSTANTIATE_REPARAM(float)
GENCORE_INSTANTIATE_REPARAM(double)
GENCORE_INSTANTIATE_REPARAM(float16)
GENCORE_INSTANTIATE_REPARAM(bfloat16)
#undef GENCORE_INSTANTIATE_REPARAM

}  // namespace gencore::cpu
