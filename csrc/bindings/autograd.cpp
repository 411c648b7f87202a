// Autograd of the native ops (torch.ops.gencore.kl_normal, reparameterize, reparameterize_kl,
// batch_norm_leaky_relu_forward), registered in C++ for the Autograd key of every device.
//
// Why C++ and not torch.library.register_autograd from Python (as the Triton twins do): the Python
// wrapper costs ~12 us per forward call and ~15 us per backward (measured on the CPU,
// docs/decisions.md), which was a third of a VAE-sized reparameterize_kl step (128 x 128). The
// functions below only save tensors and call the forward/backward ops through the dispatcher, so each
// device's kernel is picked there and the fake (meta) kernels registered from Python still serve
// torch.compile, which traces these functions like any C++ autograd kernel.
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "bindings/glue.h"

namespace gencore {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using Pair = std::tuple<Tensor, Tensor>;

// KL(N(mu, exp(logvar)) || N(0, I)); backward reads mu and logvar.
struct KlNormal : torch::autograd::Function<KlNormal> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar, c10::string_view reduction) {
    static const auto op = find_op<Tensor(const Tensor&, const Tensor&, c10::string_view)>("gencore::kl_normal");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({mu, logvar});
    ctx->saved_data["reduction"] = std::string(reduction);
    return op.call(mu, logvar, reduction);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto op = find_op<Pair(const Tensor&, const Tensor&, const Tensor&, c10::string_view)>(
        "gencore::kl_normal_backward");
    const auto saved = ctx->get_saved_variables();
    auto [dmu, dlogvar] = op.call(grads[0], saved[0], saved[1], ctx->saved_data["reduction"].toStringRef());
    return {dmu, dlogvar, Tensor()};
  }
};

// z = mu + exp(0.5 logvar) * eps; backward saves only logvar and the one-element seed and regenerates
// eps (csrc/cpu/reparameterize.cpp says why).
struct Reparameterize : torch::autograd::Function<Reparameterize> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar, const Tensor& seed,
                        int64_t offset) {
    static const auto op =
        find_op<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t)>("gencore::reparameterize");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({logvar, seed});
    ctx->saved_data["offset"] = offset;
    return op.call(mu, logvar, seed, offset);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto op = find_op<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t)>(
        "gencore::reparameterize_backward");
    const auto saved = ctx->get_saved_variables();
    Tensor dlogvar = op.call(grads[0], saved[0], saved[1], ctx->saved_data["offset"].toInt());
    return {grads[0], dlogvar, Tensor(), Tensor()};
  }
};

// (z, kl) in one pass; backward saves mu, logvar and the seed.
struct ReparameterizeKl : torch::autograd::Function<ReparameterizeKl> {
  static tensor_list forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar, const Tensor& seed,
                             int64_t offset, c10::string_view reduction) {
    static const auto op = find_op<Pair(const Tensor&, const Tensor&, const Tensor&, int64_t, c10::string_view)>(
        "gencore::reparameterize_kl");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({mu, logvar, seed});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["reduction"] = std::string(reduction);
    auto [z, kl] = op.call(mu, logvar, seed, offset, reduction);
    return {z, kl};
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto op = find_op<Pair(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                        int64_t, c10::string_view)>("gencore::reparameterize_kl_backward");
    const auto saved = ctx->get_saved_variables();
    auto [dmu, dlogvar] = op.call(grads[0], grads[1], saved[0], saved[1], saved[2], ctx->saved_data["offset"].toInt(),
                                  ctx->saved_data["reduction"].toStringRef());
    return {dmu, dlogvar, Tensor(), Tensor(), Tensor()};
  }
};

// BatchNorm + LeakyReLU: (y, batch mean, biased batch variance). The statistics are not differentiable
// (the running-statistics update uses them): the wrapper returns them detached, and backward ignores
// their gradients. (Not mark_non_differentiable: PyTorch keeps that list in the node, and compiled
// autograd then fails an internal assert on every backward through it.) Backward reads x and the saved
// statistics. In C++ for the same reason as the others: torch.library's Python wrapper cost ~80 us per
// forward+backward (its setup_context path rebuilds the schema's defaults on every call), about the
// whole eager nn.BatchNorm2d + nn.LeakyReLU step on a small batch (measured 2026-11-29).
struct BatchNormLeakyRelu : torch::autograd::Function<BatchNormLeakyRelu> {
  using Opt = std::optional<Tensor>;
  static tensor_list forward(AutogradContext* ctx, const Tensor& x, const Opt& weight, const Opt& bias,
                             const Opt& running_mean, const Opt& running_var, bool training, double eps,
                             double negative_slope) {
    static const auto op = find_op<std::tuple<Tensor, Tensor, Tensor>(
        const Tensor&, const Opt&, const Opt&, const Opt&, const Opt&, bool, double, double)>(
        "gencore::batch_norm_leaky_relu_forward");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, mean, var] = op.call(x, weight, bias, running_mean, running_var, training, eps, negative_slope);
    ctx->save_for_backward({x, weight.value_or(Tensor()), bias.value_or(Tensor()), mean, var});
    ctx->saved_data["training"] = training;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["negative_slope"] = negative_slope;
    return {y, mean, var};
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto op = find_op<std::tuple<Tensor, Tensor, Tensor>(
        const Tensor&, const Tensor&, const Opt&, const Opt&, const Tensor&, const Tensor&, bool, double, double)>(
        "gencore::batch_norm_leaky_relu_backward");
    const auto saved = ctx->get_saved_variables();
    const auto optional = [](const Tensor& t) { return t.defined() ? Opt(t) : Opt(); };
    auto [dx, dw, db] = op.call(grads[0], saved[0], optional(saved[1]), optional(saved[2]), saved[3], saved[4],
                                ctx->saved_data["training"].toBool(), ctx->saved_data["eps"].toDouble(),
                                ctx->saved_data["negative_slope"].toDouble());
    return {dx, saved[1].defined() ? dw : Tensor(), saved[2].defined() ? db : Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor> batch_norm_leaky_relu_forward_autograd(
    const Tensor& x, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
    const std::optional<Tensor>& running_mean, const std::optional<Tensor>& running_var, bool training, double eps,
    double negative_slope) {
  auto out = BatchNormLeakyRelu::apply(x, weight, bias, running_mean, running_var, training, eps, negative_slope);
  return {out[0], out[1].detach(), out[2].detach()};
}

Tensor kl_normal_autograd(const Tensor& mu, const Tensor& logvar, c10::string_view reduction) {
  return KlNormal::apply(mu, logvar, reduction);
}

Tensor reparameterize_autograd(const Tensor& mu, const Tensor& logvar, const Tensor& seed, int64_t offset) {
  return Reparameterize::apply(mu, logvar, seed, offset);
}

Pair reparameterize_kl_autograd(const Tensor& mu, const Tensor& logvar, const Tensor& seed, int64_t offset,
                                c10::string_view reduction) {
  auto out = ReparameterizeKl::apply(mu, logvar, seed, offset, reduction);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gencore, Autograd, m) {
  m.impl("kl_normal", &kl_normal_autograd);
  m.impl("reparameterize", &reparameterize_autograd);
  m.impl("reparameterize_kl", &reparameterize_kl_autograd);
  m.impl("batch_norm_leaky_relu_forward", &batch_norm_leaky_relu_forward_autograd);
  // The backward ops have no derivative of their own. With this fallback their outputs carry a grad_fn
  // that raises "derivative for gencore::<op> is not implemented" when differentiated again (double
  // backward, e.g. a gradient penalty through a fused layer), where PyTorch's default would warn and
  // return silently zero second-order gradients. A first backward with create_graph=True still works.
  for (const char* name : {"kl_normal_backward", "reparameterize_backward", "reparameterize_kl_backward",
                           "batch_norm_leaky_relu_backward", "batch_norm_leaky_relu_backward_from_output"}) {
    m.impl(name, torch::autograd::autogradNotImplementedFallback());
  }
}

}  // namespace gencore
