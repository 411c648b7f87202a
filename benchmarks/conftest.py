"""Shared benchmark machinery: providers, copy-bandwidth floor, extra_info every result carries.

Every result's extra_info holds: op, shape, dtype, mode (forward | forward+backward | train-step),
provider (eager | compile | gencore-<backend>, or fused for whole models), device, bytes (what the op
must move at minimum; None for whole training steps), achieved_gbps and copy_gbps (this machine's copy
bandwidth, measured once per run at a similar size), allocator, threads. Optional: peak_mem_bytes
(peak extra memory allocated during one call, see `peak_memory`), rss_growth_bytes (CPU), any
case-describing fields passed as `extra=` (e.g. negative_slope, batch), and `targets` (see
benchmarks/report.py). When the JSON is written (--benchmark-json), `pytest_benchmark_update_json`
adds to every result the ratios to the eager and torch.compile results of the same case in the same
run (speedup_vs_eager, speedup_vs_compile, memory_vs_eager) and its fraction of copy bandwidth.

Cases are told apart by every extra_info field except the measured ones (`MEASURED_FIELDS`), so an op
file that adds a field such as negative_slope gets separate rows without any change here or in the report.

Allocator: glibc malloc serves every CPU allocation of 32 MB or more with a fresh mmap and unmaps it on
free, so each call would page-fault its large outputs in again (an empty+copy of 32 MB costs 3x a copy
into an existing buffer) and the timings would show the kernel's page faults rather than its work.
tcmalloc and jemalloc keep freed memory; at start the benchmarks tell glibc to do the same (mallopt: no
mmap, no trimming), for every provider alike. GENCORE_BENCH_MALLOC=system keeps glibc's defaults.
extra_info["allocator"] says which ran. Because freed memory is kept, rss_growth_bytes depends on what
ran earlier in the process (it was a lower bound already).

Quick mode (GENCORE_BENCH_QUICK=1 or --quick) runs 5 to 50 rounds (of as many calls as fill about 2 ms) and
op files skip their largest sizes; the whole suite then finishes in a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import time

import pytest
import torch

import gencore
from benchmarks.memory import peak_memory
from benchmarks.results import MEASURED_FIELDS, add_ratios, case_key  # noqa: F401 (re-exported)
from gencore.info import _tcmalloc_active

_copy_cache: dict = {}


def _set_up_allocator() -> str:
    """Makes glibc malloc keep freed memory (see the module docstring); returns the allocator's name."""
    if _tcmalloc_active():
        return "tcmalloc"
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return "jemalloc"
    if os.environ.get("GENCORE_BENCH_MALLOC", "") == "system" or platform.system() != "Linux":
        return "system malloc"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        trim_ok = libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
        mmap_ok = trim_ok and libc.mallopt(m_mmap_max, 0) == 1
    except (OSError, AttributeError):
        return "system malloc"
    if mmap_ok:
        return "glibc malloc, freed memory kept (mallopt)"
    return "glibc malloc, no trimming (mallopt)" if trim_ok else "system malloc"


ALLOCATOR = _set_up_allocator()

# torch.compile baselines are compiled per shape, as a user with fixed shapes gets them: without this,
# the second shape a compiled function sees makes dynamo recompile it for dynamic shapes (slower code,
# and an inductor error for DCGAN's backward in torch 2.13), and after 8 recompiles it silently falls
# back to eager.
torch._dynamo.config.automatic_dynamic_shapes = False
torch._dynamo.config.recompile_limit = 64


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


# ---------------------------------------------------------------------------------------------------
# The one timing entry point
# ---------------------------------------------------------------------------------------------------

def run_benchmark(benchmark, fn, *, op, shape, dtype, mode, provider, device, nbytes, quick=False,
                  warmup=2, rounds=None, memory=False, extra=None):
    """Time fn (synchronized on GPU) and record the standard extra_info.

    nbytes: bytes the op must move at minimum (None when that is not meaningful, e.g. a training step).
    warmup: untimed calls first (compilation, autotuning, page faults).
    rounds: timed rounds in pedantic mode (default in quick mode: 5 to 50, as many as fit in about
      0.1 s; otherwise pytest-benchmark's own calibration).
    memory: also measure the peak memory of one call (`peak_memory`), outside the timed rounds.
    extra: more case-describing fields for extra_info (e.g. {"negative_slope": 0.2}); they separate
      cases in the report.
    """
    def timed():
        out = fn()
        sync(device)
        return out

    elapsed = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        timed()
        elapsed = time.perf_counter() - t0
    if quick or rounds:
        # Calls per round so a round lasts about 2 ms: a 50 us op is not timed against the timer's and
        # the scheduler's granularity, and a training step still runs once per round.
        iterations = max(1, min(100, int(2e-3 / max(elapsed, 1e-6))))
        # At least 5 rounds, and up to 50 while they fit in about 0.1 s: on a shared machine a round that
        # loses the CPU for a scheduler slice (~10 ms) is common, and the median needs most rounds clean.
        if not rounds:
            rounds = max(5, min(50, int(0.1 / max(elapsed * iterations, 1e-6))))
        result = benchmark.pedantic(timed, rounds=rounds, iterations=iterations, warmup_rounds=0)
    else:
        result = benchmark(timed)
    median = benchmark.stats.stats.median if benchmark.stats else None
    info = {
        "op": op, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "mode": mode,
        "provider": provider, "device": device, "bytes": None if nbytes is None else int(nbytes),
        "copy_gbps": round(copy_bandwidth_gbps(nbytes or (64 << 20), device), 2),
        "allocator": ALLOCATOR,
        "threads": torch.get_num_threads(),
    }
    info.update(extra or {})
    benchmark.extra_info.update(info)
    if median and nbytes:
        benchmark.extra_info["achieved_gbps"] = round(nbytes / median / 1e9, 2)
    if memory:
        benchmark.extra_info.update(peak_memory(timed, device))
    return result


# ---------------------------------------------------------------------------------------------------
# Ratios and machine description in the saved JSON
# ---------------------------------------------------------------------------------------------------

def machine_description() -> dict:
    """What the report prints about the machine: CPU model, cores, memory, allocator, versions, GPUs."""
    cpu_model = platform.processor() or ""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not cpu_model:
                    cpu_model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1]
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    simd = [s for s in ("avx512f", "avx512_bf16", "amx_bf16", "avx2") if f" {s} " in f" {flags} "]
    desc = {
        "cpu": cpu_model, "cpu_flags": simd, "logical_cpus": os.cpu_count(), "memory_gib": mem_gib,
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "allocator": ALLOCATOR,
        "gencore_backends": {d: gencore.available_backends(d) for d in devices()},
        "quick": os.environ.get("GENCORE_BENCH_QUICK", "") == "1",
        "gpus": [],
    }
    try:
        from gencore import _native
        desc["gencore_native"] = {k: _native.build_info.get(k) for k in ("simd", "openmp", "cuda", "cuda_arch_list")
                                  } if _native.loaded else f"not loaded: {_native.error}"
    except Exception:  # pragma: no cover - description only
        pass
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            desc["gpus"].append(f"{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB)")
    return desc


@pytest.hookimpl(optionalhook=True)  # the regression check runs without pytest-benchmark too
def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["gencore"] = machine_description()
    machine_info["gencore"]["quick"] = quick_mode(config)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    add_ratios(output_json.get("benchmarks", []))
