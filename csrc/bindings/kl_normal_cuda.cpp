// CUDA glue for kl_normal (built only where PyTorch has CUDA): checks, allocation, stream, launch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/glue.h"
#include "cuda/kernels.h"

namespace gencore {
namespace {

at::Tensor kl_normal_cuda(const at::Tensor& mu, const at::Tensor& logvar, c10::string_view reduction_name) {
  check_same(mu, logvar, "kl_normal", "mu", "logvar");
  const Reduction reduction = parse_reduction(reduction_name);
  const double scale = reduction_scale(reduction, mu);
  const c10::cuda::CUDAGuard guard(mu.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const int64_t n = m.numel();
  at::Tensor out = reduction == Reduction::None ? at::empty_like(m) : at::empty({}, m.options());
  at::Tensor workspace;
  if (reduction != Reduction::None) {
    workspace = at::empty({cuda::kl_normal_sum_workspace(n)}, m.options().dtype(at::kDouble));
  }
  dispatch_floating<cuda::storage_types>(m.scalar_type(), "kl_normal", [&](auto tag) {
    using S = decltype(tag);
    if (reduction == Reduction::None) {
      C10_CUDA_CHECK(cuda::kl_normal_forward_none<S>(ptr<S>(m), ptr<S>(lv), ptr<S>(out), n, stream));
    } else {
      C10_CUDA_CHECK(cuda::kl_normal_forward_sum<S>(ptr<S>(m), ptr<S>(lv), scale, ptr<S>(out),
                                                    workspace.data_ptr<double>(), n, stream));
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> kl_normal_backward_cuda(const at::Tensor& grad, const at::Tensor& mu,
                                                           const at::Tensor& logvar,
                                                           c10::string_view reduction_name) {
  check_same(mu, logvar, "kl_normal_backward", "mu", "logvar");
  check_device(grad, mu, "kl_normal_backward", "grad");
  const Reduction reduction = parse_reduction(reduction_name);
  const double scale = reduction_scale(reduction, mu);
  const c10::cuda::CUDAGuard guard(mu.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor m = mu.contiguous();
  const at::Tensor lv = logvar.contiguous();
  const at::Tensor g = grad.to(m.scalar_type()).contiguous();
  const int64_t grad_stride = check_loss_grad(g, m, reduction, "kl_normal_backward");
  at::Tensor dmu = at::empty_like(m);
  at::Tensor dlogvar = at::empty_like(m);
  dispatch_floating<cuda::storage_types>(m.scalar_type(), "kl_normal_backward", [&](auto tag) {
    using S = decltype(tag);
    C10_CUDA_CHECK(cuda::kl_normal_backward<S>(ptr<S>(g), grad_stride, scale, ptr<S>(m), ptr<S>(lv),
                                               ptr<S>(dmu), ptr<S>(dlogvar), m.numel(), stream));
  });
  return {dmu, dlogvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("kl_normal", &kl_normal_cuda);
  m.impl("kl_normal_backward", &kl_normal_backward_cuda);
}

}  // namespace gencore
