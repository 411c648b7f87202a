// Shared torch glue: argument checks, dtype dispatch and operator lookup for the binding files.
// Kernels never see a Tensor; this is the one place that turns Tensors into pointers and sizes.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <string>

namespace gencore {

enum class Reduction { None, Sum, Mean, BatchMean };

inline Reduction parse_reduction(c10::string_view name) {
  if (name == "none") return Reduction::None;
  if (name == "sum") return Reduction::Sum;
  if (name == "mean") return Reduction::Mean;
  if (name == "batchmean") return Reduction::BatchMean;
  TORCH_CHECK_VALUE(false, "gencore: reduction must be one of 'none', 'sum', 'mean', 'batchmean', got '",
                    std::string(name.data(), name.size()), "'");
}

// Factor applied to the sum: 1 for sum, 1/numel for mean (NaN when empty, like torch), 1/N for batchmean.
inline double reduction_scale(Reduction reduction, const at::Tensor& like) {
  switch (reduction) {
    case Reduction::Mean:
      return 1.0 / static_cast<double>(like.numel());
    case Reduction::BatchMean:
      TORCH_CHECK_VALUE(like.dim() >= 1, "gencore: reduction='batchmean' needs at least one dimension");
      return 1.0 / static_cast<double>(like.size(0));
    default:
      return 1.0;
  }
}

inline bool is_floating(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(is_floating(t), "gencore.", op, ": ", name, " must be float32, float64, float16 or bfloat16, got ",
                   t.scalar_type());
}

// A registered operator (e.g. "gencore::kl_normal"), to call through the dispatcher from C++.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Two tensors that one elementwise kernel reads together: same shape, dtype and device.
inline void check_same(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name_a,
                       const char* name_b) {
  check_floating(a, op, name_a);
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), "gencore.", op, ": ", name_a, " and ", name_b,
                    " must have the same shape, got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), "gencore.", op, ": ", name_a, " and ", name_b,
                   " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.device() == b.device(), "gencore.", op, ": ", name_a, " and ", name_b,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

template <typename S>
S* ptr(const at::Tensor& t) {
  return reinterpret_cast<S*>(t.data_ptr());
}

// A tensor the kernel reads through a raw pointer must live on the data's device: a host pointer handed
// to a CUDA kernel (or the reverse) is an illegal access, not an error message. CUDA glue calls this
// before its CUDAGuard, which asserts on a CPU device.
inline void check_device(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name) {
  TORCH_CHECK(t.device() == like.device(), "gencore.", op, ": ", name, " must be on the same device as the ",
              "input (", like.device(), "), got ", t.device());
}

// The incoming gradient of a loss op: the output's shape for 'none', one value otherwise, on the
// input's device. Returns the stride kernels use to read it (0 broadcasts the single value).
inline int64_t check_loss_grad(const at::Tensor& grad, const at::Tensor& like, Reduction reduction,
                               const char* op) {
  check_device(grad, like, op, "grad");
  const bool none = reduction == Reduction::None;
  TORCH_CHECK_VALUE(none ? grad.sizes() == like.sizes() : grad.numel() == 1, "gencore.", op,
                    ": grad has shape ", grad.sizes(), ", expected ", none ? like.sizes() : at::IntArrayRef{});
  return none ? 1 : 0;
}

// The Philox seed of the reparameterization ops: a one-element int64 tensor on the data's device (so the
// GPU path never copies it to the host), and a non-negative element offset.
inline void check_philox_args(const at::Tensor& seed, int64_t offset, const at::Tensor& like, const char* op) {
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "gencore.", op, ": seed must be an int64 tensor, got ",
                   seed.scalar_type());
  TORCH_CHECK_VALUE(seed.numel() == 1, "gencore.", op, ": seed must hold one value, got shape ", seed.sizes());
  TORCH_CHECK(seed.device() == like.device(), "gencore.", op, ": seed must be on the same device as mu, got ",
              seed.device(), " and ", like.device());
  TORCH_CHECK_VALUE(offset >= 0, "gencore.", op, ": offset must be >= 0, got ", offset);
}

// Calls f(T{}) where T is the kernel's storage type for `dtype`: Types::f32, f64, f16, bf16.
template <typename Types, typename F>
decltype(auto) dispatch_floating(at::ScalarType dtype, const char* op, F&& f) {
  switch (dtype) {
    case at::kFloat:
      return f(typename Types::f32{});
    case at::kDouble:
      return f(typename Types::f64{});
    case at::kHalf:
      return f(typename Types::f16{});
    case at::kBFloat16:
      return f(typename Types::bf16{});
    default:
      TORCH_CHECK_TYPE(false, "gencore.", op, ": unsupported dtype ", dtype);
  }
}

}  // namespace gencore
