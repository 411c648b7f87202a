// CUDA glue for batch_norm_leaky_relu (built only where PyTorch has CUDA): checks, layout, per-channel
// parameters in the statistics dtype, workspace, stream, launch. The checks and the layout rule are the
// CPU glue's (bindings/batch_norm_leaky_relu_glue.h), so both devices accept and return the same.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/batch_norm_leaky_relu_glue.h"
#include "bindings/glue.h"
#include "cuda/kernels.h"

namespace gencore {
namespace {

using OptTensor = c10::optional<at::Tensor>;

at::Tensor workspace_for(const bn::View& v) {
  const int64_t size = cuda::batch_norm_leaky_relu_workspace(v.n, v.c, v.s, v.channels_last);
  return at::empty({size}, v.x.options().dtype(bn::stats_dtype(v.x)));
}

// Runs the forward kernels from v.x into y (y may be v.x: in-place). In training they fill mean / var.
void run_forward(const bn::View& v, const at::Tensor& y, const OptTensor& weight, const OptTensor& bias,
                 const at::Tensor& mean, const at::Tensor& var, bool training, double eps, double slope,
                 const char* op) {
  const auto dtype = bn::stats_dtype(v.x);
  const at::Tensor w = bn::channel_param(weight, dtype);
  const at::Tensor b = bn::channel_param(bias, dtype);
  const at::Tensor workspace = training ? workspace_for(v) : at::Tensor();  // only the statistics use it
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_floating<cuda::storage_types>(v.x.scalar_type(), op, [&](auto tag) {
    using S = decltype(tag);
    using P = cuda::bn_stat_t<S>;
    P* const ws = workspace.defined() ? ptr<P>(workspace) : nullptr;
    C10_CUDA_CHECK(cuda::batch_norm_leaky_relu_forward<S>(
        ptr<S>(v.x), ptr<S>(y), bn::ptr_or_null<P>(w), bn::ptr_or_null<P>(b), ptr<P>(mean), ptr<P>(var), v.n, v.c,
        v.s, v.channels_last, training, eps, slope, ws, stream));
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& x, const OptTensor& weight,
                                                            const OptTensor& bias, const OptTensor& running_mean,
                                                            const OptTensor& running_var, bool training,
                                                            double eps, double slope) {
  const char* op = "batch_norm_leaky_relu_forward";
  bn::check_args(x, weight, bias, running_mean, running_var, eps, op);
  const c10::cuda::CUDAGuard guard(x.device());
  auto [mean, var] = bn::stats_buffers(x, running_mean, running_var, training, op);
  const bn::View v = bn::view_of(x);
  at::Tensor y = at::empty_like(v.x);
  run_forward(v, y, weight, bias, mean, var, training, eps, slope, op);
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor> forward_inplace_cuda(const at::Tensor& x, const OptTensor& weight,
                                                        const OptTensor& bias, const OptTensor& running_mean,
                                                        const OptTensor& running_var, bool training, double eps,
                                                        double slope) {
  const char* op = "batch_norm_leaky_relu_forward_inplace";
  bn::check_args(x, weight, bias, running_mean, running_var, eps, op);
  const c10::cuda::CUDAGuard guard(x.device());
  auto [mean, var] = bn::stats_buffers(x, running_mean, running_var, training, op);
  const bn::View v = bn::view_of(x);
  run_forward(v, v.x, weight, bias, mean, var, training, eps, slope, op);
  if (!v.x.is_same(x)) x.copy_(v.x);  // x had a layout the kernels do not take: they worked on a copy
  return {mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad_y, const at::Tensor& in,
                                                             bool from_output, const OptTensor& weight,
                                                             const OptTensor& bias, const at::Tensor& save_mean,
                                                             const at::Tensor& save_var, bool training,
                                                             double eps, double slope, const char* op) {
  bn::check_args(in, weight, bias, save_mean, save_var, eps, op);
  TORCH_CHECK_VALUE(!from_output || slope > 0, "gencore.", op,
                    ": rebuilding the input from the output needs negative_slope > 0, got ", slope);
  check_device(grad_y, in, op, "grad_y");
  const c10::cuda::CUDAGuard guard(in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bn::View v = bn::view_of(in);
  const at::Tensor dy = bn::like_view(grad_y, v, op, "grad_y");
  const auto dtype = bn::stats_dtype(in);
  const at::Tensor w = bn::channel_param(weight, dtype);
  const at::Tensor b = bn::channel_param(bias, dtype);
  const at::Tensor mean = save_mean.to(dtype).contiguous();
  const at::Tensor var = save_var.to(dtype).contiguous();
  at::Tensor dx = at::empty_like(v.x);
  at::Tensor gw = at::empty({in.size(1)}, in.options().dtype(dtype));
  at::Tensor gb = at::empty({in.size(1)}, in.options().dtype(dtype));
  const at::Tensor workspace = workspace_for(v);
  dispatch_floating<cuda::storage_types>(in.scalar_type(), op, [&](auto tag) {
    using S = decltype(tag);
    using P = cuda::bn_stat_t<S>;
    C10_CUDA_CHECK(cuda::batch_norm_leaky_relu_backward<S>(
        ptr<S>(dy), ptr<S>(v.x), from_output, bn::ptr_or_null<P>(w), bn::ptr_or_null<P>(b), ptr<P>(mean),
        ptr<P>(var), ptr<S>(dx), ptr<P>(gw), ptr<P>(gb), v.n, v.c, v.s, v.channels_last, training, eps, slope,
        ptr<P>(workspace), stream));
  });
  return {dx, bn::param_grad(gw, weight), bn::param_grad(gb, weight)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_y, const at::Tensor& x,
                                                             const OptTensor& weight, const OptTensor& bias,
                                                             const at::Tensor& save_mean,
                                                             const at::Tensor& save_var, bool training, double eps,
                                                             double slope) {
  return backward_impl(grad_y, x, false, weight, bias, save_mean, save_var, training, eps, slope,
                       "batch_norm_leaky_relu_backward");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_from_output_cuda(
    const at::Tensor& grad_y, const at::Tensor& y, const OptTensor& weight, const OptTensor& bias,
    const at::Tensor& save_mean, const at::Tensor& save_var, bool training, double eps, double slope) {
  return backward_impl(grad_y, y, true, weight, bias, save_mean, save_var, training, eps, slope,
                       "batch_norm_leaky_relu_backward_from_output");
}

}  // namespace

TORCH_LIBRARY_IMPL(gencore, CUDA, m) {
  m.impl("batch_norm_leaky_relu_forward", &forward_cuda);
  m.impl("batch_norm_leaky_relu_backward", &backward_cuda);
  m.impl("batch_norm_leaky_relu_forward_inplace", &forward_inplace_cuda);
  m.impl("batch_norm_leaky_relu_backward_from_output", &backward_from_output_cuda);
}

}  // namespace gencore
