"""`gencore.info()`: what this install has and can run (also `gencore info` on the command line)."""
from __future__ import annotations

import ctypes.util
import importlib.metadata
import os
import platform

import torch

from gencore import _native, backends


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tcmalloc_active() -> bool:
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "") or any(
        "tcmalloc" in line for line in _maps_lines())


def _maps_lines():
    try:
        with open("/proc/self/maps") as f:
            return [line for line in f if "malloc" in line]
    except OSError:
        return []


def info() -> dict:
    """Versions, native build, SIMD level, OpenMP threads, GPU and Triton status, as a dict."""
    from gencore import __version__

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                         "memory_gib": round(p.total_memory / 2**30, 1)})
    status = backends.backend_status()
    return {
        "gencore": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "") == "1",
        "platform": platform.platform(),
        "cpu_capability_torch": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "tcmalloc": _tcmalloc_active(),
        "native": {
            "loaded": _native.loaded,
            "error": _native.error,
            **_native.build_info,
            # CPU kernels write outputs of at least this size with streaming stores (GENCORE_STREAM_MIN_BYTES).
            "stream_min_bytes": (_native.module.stream_min_bytes()
                                 if _native.loaded and hasattr(_native.module, "stream_min_bytes") else None),
        },
        "gpus": gpus,
        "backends": {name: ("available" if why is None else f"unavailable: {why}") for name, why in status.items()},
        "backend_choice": backends.get_backend(),
        "auto_for": {dev: backends._auto(dev, backends.BACKENDS) for dev in ("cpu", "cuda")
                     if dev == "cpu" or torch.cuda.is_available()},
    }


def format_info(data: dict | None = None) -> str:
    data = info() if data is None else data
    native = data["native"]
    lines = [
        f"gencore      {data['gencore']}",
        f"python       {data['python']}   torch {data['torch']} (CUDA {data['torch_cuda'] or 'none'})",
        f"platform     {data['platform']}",
        f"triton       {data['triton'] or 'not installed'}" + ("   (TRITON_INTERPRET=1)" if data["triton_interpret"] else ""),
        f"allocator    {'tcmalloc' if data['tcmalloc'] else 'system malloc'}",
    ]
    if native["loaded"]:
        lines.append(f"native       built: SIMD {native['simd']}, OpenMP {'on' if native['openmp'] else 'off'} "
                     f"({native['openmp_max_threads']} threads), CUDA kernels {'yes' if native['cuda'] else 'no'}")
        lines.append(f"             compiler {native['compiler']}; flags {native['cxx_flags']}")
        if native.get("stream_min_bytes") is not None:
            lines.append(f"             streaming stores for CPU outputs >= {native['stream_min_bytes'] / 2**20:.1f} MiB")
        if native["cuda"]:
            lines.append(f"             CUDA arch list {native['cuda_arch_list']}")
    else:
        lines.append(f"native       missing: {native['error']}")
    if data["gpus"]:
        for g in data["gpus"]:
            lines.append(f"gpu {g['index']}        {g['name']} (compute capability {g['compute_capability']}, "
                         f"{g['memory_gib']} GiB)")
    else:
        lines.append("gpu          none")
    lines.append(f"backend      choice: {data['backend_choice']}; auto picks "
                 + ", ".join(f"{b} for {d} tensors" for d, b in data["auto_for"].items()))
    for name, state in data["backends"].items():
        lines.append(f"  {name:<8}   {state}")
    return "\n".join(lines)
