// Torch glue shared by the CPU and CUDA registrations of batch_norm_leaky_relu: argument checks, the
// (N, C, S) view of x and its layout, per-channel parameters in the statistics dtype, output shapes.
// The Python fake kernels (gencore/ops/batch_norm_leaky_relu.py) follow the same layout rule.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include "bindings/glue.h"

namespace gencore::bn {

// x seen as (n, c, s) in one of the two layouts the kernels take.
struct View {
  at::Tensor x;  // x itself when its layout is native, else a contiguous copy
  int64_t n, c, s;
  bool channels_last;  // NSC (x[(i * s + j) * c + ch]) instead of NCS (x[(i * c + ch) * s + j])
};

// Dense with strides (S*C, 1, C*prod(sizes[3:]), ..., C): channels-last for any rank (size-1 dims
// may have any stride, as in torch's own contiguity checks).
inline bool is_channels_last_like(const at::Tensor& x) {
  if (x.dim() < 3) return false;
  int64_t expected = 1;
  bool ok = true;
  auto check = [&](int64_t d) {
    if (x.size(d) != 1 && x.stride(d) != expected) ok = false;
    expected *= x.size(d);
  };
  check(1);
  for (int64_t d = x.dim() - 1; d >= 2; --d) check(d);
  check(0);
  return ok;
}

// The layout rule (also the fake kernels'): contiguous x -> NCS, channels-last x -> NSC, anything else
// is copied to contiguous. Outputs are empty_like(view.x), i.e. they keep x's memory format.
inline View view_of(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = c == 0 || n == 0 ? 0 : x.numel() / (n * c);
  View v{x, n, c, s, false};
  if (x.is_contiguous()) {
    v.channels_last = false;
  } else if (is_channels_last_like(x)) {
    v.channels_last = true;
  } else {
    v.x = x.contiguous();
  }
  // Equivalent memory, faster loops: one channel is one contiguous run; S == 1 is a row per sample.
  if (c == 1) {
    v.channels_last = false;
    v.s = n * s;
    v.n = 1;
  } else if (s == 1) {
    v.channels_last = true;
  }
  return v;
}

inline at::ScalarType stats_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_input(const at::Tensor& x, const char* op) {
  check_floating(x, op, "x");
  TORCH_CHECK_VALUE(x.dim() >= 2, "gencore.", op, ": x must have shape (N, C, ...) with at least 2 dims, got ",
                    x.sizes());
}

// A per-channel tensor (weight, bias, running stats, saved stats): 1-D with C values on x's device.
inline void check_channel(const c10::optional<at::Tensor>& t, const at::Tensor& x, const char* op,
                          const char* name) {
  if (!t.has_value() || !t->defined()) return;
  check_floating(*t, op, name);
  TORCH_CHECK_VALUE(t->dim() == 1 && t->numel() == x.size(1), "gencore.", op, ": ", name, " must have shape (",
                    x.size(1), ",) (one value per channel), got ", t->sizes());
  TORCH_CHECK(t->device() == x.device(), "gencore.", op, ": ", name, " must be on x's device ", x.device(),
              ", got ", t->device());
}

// The per-channel tensor in the statistics dtype, contiguous; undefined when absent.
inline at::Tensor channel_param(const c10::optional<at::Tensor>& t, at::ScalarType dtype) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  return t->to(dtype).contiguous();
}

template <typename P>
const P* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const P*>(t.data_ptr()) : nullptr;
}

// Statistics the forward normalizes with: new (C,) buffers in training, copies of the running ones in eval.
inline std::tuple<at::Tensor, at::Tensor> stats_buffers(const at::Tensor& x,
                                                        const c10::optional<at::Tensor>& running_mean,
                                                        const c10::optional<at::Tensor>& running_var,
                                                        bool training, const char* op) {
  const auto dtype = stats_dtype(x);
  if (training) {
    const int64_t per_channel = x.size(1) == 0 ? 0 : x.numel() / x.size(1);
    TORCH_CHECK_VALUE(per_channel != 1, "gencore.", op,
                      ": Expected more than 1 value per channel when training, got input size ", x.sizes());
    auto opts = x.options().dtype(dtype);
    return {at::empty({x.size(1)}, opts), at::empty({x.size(1)}, opts)};
  }
  const bool have = running_mean.has_value() && running_mean->defined() && running_var.has_value() &&
                    running_var->defined();
  TORCH_CHECK_VALUE(have, "gencore.", op, ": running_mean and running_var are required when training=False");
  return {running_mean->to(dtype, /*non_blocking=*/false, /*copy=*/true).contiguous(),
          running_var->to(dtype, /*non_blocking=*/false, /*copy=*/true).contiguous()};
}

inline void check_args(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                       const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
                       const c10::optional<at::Tensor>& running_var, double eps, const char* op) {
  check_input(x, op);
  check_channel(weight, x, op, "weight");
  check_channel(bias, x, op, "bias");
  check_channel(running_mean, x, op, "running_mean");
  check_channel(running_var, x, op, "running_var");
  TORCH_CHECK_VALUE(eps >= 0, "gencore.", op, ": eps must be >= 0, got ", eps);
}

// grad_weight / grad_bias leave in weight's dtype (the statistics dtype when weight is absent).
inline at::Tensor param_grad(const at::Tensor& g, const c10::optional<at::Tensor>& weight) {
  if (weight.has_value() && weight->defined() && weight->scalar_type() != g.scalar_type()) {
    return g.to(weight->scalar_type());
  }
  return g;
}

// grad_y in the same strides as the view's x (the kernels read both with one index).
inline at::Tensor like_view(const at::Tensor& t, const View& v, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == v.x.sizes(), "gencore.", op, ": ", name, " must have x's shape ", v.x.sizes(),
                    ", got ", t.sizes());
  TORCH_CHECK(t.device() == v.x.device(), "gencore.", op, ": ", name, " must be on x's device");
  if (t.strides() == v.x.strides() && t.scalar_type() == v.x.scalar_type()) return t;
  return at::empty_like(v.x).copy_(t);
}

}  // namespace gencore::bn
