// CPU glue for reparameterize / reparameterize_kl: checks, contiguity, allocation, the seed read from
// its one-element tensor, then the raw-pointer kernels (csrc/cpu/reparameterize.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "bindings/glue.h"
#include "cpu/kernels.h"

namespace gencore {
namespace {

uint64_t seed_value(const at::Tensor& seed) { return static_cast<uint64_t>(seed.item<int64_t>()); }

at::Tensor reparameterize_cpu(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& seed,
                              int64_t offset) {
  check_same(mu, logvar, "reparameterize", "mu", "logvar");
  check_philox_args(seed, offset, mu, "reparameterize");
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  at::Tensor z = at::empty_like(m);
  dispatch_floating<cpu::storage_types>(m.scalar_type(), "reparameterize", [&](auto tag) {
    using S = decltype(tag);
    cpu::reparameterize_forward<S>(ptr<S>(m), ptr<S>(lv), ptr<S>(z), m.numel(), seed_value(seed),
                                   static_cast<uint64_t>(offset));
  });
  return z;
}

at::Tensor reparameterize_backward_cpu(const at::Tensor& grad, const at::Tensor& logvar, const at::Tensor& seed,
                                       int64_t offset) {
  check_same(logvar, grad, "reparameterize_backward", "logvar", "grad");
  check_philox_args(seed, offset, logvar, "reparameterize_backward");
  const at::Tensor lv = logvar.contiguous();
  const at::Tensor g = grad.contiguous();
  at::Tensor dlogvar = at::empty_like(lv);
  dispatch_floating<cpu::storage_types>(lv.scalar_type(), "reparameterize_backward", [&](auto tag) {
    using S = decltype(tag);
    cpu::reparameterize_backward<S>(ptr<S>(g), ptr<S>(lv), ptr<S>(dlogvar), lv.numel(), seed_value(seed),
                                    static_cast<uint64_t>(offset));
  });
  return dlogvar;
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_cpu(const at::Tensor& mu, const at::Tensor& logvar,
                                                         const at::Tensor& seed, int64_t offset,
                                                         c10::string_view reduction_name) {
  check_same(mu, logvar, "reparameterize_kl", "mu", "logvar");
  check_philox_args(seed, offset, mu, "reparameterize_kl");
  const Reduction reduction = parse_reduction(reduction_name);
  const double scale = reduction_scale(reduction, mu);
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const int64_t n = m.numel();
  const uint64_t s = seed_value(seed), off = static_cast<uint64_t>(offset);
  at::Tensor z = at::empty_like(m);
  if (reduction == Reduction::None) {
    at::Tensor kl = at::empty_like(m);
    dispatch_floating<cpu::storage_types>(m.scalar_type(), "reparameterize_kl", [&](auto tag) {
      using S = decltype(tag);
      cpu::reparameterize_kl_forward_none<S>(ptr<S>(m), ptr<S>(lv), ptr<S>(z), ptr<S>(kl), n, s, off);
    });
    return {z, kl};
  }
  const double total = dispatch_floating<cpu::storage_types>(m.scalar_type(), "reparameterize_kl", [&](auto tag) {
    using S = decltype(tag);
    return cpu::reparameterize_kl_forward_sum<S>(ptr<S>(m), ptr<S>(lv), ptr<S>(z), n, s, off);
  });
  return {z, at::scalar_tensor(total * scale, m.options())};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cpu(
    const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu, const at::Tensor& logvar,
    const at::Tensor& seed, int64_t offset, c10::string_view reduction_name) {
  check_same(mu, logvar, "reparameterize_kl_backward", "mu", "logvar");
  check_same(mu, grad_z, "reparameterize_kl_backward", "mu", "grad_z");
  check_philox_args(seed, offset, mu, "reparameterize_kl_backward");
  const Reduction reduction = parse_reduction(reduction_name);
  const double scale = reduction_scale(reduction, mu);
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const at::Tensor gz = grad_z.contiguous();
  const at::Tensor gk = grad_kl.to(m.scalar_type()).contiguous();
  const int64_t kl_stride = check_loss_grad(gk, m, reduction, "reparameterize_kl_backward");
  at::Tensor dmu = at::empty_like(m);
  at::Tensor dlogvar = at::empty_like(m);
  dispatch_floating<cpu::storage_types>(m.scalar_type(), "reparameterize_kl_backward", [&](auto tag) {
    using S = decltype(tag);
    cpu::reparameterize_kl_backward<S>(ptr<S>(gz), ptr<S>(gk), kl_stride, scale, ptr<S>(m), ptr<S>(lv),
                                       ptr<S>(dmu), ptr<S>(dlogvar), m.numel(), seed_value(seed),
                                       static_cast<uint64_t>(offset));
  });
  return {dmu, dlogvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(gencore, CPU, m) {
  m.impl("reparameterize", &reparameterize_cpu);
  m.impl("reparameterize_backward", &reparameterize_backward_cpu);
  m.impl("reparameterize_kl", &reparameterize_kl_cpu);
  m.impl("reparameterize_kl_backward", &reparameterize_kl_backward_cpu);
}

}  // namespace gencore
