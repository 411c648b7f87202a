"""Build script for gencore's native extension (gencore._C).

Every build variable is documented in README.md ("Build variables"). In short:
  GENCORE_NO_NATIVE=1      pure-Python install (the `torch` backend serves everything; Triton still works)
  GENCORE_CUDA=auto|0|1    CUDA kernels: auto = when PyTorch has CUDA and nvcc is found; 1 = force; 0 = off
  TORCH_CUDA_ARCH_LIST     CUDA architectures (PyTorch's own variable), e.g. "8.0;9.0"
  GENCORE_CPU_ARCH         value for -march= (default "native"; "x86-64-v3" for a portable AVX2 build)
  GENCORE_DEBUG=1          -O0 -g instead of -O3
  MAX_JOBS                 parallel compile jobs (PyTorch's own variable)

The extension needs PyTorch at build time, so install with `pip install --no-build-isolation .`
(PyTorch's extension-cpp does the same). Without PyTorch importable, setup installs pure Python.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def env_flag(name, default="0"):
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


def native_extensions():
    if env_flag("GENCORE_NO_NATIVE"):
        print("gencore: GENCORE_NO_NATIVE=1, installing pure Python", file=sys.stderr)
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("gencore: PyTorch is not importable at build time (use --no-build-isolation); "
              "installing pure Python", file=sys.stderr)
        return [], {}

    debug = env_flag("GENCORE_DEBUG")
    cpu_arch = os.environ.get("GENCORE_CPU_ARCH", "native").strip()
    cuda_mode = os.environ.get("GENCORE_CUDA", "auto").strip().lower()
    cuda_home = cpp_extension.CUDA_HOME
    nvcc_found = cuda_home is not None and os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))
    if cuda_mode in ("1", "true", "yes", "on"):
        with_cuda = True
    elif cuda_mode in ("0", "false", "no", "off"):
        with_cuda = False
    else:
        with_cuda = torch.version.cuda is not None and nvcc_found
    if with_cuda and torch.version.cuda is None:
        raise RuntimeError("gencore: GENCORE_CUDA=1 but this PyTorch has no CUDA support")

    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx = opt + ["-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    if cpu_arch:
        cxx.append(f"-march={cpu_arch}")
    macros = [
        ("GENCORE_CXX_FLAGS", '"' + " ".join(cxx) + '"'),
        ("GENCORE_TORCH_VERSION", '"' + torch.__version__ + '"'),
    ]
    sources = (glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/bindings/*_cpu.cpp")
               + ["csrc/bindings/registration.cpp", "csrc/bindings/autograd.cpp",
                  "csrc/bindings/batch_norm_leaky_relu_step.cpp"])
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra = {"cxx": cxx}
    ext_cls = cpp_extension.CppExtension
    if with_cuda:
        ext_cls = cpp_extension.CUDAExtension
        sources += glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/bindings/*_cuda.cpp")
        macros += [("GENCORE_WITH_CUDA", None),
                   ("GENCORE_CUDA_ARCH_LIST", '"' + os.environ.get("TORCH_CUDA_ARCH_LIST", "auto") + '"')]
        extra["nvcc"] = opt + ["-std=c++17", "--use_fast_math", "-lineinfo"]
    print(f"gencore: building native extension (cuda={with_cuda}, march={cpu_arch or 'default'}, "
          f"debug={debug})", file=sys.stderr)
    ext = ext_cls(
        name="gencore._C",
        sources=sorted(sources),
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = native_extensions()

setup(
    packages=find_packages(include=["gencore", "gencore.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
