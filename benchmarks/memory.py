"""Peak memory of one call: allocator statistics (CPU and GPU) and resident-set growth (CPU, Linux).
Used by conftest.run_benchmark(memory=True); importable without side effects (tests use it)."""
from __future__ import annotations

import torch


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu_peak_allocated(fn) -> int:
    """Peak of (bytes allocated - bytes freed) through PyTorch's CPU allocator during fn, from the
    profiler's memory events. Counts every tensor PyTorch, gencore and inductor allocate; not the
    malloc arenas or page cache around them, which is what RSS would add."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler import MEMORY_EVENT_NAME
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == MEMORY_EVENT_NAME and e.device_type() == DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def peak_memory(fn, device: str) -> dict:
    """Run fn once (warm it up first) and return the memory it needed above what was live before it.

    peak_mem_bytes: GPU: torch.cuda.max_memory_allocated() - memory_allocated() at the start;
    CPU: the same quantity from the profiler's allocator events (`_cpu_peak_allocated`).
    rss_growth_bytes (CPU, Linux): peak resident set during fn minus resident set before it; a lower
    bound that misses memory the allocator already held from earlier calls.
    """
    out: dict = {}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        out["peak_mem_bytes"] = int(torch.cuda.max_memory_allocated() - base)
        return out
    before = _rss_kib("VmRSS")
    if before is not None and _reset_peak_rss():
        fn()
        hwm = _rss_kib("VmHWM")
        if hwm is not None:
            out["rss_growth_bytes"] = max(0, hwm - before) * 1024
    try:
        out["peak_mem_bytes"] = int(_cpu_peak_allocated(fn))
    except Exception as exc:  # the profiler is optional machinery; timing results stay valid without it
        out["peak_mem_error"] = f"{type(exc).__name__}: {exc}"
    return out
