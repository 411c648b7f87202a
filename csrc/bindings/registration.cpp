// The one place where gencore's operator schemas are defined (torch.ops.gencore.*), plus the small
// pybind11 module that reports how this extension was built, holds the CPU streaming-store threshold and
// the eager fast path of batch_norm_leaky_relu (batch_norm_leaky_relu_step.cpp).
// Kernels are registered per device in <op>_cpu.cpp / <op>_cuda.cpp; fake (meta) kernels from Python;
// autograd of the native ops in autograd.cpp.
#include <torch/extension.h>
#include <torch/library.h>

#include "cpu/stream_store.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef GENCORE_CXX_FLAGS
#define GENCORE_CXX_FLAGS ""
#endif
#ifndef GENCORE_CUDA_ARCH_LIST
#define GENCORE_CUDA_ARCH_LIST ""
#endif
#ifndef GENCORE_TORCH_VERSION
#define GENCORE_TORCH_VERSION ""
#endif

TORCH_LIBRARY(gencore, m) {
  m.def("kl_normal(Tensor mu, Tensor logvar, str reduction) -> Tensor");
  m.def("kl_normal_backward(Tensor grad, Tensor mu, Tensor logvar, str reduction) -> (Tensor, Tensor)");
  // batch_norm_leaky_relu (DESIGN §3.1, BN_CONTRACT.md): functional forward/backward, plus the in-place
  // (memory-saving) pair whose backward rebuilds the input from the output.
  m.def("batch_norm_leaky_relu_forward(Tensor x, Tensor? weight, Tensor? bias, Tensor? running_mean, "
        "Tensor? running_var, bool training, float eps, float negative_slope) -> (Tensor, Tensor, Tensor)");
  m.def("batch_norm_leaky_relu_backward(Tensor grad_y, Tensor x, Tensor? weight, Tensor? bias, "
        "Tensor save_mean, Tensor save_var, bool training, float eps, float negative_slope) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("batch_norm_leaky_relu_forward_inplace(Tensor(a!) x, Tensor? weight, Tensor? bias, "
        "Tensor? running_mean, Tensor? running_var, bool training, float eps, float negative_slope) "
        "-> (Tensor, Tensor)");
  m.def("batch_norm_leaky_relu_backward_from_output(Tensor grad_y, Tensor y, Tensor? weight, Tensor? bias, "
        "Tensor save_mean, Tensor save_var, bool training, float eps, float negative_slope) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("reparameterize(Tensor mu, Tensor logvar, Tensor seed, int offset) -> Tensor");
  m.def("reparameterize_backward(Tensor grad, Tensor logvar, Tensor seed, int offset) -> Tensor");
  m.def("reparameterize_kl(Tensor mu, Tensor logvar, Tensor seed, int offset, str reduction) -> (Tensor, Tensor)");
  m.def("reparameterize_kl_backward(Tensor grad_z, Tensor grad_kl, Tensor mu, Tensor logvar, Tensor seed, "
        "int offset, str reduction) -> (Tensor, Tensor)");
}

namespace {

const char* simd_level() {
#if defined(__AVX512F__)
  return "AVX512";
#elif defined(__AVX2__)
  return "AVX2";
#elif defined(__AVX__)
  return "AVX";
#elif defined(__SSE4_2__)
  return "SSE4.2";
#elif defined(__ARM_NEON)
  return "NEON";
#else
  return "scalar";
#endif
}

pybind11::dict build_info() {
  pybind11::dict info;
  info["simd"] = simd_level();
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_version"] = _OPENMP;
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_version"] = 0;
  info["openmp_max_threads"] = 1;
#endif
#ifdef GENCORE_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["cuda_arch_list"] = GENCORE_CUDA_ARCH_LIST;
  info["cxx_flags"] = GENCORE_CXX_FLAGS;
  info["compiler"] = __VERSION__;
  info["torch_version"] = GENCORE_TORCH_VERSION;
  return info;
}

}  // namespace

namespace gencore {
void bind_batch_norm_leaky_relu_step(pybind11::module_& m);  // batch_norm_leaky_relu_step.cpp
}  // namespace gencore

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gencore native kernels (operators live in torch.ops.gencore)";
  m.def("build_info", &build_info, "How this extension was built: SIMD level, OpenMP, CUDA, flags.");
  m.def("stream_min_bytes", &gencore::cpu::stream_min_bytes,
        "CPU kernels write outputs of at least this many bytes with streaming stores (csrc/cpu/stream_store.h).");
  m.def("set_stream_min_bytes", &gencore::cpu::set_stream_min_bytes, pybind11::arg("bytes"),
        "Overrides that threshold for this process (0: always stream); a negative value restores the default.");
  gencore::bind_batch_norm_leaky_relu_step(m);
}
