"""Shared benchmark machinery: providers, copy-bandwidth floor, extra_info every result carries.

Every result's extra_info holds: op, shape, dtype, mode (forward | forward+backward), provider
(eager | compile | gencore-<backend>), bytes (what the op must move at minimum), achieved_gbps and
copy_gbps (this machine's copy bandwidth, measured once per run at a similar size), allocator.
Ratios between providers are computed from one run's JSON by `python -m benchmarks.report`.
Quick mode (GENCORE_BENCH_QUICK=1 or --quick) runs fewer rounds and skips the largest sizes.
"""
from __future__ import annotations

import os
import time

import pytest
import torch

import gencore
from gencore.info import _tcmalloc_active

_copy_cache: dict = {}


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", help="fewer rounds, skip the largest sizes")


def quick_mode(config) -> bool:
    return config.getoption("--quick") or os.environ.get("GENCORE_BENCH_QUICK", "") == "1"


@pytest.fixture(scope="session")
def quick(request) -> bool:
    return quick_mode(request.config)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth_gbps(nbytes: int, device: str) -> float:
    """Best-of-N copy bandwidth (read + write bytes / time) for a buffer of about nbytes."""
    key = (device, max(nbytes, 1 << 20).bit_length())
    if key not in _copy_cache:
        n = max(nbytes // 4, 1 << 18)
        src = torch.randn(n, device=device)
        dst = torch.empty_like(src)
        best = float("inf")
        for _ in range(10):
            sync(device)
            t0 = time.perf_counter()
            dst.copy_(src)
            sync(device)
            best = min(best, time.perf_counter() - t0)
        _copy_cache[key] = 2 * src.numel() * 4 / best / 1e9
    return _copy_cache[key]


def backend_providers(device: str) -> list[str]:
    return [f"gencore-{b}" for b in gencore.available_backends(device)
            if not (b == "triton" and device == "cpu")]  # the interpreter is not a speed path


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run_benchmark(benchmark, fn, *, op, shape, dtype, mode, provider, device, nbytes, quick=False):
    """Time fn (synchronized on GPU) and record the standard extra_info."""
    def timed():
        out = fn()
        sync(device)
        return out

    for _ in range(2):  # warm-up: compilation, autotuning, page faults
        timed()
    if quick:
        result = benchmark.pedantic(timed, rounds=5, iterations=1, warmup_rounds=0)
    else:
        result = benchmark(timed)
    median = benchmark.stats.stats.median if benchmark.stats else None
    benchmark.extra_info.update({
        "op": op, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "mode": mode,
        "provider": provider, "device": device, "bytes": int(nbytes),
        "copy_gbps": round(copy_bandwidth_gbps(nbytes, device), 2),
        "allocator": "tcmalloc" if _tcmalloc_active() else "system",
        "threads": torch.get_num_threads(),
    })
    if median:
        benchmark.extra_info["achieved_gbps"] = round(nbytes / median / 1e9, 2)
    return result
