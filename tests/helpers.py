"""Shared test helpers: backend/device parametrization and comparisons that explain their failures."""
from __future__ import annotations

import pytest
import torch

import gencore
from gencore.backends import BACKENDS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (atol, rtol) against a float64 reference, per input dtype (DESIGN §4).
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 2e-3),
    torch.bfloat16: (1e-2, 1.6e-2),
}


def backend_device_params():
    """Every (backend, device) pair; pairs that cannot run here are skipped with the reason."""
    params = []
    for device in DEVICES:
        for backend in BACKENDS:
            params.append(pytest.param(backend, device, id=f"{backend}-{device}"))
    return params


def skip_unless_runs(backend: str, device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if backend not in gencore.available_backends(device):
        pytest.skip(f"backend {backend} not available for {device}: {gencore.backend_status()[backend]}")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "",
                 scale: float = 1.0) -> None:
    """Compare in float64 with the dtype's tolerance; on failure report mismatch count and worst index."""
    atol, rtol = TOLERANCES[dtype]
    a = actual.detach().to("cpu", torch.float64)
    # The best a kernel can do is the exact value rounded to its dtype (overflow to inf included).
    e = expected.detach().to("cpu").to(dtype).to(torch.float64)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    assert not nan_mismatch.any(), f"{what}: NaN pattern differs at {nan_mismatch.nonzero()[:5].tolist()}"
    a, e = torch.nan_to_num(a), torch.nan_to_num(e)
    bad = (a - e).abs() > atol * scale + rtol * e.abs()
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        worst = ((a - e).abs() - rtol * e.abs()).argmax()
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.numel()} mismatches (dtype {dtype}, atol {atol * scale}, rtol {rtol}); "
            f"first bad indices {idx}; worst: got {a.flatten()[worst].item()!r}, "
            f"expected {e.flatten()[worst].item()!r}")


# setup.py's default compile flags, for probes when the extension is not built.
DEFAULT_CXX_FLAGS = "-O3 -std=c++20 -fopenmp -fno-math-errno -fno-trapping-math -march=native"


def build_native_probe(tmp_path_factory, source: str):
    """Compile tests/native/<source> into a shared library with the flags the extension was built with
    (recorded in its build info; setup.py's defaults when it is not built), so the vectorized code paths
    of the headers are the ones the kernels run, and load it with ctypes."""
    import ctypes
    import os
    import shutil
    import subprocess

    from gencore import _native

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip(f"no C++ compiler to build {source}")
    flags = (_native.build_info.get("cxx_flags") or DEFAULT_CXX_FLAGS).split()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path_factory.mktemp("probe") / (os.path.splitext(source)[0] + ".so")
    subprocess.run([cxx, *flags, "-shared", "-fPIC", f"-I{root}/csrc", f"{root}/tests/native/{source}", "-o", str(out)],
                   check=True)
    return ctypes.CDLL(str(out))


def c_ptr(t: torch.Tensor):
    """A tensor's data pointer for a ctypes call into a native probe."""
    import ctypes

    return ctypes.c_void_p(t.data_ptr())
