// Eager fast path of gencore.ops.batch_norm_leaky_relu on CPU tensors: the functional forward op called
// through the dispatcher (autograd records the same node as from Python), then the running-statistics
// update, in one call from Python (gencore._C.batch_norm_leaky_relu_step).
//
// Why: from Python, the argument checks and the update (a multiplication and a _foreach_lerp_, two
// ATen ops with their TensorIterators and an allocation) cost ~30 us per call with warm caches, and
// several times that right after the kernels have streamed megabytes through the caches, where every
// interpreter structure and dispatcher table misses (docs/batch_norm_leaky_relu.md, eighth session).
//
// It takes only what it can run as the Python path would: x a dense CPU tensor of a floating dtype with at
// least one value, per-channel tensors 1-D with C values on the CPU, running statistics both or neither
// (required in eval mode), eps >= 0, more than one value per channel in training, running statistics
// contiguous, in the statistics dtype (float32; float64 for float64 x), not inference tensors and not
// sharing memory, and no dispatch mode, torch-function mode, functorch transform or jit trace in play.
// The Python wrapper (gencore/ops/batch_norm_leaky_relu.py, eager_step) passes only exact torch.Tensor /
// nn.Parameter objects and Python numbers. For anything else it returns None, having changed nothing,
// and the caller runs the Python path, which raises the errors (one place for their wording) or does the
// work.
#include <ATen/ATen.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/extension.h>

#include <optional>
#include <tuple>

#include "bindings/batch_norm_leaky_relu_glue.h"

namespace gencore {
namespace {

using at::Tensor;
using Opt = std::optional<Tensor>;

// No dispatch mode (FlopCounterMode, FakeTensorMode, ...), torch-function mode, functorch transform or
// torch.jit.trace is active: each would have to see the running-statistics update, here a plain loop.
bool plain_eager() {
  return c10::impl::TorchDispatchModeTLS::stack_len() == 0 && !at::impl::torch_function_mode_enabled() &&
         !c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) &&
         !torch::jit::tracer::isTracing();
}

// A dense CPU tensor: not nested, not a lazy negation or conjugation view, not a __torch_dispatch__
// subclass (the Python wrapper passes only exact torch.Tensor / nn.Parameter objects).
bool plain_cpu(const Tensor& t) {
  return t.device().is_cpu() && t.layout() == at::kStrided && !t.is_nested() && !t.is_neg() && !t.is_conj() &&
         !t.key_set().has(c10::DispatchKey::Python);
}

bool channel_ok(const Opt& t, int64_t c) {
  return !t.has_value() || (t->defined() && plain_cpu(*t) && is_floating(*t) && t->dim() == 1 && t->size(0) == c);
}

// A buffer this function writes with a raw loop: `count` values of `dtype`, contiguous, no inference tensor
// (their in-place rules are the Python path's to apply).
bool writable(const Tensor& t, at::ScalarType dtype, int64_t count) {
  return plain_cpu(t) && t.scalar_type() == dtype && t.numel() == count && t.is_contiguous() && !t.is_inference();
}

// running = (1 - momentum) * running + momentum * batch, in double, as nn.BatchNorm's CPU kernel updates
// it (the unbiased variance var * n / (n - 1) enters the running average; the biased one normalizes).
template <typename T>
void update_running(const Tensor& running_mean, const Tensor& running_var, const Tensor& mean, const Tensor& var,
                    double momentum, int64_t per_channel) {
  T* rm = running_mean.data_ptr<T>();
  T* rv = running_var.data_ptr<T>();
  const T* m = mean.data_ptr<T>();
  const T* v = var.data_ptr<T>();
  const double unbias = static_cast<double>(per_channel) / static_cast<double>(per_channel - 1);
  for (int64_t ch = 0; ch < running_mean.numel(); ++ch) {
    rm[ch] = static_cast<T>((1 - momentum) * static_cast<double>(rm[ch]) + momentum * static_cast<double>(m[ch]));
    rv[ch] = static_cast<T>((1 - momentum) * static_cast<double>(rv[ch]) +
                            momentum * (static_cast<double>(v[ch]) * unbias));
  }
  // What an in-place op does: autograd's checks of saved tensors see that the buffers changed.
  torch::autograd::impl::bump_version(running_mean);
  torch::autograd::impl::bump_version(running_var);
}

// num_batches_tracked (the modules' counter, given when they count this call): incremented first, as
// nn.BatchNorm does; momentum None then means the cumulative average, 1 / num_batches_tracked.
std::optional<Tensor> batch_norm_leaky_relu_step(const Tensor& x, const Opt& running_mean, const Opt& running_var,
                                                 const Opt& weight, const Opt& bias, bool training,
                                                 std::optional<double> momentum, double eps, double negative_slope,
                                                 const Opt& num_batches_tracked) {
  if (!plain_eager() || !plain_cpu(x) || !is_floating(x) || x.dim() < 2 || x.numel() == 0) return std::nullopt;
  const int64_t c = x.size(1);
  const int64_t per_channel = x.numel() / c;
  if (!channel_ok(weight, c) || !channel_ok(bias, c) || !channel_ok(running_mean, c) ||
      !channel_ok(running_var, c) || running_mean.has_value() != running_var.has_value() || !(eps >= 0) ||
      (training && per_channel == 1) || (!training && !running_mean.has_value())) {
    return std::nullopt;
  }
  const Tensor* counter = num_batches_tracked.has_value() ? &*num_batches_tracked : nullptr;
  if (counter ? !writable(*counter, at::kLong, 1) : !momentum.has_value()) return std::nullopt;
  const bool update = training && running_mean.has_value();
  const auto stats_dtype = bn::stats_dtype(x);
  const auto stats_writable = [&] {
    return writable(*running_mean, stats_dtype, c) && writable(*running_var, stats_dtype, c) &&
           !running_mean->is_alias_of(*running_var);
  };
  if (update && !stats_writable()) return std::nullopt;

  double factor = momentum.value_or(0.0);
  if (counter) {
    int64_t* count = counter->data_ptr<int64_t>();
    *count += 1;
    torch::autograd::impl::bump_version(*counter);
    if (!momentum.has_value()) factor = 1.0 / static_cast<double>(*count);
  }
  static const auto op = find_op<std::tuple<Tensor, Tensor, Tensor>(
      const Tensor&, const Opt&, const Opt&, const Opt&, const Opt&, bool, double, double)>(
      "gencore::batch_norm_leaky_relu_forward");
  Tensor y, mean, var;
  {
    pybind11::gil_scoped_release no_gil;  // as torch.ops calls do: other Python threads run meanwhile
    std::tie(y, mean, var) = op.call(x, weight, bias, running_mean, running_var, training, eps, negative_slope);
  }
  if (update) {
    // Code that ran meanwhile (a saved-tensor hook, another thread) may have resized or replaced the
    // running statistics, or (through `.data`) the batch statistics the forward saved for backward.
    TORCH_CHECK(stats_writable() && writable(mean, stats_dtype, c) && writable(var, stats_dtype, c),
                "gencore.batch_norm_leaky_relu: running_mean, running_var or the batch statistics changed "
                "shape, dtype or layout while the forward ran (in a saved-tensor hook or another thread); the "
                "running statistics were not updated");
    if (stats_dtype == at::kDouble) {
      update_running<double>(*running_mean, *running_var, mean, var, factor, per_channel);
    } else {
      update_running<float>(*running_mean, *running_var, mean, var, factor, per_channel);
    }
  }
  return y;
}

}  // namespace

void bind_batch_norm_leaky_relu_step(pybind11::module_& m) {
  m.def("batch_norm_leaky_relu_step", &batch_norm_leaky_relu_step, pybind11::arg("x"), pybind11::arg("running_mean"),
        pybind11::arg("running_var"), pybind11::arg("weight"), pybind11::arg("bias"), pybind11::arg("training"),
        pybind11::arg("momentum"), pybind11::arg("eps"), pybind11::arg("negative_slope"),
        pybind11::arg("num_batches_tracked") = pybind11::none(),
        "Eager CPU fast path of gencore.ops.batch_norm_leaky_relu (out of place): the forward op and the "
        "running-statistics update (and a module's num_batches_tracked) in one call; None when the Python "
        "path must run instead.");
}

}  // namespace gencore
