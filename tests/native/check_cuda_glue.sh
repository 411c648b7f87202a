#!/usr/bin/env bash
# Compile-check the CUDA torch glue (csrc/bindings/*_cuda.cpp) without a GPU or a CUDA PyTorch install:
# the CPU wheel of torch lacks c10/cuda's generated headers, so the glue is otherwise first compiled on
# the GPU machine. Takes the headers (and, for the link check, libc10*.so / libtorch*.so) from a CUDA
# torch wheel file or an unpacked/installed torch package folder.
#
#   bash tests/native/check_cuda_glue.sh /path/to/torch-X.Y.Z-cp3XX-...-x86_64.whl
#   bash tests/native/check_cuda_glue.sh /path/to/site-packages   # a folder holding torch/include
#
# Steps: g++ -c of each *_cuda.cpp with setup.py's host flags (-std=c++20, -DGENCORE_WITH_CUDA);
# nvcc -c of each csrc/cuda/*.cu with the flags torch's CUDAExtension adds (no half/bf16 conversions,
# --expt-relaxed-constexpr) plus setup.py's; then a shared-library link with --no-undefined against
# c10, c10_cuda, torch_cpu and cudart, which catches a launcher the glue calls but no .cu instantiates.
set -euo pipefail
src="${1:?usage: check_cuda_glue.sh TORCH_WHEEL_OR_SITE_PACKAGES}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CUDA="${CUDA_HOME:-/usr/local/cuda}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -f "$src" ]; then
  unzip -q "$src" 'torch/include/*' 'torch/lib/libc10*.so' 'torch/lib/libtorch.so' 'torch/lib/libtorch_cpu.so' torch/version.py \
    -d "$work/pkg"
  src="$work/pkg"
fi
T="$src/torch/include"
[ -f "$T/c10/cuda/impl/cuda_cmake_macros.h" ] || { echo "no CUDA headers under $T (a CPU build?)" >&2; exit 1; }
PYINC=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
defs=(-DGENCORE_WITH_CUDA '-DGENCORE_CUDA_ARCH_LIST="9.0"' '-DGENCORE_CXX_FLAGS="check"'
      '-DGENCORE_TORCH_VERSION="check"' -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C)
incs=(-I"$ROOT/csrc" -isystem "$T" -isystem "$T/torch/csrc/api/include" -isystem "$CUDA/include" -isystem "$PYINC")
for f in "$ROOT"/csrc/bindings/*_cuda.cpp "$ROOT"/csrc/bindings/autograd.cpp; do
  echo "g++ -c $(basename "$f")"
  g++ -c -fPIC -O1 -Wall -Wextra -Werror -std=c++20 "${defs[@]}" "${incs[@]}" "$f" -o "$work/$(basename "$f").o"
done
for f in "$ROOT"/csrc/cuda/*.cu; do
  echo "nvcc -c $(basename "$f")"
  nvcc -c -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr -Xcompiler -fPIC "${defs[@]}" "${incs[@]}" \
    -O3 -std=c++17 --use_fast_math -lineinfo -gencode arch=compute_90,code=sm_90 "$f" -o "$work/$(basename "$f").o"
done
if [ -f "$src/torch/lib/libc10_cuda.so" ]; then
  echo "link --no-undefined"
  g++ -shared -o "$work/glue.so" "$work"/*.o -L"$src/torch/lib" -lc10 -lc10_cuda -ltorch_cpu -ltorch \
    -L"$CUDA/lib64" -lcudart -Wl,--no-undefined -Wl,--allow-shlib-undefined
else
  echo "no libc10_cuda.so under $src/torch/lib: link check skipped"
fi
echo "CUDA glue OK against $(cat "$src/torch/version.py" 2>/dev/null | grep -m1 "^__version__" || echo "$T")"
