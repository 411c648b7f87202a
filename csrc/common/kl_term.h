// The KL(N(mu, var) || N(0, 1)) term and its gradients, written once for the CPU and CUDA kernels of
// kl_normal and reparameterize_kl (DESIGN §3.3). `var` = exp(logvar) is passed in because callers
// compute it their own way (vectorized exp on the CPU, expf on CUDA, std*std in the fused sampler).
#pragma once
#include "common/vec_math.h"

namespace gencore {

template <typename C>
GENCORE_HD C kl_term_from_var(C m, C lv, C var) {
  return C(-0.5) * (C(1) + lv - m * m - var);
}

// d term / d mu and d term / d logvar, times the incoming gradient g (already scaled by the reduction).
template <typename C>
GENCORE_HD C kl_grad_mu(C g, C m) {
  return g * m;
}

template <typename C>
GENCORE_HD C kl_grad_logvar(C g, C var) {
  return C(0.5) * g * (var - C(1));
}

}  // namespace gencore
