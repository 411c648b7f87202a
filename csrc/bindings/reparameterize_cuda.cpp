// CUDA glue for reparameterize / reparameterize_kl (built only where PyTorch has CUDA): checks,
// allocation, stream, launch. The seed stays on the device: kernels read it through its pointer.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/glue.h"
#include "cuda/kernels.h"

namespace gencore {
namespace {

at::Tensor reparameterize_cuda(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& seed,
                               int64_t offset) {
  check_same(mu, logvar, "reparameterize", "mu", "logvar");
  check_philox_args(seed, offset, mu, "reparameterize");
  const c10::cuda::CUDAGuard guard(mu.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const at::Tensor sd = seed.contiguous();
  at::Tensor z = at::empty_like(m);
  dispatch_floating<cuda::storage_types>(m.scalar_type(), "reparameterize", [&](auto tag) {
    using S = decltype(tag);
    C10_CUDA_CHECK(cuda::reparameterize_forward<S>(ptr<S>(m), ptr<S>(lv), ptr<S>(z), m.numel(),
                                                   sd.data_ptr<int64_t>(), static_cast<uint64_t>(offset), stream));
  });
  return z;
}

at::Tensor reparameterize_backward_cuda(const at::Tensor& grad, const at::Tensor& logvar, const at::Tensor& seed,
                                        int64_t offset) {
  check_same(logvar, grad, "reparameterize_backward", "logvar", "grad");
  check_philox_args(seed, offset, logvar, "reparameterize_backward");
  const c10::cuda::CUDAGuard guard(logvar.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor lv = logvar.contiguous();
  const at::Tensor g = grad.contiguous();
  const at::Tensor sd = seed.contiguous();
  at::Tensor dlogvar = at::empty_like(lv);
  dispatch_floating<cuda::storage_types>(lv.scalar_type(), "reparameterize_backward", [&](auto tag) {
    using S = decltype(tag);
    C10_CUDA_CHECK(cuda::reparameterize_backward<S>(ptr<S>(g), ptr<S>(lv), ptr<S>(dlogvar), lv.numel(),
                                                    sd.data_ptr<int64_t>(), static_cast<uint64_t>(offset),
                                                    stream));
  });
  return dlogvar;
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_cuda(const at::Tensor& mu, const at::Tensor& logvar,
                                                          const at::Tensor& seed, int64_t offset,
                                                          c10::string_view reduction_name) {
  check_same(mu, logvar, "reparameterize_kl", "mu", "logvar");
  check_philox_args(seed, offset, mu, "reparameterize_kl");
  const Reduction reduction = parse_reduction(reduction_name);
  const double scale = reduction_scale(reduction, mu);
  const c10::cuda::CUDAGuard guard(mu.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const at::Tensor sd = seed.contiguous();
  const int64_t n = m.numel();
  const uint64_t off = static_cast<uint64_t>(offset);
  at::Tensor z = at::empty_like(m);
  at::Tensor kl = reduction == Reduction::None ? at::empty_like(m) : at::empty({}, m.options());
  at::Tensor workspace;
  if (reduction != Reduction::None) {
    workspace = at::empty({cuda::reparameterize_kl_sum_workspace(n)}, m.options().dtype(at::kDouble));
  }
  dispatch_floating<cuda::storage_types>(m.scalar_type(), "reparameterize_kl", [&](auto tag) {
    using S = decltype(tag);
    if (reduction == Reduction::None) {
      C10_CUDA_CHECK(cuda::reparameterize_kl_forward_none<S>(ptr<S>(m), ptr<S>(lv), ptr<S>(z), ptr<S>(kl), n,
                                                             sd.data_ptr<int64_t>(), off, stream));
    } else {
      C10_CUDA_CHECK(cuda::reparameterize_kl_forward_sum<S>(ptr<S>(m), ptr<S>(lv), ptr<S>(z), scale, ptr<S>(kl),
                                                            workspace.data_ptr<double>(), n,
                                                            sd.data_ptr<int64_t>(), off, stream));
    }
  });
  return {z, kl};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cuda(
    const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu, const at::Tensor& logvar,
    const at::Tensor& seed, int64_t offset, c10::string_view reduction_name) {
  check_same(mu, logvar, "reparameterize_kl_backward", "mu", "logvar");
  check_same(mu, grad_z, "reparameterize_kl_backward", "mu", "grad_z");
  check_philox_args(seed, offset, mu, "reparameterize_kl_backward");
  check_device(grad_kl, mu, "reparameterize_kl_backward", "grad_kl");
  const Reduction reduction = parse_reduction(reduction_name);
  const double scale = reduction_scale(reduction, mu);
  const c10::cuda::CUDAGuard guard(mu.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const at::Tensor gz = grad_z.contiguous();
  const at::Tensor gk = grad_kl.to(m.scalar_type()).contiguous();
  const at::Tensor sd = seed.contiguous();
  const int64_t kl_stride = check_loss_grad(gk, m, reduction, "reparameterize_kl_backward");
  at::Tensor dmu = at::empty_like(m);
  at::Tensor dlogvar = at::empty_like(m);
  dispatch_floating<cuda::storage_types>(m.scalar_type(), "reparameterize_kl_backward", [&](auto tag) {
    using S = decltype(tag);
    C10_CUDA_CHECK(cuda::reparameterize_kl_backward<S>(ptr<S>(gz), ptr<S>(gk), kl_stride, scale, ptr<S>(m),
                                                       ptr<S>(lv), ptr<S>(dmu), ptr<S>(dlogvar), m.numel(),
                                                       sd.data_ptr<int64_t>(), static_cast<uint64_t>(offset),
                                                       stream));
  });
  return {dmu, dlogvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("reparameterize", &reparameterize_cuda);
  m.impl("reparameterize_backward", &reparameterize_backward_cuda);
  m.impl("reparameterize_kl", &reparameterize_kl_cuda);
  m.impl("reparameterize_kl_backward", &reparameterize_kl_backward_cuda);
}

}  // namespace gencore
