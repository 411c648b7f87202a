"""The CPU kernels' 16-bit storage conversions (csrc/cpu/scalar_types.h) against PyTorch's own: every
float16 / bfloat16 bit pattern to float32 exactly, and float32 to 16 bits with round-to-nearest-even,
overflow, subnormals, signed zeros, inf and NaN, through a ctypes probe compiled with the extension's
flags (so the vectorized code paths are the ones tested)."""
import ctypes

import pytest
import torch

from helpers import build_native_probe, c_ptr


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return build_native_probe(tmp_path_factory, "scalar_types_probe.cpp")


def _all_patterns():
    return torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.uint16).view(torch.int16)


def _float_cases():
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-2**31, 2**31 - 1, (1 << 20,), generator=g, dtype=torch.int64).to(torch.int32)
    wide = bits.view(torch.float32)  # every exponent, NaNs with payloads included
    near = torch.randn(1 << 18, generator=g) * torch.exp2(torch.randint(-30, 20, (1 << 18,), generator=g).float())
    halves = _all_patterns().view(torch.float16).float()
    ties = ((halves[:-1] + halves[1:]) / 2)[torch.isfinite(halves[:-1] + halves[1:])]  # exact midpoints
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 65519.99, 65520.0,
                            -65520.0, 1e-8, 2.98e-8, 2.9802322e-8, 6.1035156e-5, 6.0975552e-5, 3.4e38])
    return torch.cat([wide, near, halves, ties, special]).contiguous()


@pytest.mark.parametrize("kind,dtype", [("half", torch.float16), ("bfloat16", torch.bfloat16)])
def test_16bit_to_float_is_exact_for_every_pattern(probe, kind, dtype):
    src = _all_patterns().contiguous()
    out = torch.empty(src.numel(), dtype=torch.float32)
    getattr(probe, f"probe_{kind}_to_float")(c_ptr(src), c_ptr(out), ctypes.c_int64(src.numel()))
    expected = src.view(dtype).float()
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(out), nan)
    assert torch.equal(out[~nan].view(torch.int32), expected[~nan].view(torch.int32))  # bits: signed zeros too


@pytest.mark.parametrize("kind,dtype", [("half", torch.float16), ("bfloat16", torch.bfloat16)])
def test_float_to_16bit_rounds_like_torch(probe, kind, dtype):
    src = _float_cases()
    out = torch.empty(src.numel(), dtype=torch.int16)
    getattr(probe, f"probe_float_to_{kind}")(c_ptr(src), c_ptr(out), ctypes.c_int64(src.numel()))
    expected = src.to(dtype)
    got = out.view(dtype)
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(got), nan)
    mismatch = (got[~nan].view(torch.int16) != expected[~nan].view(torch.int16)).nonzero()
    assert mismatch.numel() == 0, f"{mismatch.numel()} mismatches, first inputs {src[~nan][mismatch[:5, 0]].tolist()}"
