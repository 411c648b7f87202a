#include <vector>

#include "common/kl_term.h"
#include "cpu/kernels.h"

namespace gencore::cpu {

namespace {
constexpr int64_t kGrain = 1 << 14;  // elements per task and per partial sum (fixed: determinism)

template <typename C>
inline C kl_term(C m, C lv) {
  return kl_term_from_var<C>(m, lv, exp_c(lv));
}
}  // namespace

template <typename S>
void kl_normal_forward_none(const S* mu, const S* logvar, S* out, int64_t n) {
  using C = compute_t<S>;
  const int64_t tasks = (n + kGrain - 1) / kGrain;
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t end = t * kGrain + kGrain < n ? t * kGrain + kGrain : n;
#pragma omp simd
    for (int64_t i = t * kGrain; i < end; ++i) {
      out[i] = store<S>(kl_term<C>(load(mu[i]), load(logvar[i])));
    }
  }
}

template <typename S>
double kl_normal_forward_sum(const S* mu, const S* logvar, int64_t n) {
  using C = compute_t<S>;
  const int64_t tasks = (n + kGrain - 1) / kGrain;
  std::vector<double> partial(static_cast<size_t>(tasks));
#pragma omp parallel for schedule(static) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t end = t * kGrain + kGrain < n ? t * kGrain + kGrain : n;
    C acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = t * kGrain; i < end; ++i) {
      acc += kl_term<C>(load(mu[i]), load(logvar[i]));
    }
    partial[static_cast<size_t>(t)] = static_cast<double>(acc);
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

template <typename S>
void kl_normal_backward(const S* grad, int64_t grad_stride, double scale, const S* mu, const S* logvar,
                        S* dmu, S* dlogvar, int64_t n) {
  using C = compute_t<S>;
  const C s = static_cast<C>(scale);
  const int64_t tasks = (n + kGrain - 1) / kGrain;
  with_grad_stride(grad_stride, [&](auto stride) {
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t end = t * kGrain + kGrain < n ? t * kGrain + kGrain : n;
#pragma omp simd
      for (int64_t i = t * kGrain; i < end; ++i) {
        const C g = load(grad[i * stride]) * s;
        dmu[i] = store<S>(kl_grad_mu<C>(g, load(mu[i])));
        dlogvar[i] = store<S>(kl_grad_logvar<C>(g, exp_c(load(logvar[i]))));
      }
    }
  });
}

#define GENCORE_INSTANTIATE_KL(S)                                                              \
  template void kl_normal_forward_none<S>(const S*, const S*, S*, int64_t);                    \
  template double kl_normal_forward_sum<S>(const S*, const S*, int64_t);                       \
  template void kl_normal_backward<S>(const S*, int64_t, double, const S*, const S*, S*, S*, \
                                      int64_t);
GENCORE_INSTANTIATE_KL(float)
GENCORE_INSTANTIATE_KL(double)
GENCORE_INSTANTIATE_KL(float16)
GENCORE_INSTANTIATE_KL(bfloat16)
#undef GENCORE_INSTANTIATE_KL

}  // namespace gencore::cpu
