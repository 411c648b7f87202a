// CPU glue for kl_normal: checks, contiguity, allocation, then the raw-pointer kernels.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "bindings/glue.h"
#include "cpu/kernels.h"

namespace gencore {
namespace {

at::Tensor kl_normal_cpu(const at::Tensor& mu, const at::Tensor& logvar, c10::string_view reduction_name) {
  check_same(mu, logvar, "kl_normal", "mu", "logvar");
  const Reduction reduction = parse_reduction(reduction_name);
  const double scale = reduction_scale(reduction, mu);
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const int64_t n = m.numel();
  if (reduction == Reduction::None) {
    at::Tensor out = at::empty_like(m);
    dispatch_floating<cpu::storage_types>(m.scalar_type(), "kl_normal", [&](auto tag) {
      using S = decltype(tag);
      cpu::kl_normal_forward_none<S>(ptr<S>(m), ptr<S>(lv), ptr<S>(out), n);
    });
    return out;
  }
  const double total = dispatch_floating<cpu::storage_types>(m.scalar_type(), "kl_normal", [&](auto tag) {
    using S = decltype(tag);
    return cpu::kl_normal_forward_sum<S>(ptr<S>(m), ptr<S>(lv), n);
  });
  return at::scalar_tensor(total * scale, m.options());
}

std::tuple<at::Tensor, at::Tensor> kl_normal_backward_cpu(const at::Tensor& grad, const at::Tensor& mu,
                                                          const at::Tensor& logvar,
                                                          c10::string_view reduction_name) {
  check_same(mu, logvar, "kl_normal_backward", "mu", "logvar");
  const Reduction reduction = parse_reduction(reduction_name);
  const double scale = reduction_scale(reduction, mu);
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const at::Tensor g = grad.to(m.scalar_type()).contiguous();
  const int64_t grad_stride = check_loss_grad(g, m, reduction, "kl_normal_backward");
  at::Tensor dmu = at::empty_like(m);
  at::Tensor dlogvar = at::empty_like(m);
  dispatch_floating<cpu::storage_types>(m.scalar_type(), "kl_normal_backward", [&](auto tag) {
    using S = decltype(tag);
    cpu::kl_normal_backward<S>(ptr<S>(g), grad_stride, scale, ptr<S>(m), ptr<S>(lv), ptr<S>(dmu),
                               ptr<S>(dlogvar), m.numel());
  });
  return {dmu, dlogvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(gencore, CPU, m) {
  m.impl("kl_normal", &kl_normal_cpu);
  m.impl("kl_normal_backward", &kl_normal_backward_cpu);
}

}  // namespace gencore
