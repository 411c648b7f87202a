"""Reading pytest-benchmark results the way gencore's suites write them (no torch needed, so a report can
be made anywhere from a JSON file copied off a GPU machine). Used by conftest.py and report.py."""
from __future__ import annotations

# extra_info fields that are measurements or run conditions, not part of what a case *is*.
MEASURED_FIELDS = frozenset({
    "provider", "bytes", "achieved_gbps", "copy_gbps", "allocator", "threads", "peak_mem_bytes",
    "peak_mem_error", "rss_growth_bytes", "speedup_vs_eager", "speedup_vs_compile", "memory_vs_eager",
    "copy_fraction", "targets", "target_provider", "rounds",
})
# Every case is timed against these two; their names are fixed across op files.
BASELINES = ("eager", "compile")
# Fields every case has; the others (e.g. negative_slope, reduction) are shown as a "variant".
CORE_FIELDS = ("op", "shape", "dtype", "mode", "device")


def case_key(extra_info: dict) -> tuple:
    """What a result measures, without who measured it: results with equal keys are comparable."""
    return tuple(sorted((k, repr(v)) for k, v in extra_info.items() if k not in MEASURED_FIELDS))


def variant(extra_info: dict) -> str:
    """The case-describing fields beyond CORE_FIELDS, as 'k=v, ...' ('' when none)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(extra_info.items())
                     if k not in MEASURED_FIELDS and k not in CORE_FIELDS)


def add_ratios(results: list[dict]) -> None:
    """Fill speedup_vs_eager / speedup_vs_compile / memory_vs_eager / copy_fraction in each result's
    extra_info from the medians of the eager and compile results of the same case (same run)."""
    by_case: dict = {}
    for r in results:
        info = r.get("extra_info") or {}
        if "op" in info and "provider" in info:
            by_case.setdefault(case_key(info), {})[info["provider"]] = r
    for providers in by_case.values():
        for r in providers.values():
            info, median = r["extra_info"], r["stats"]["median"]
            for base in BASELINES:
                if base in providers and median:
                    info[f"speedup_vs_{base}"] = round(providers[base]["stats"]["median"] / median, 3)
            base_mem = providers.get("eager", {}).get("extra_info", {}).get("peak_mem_bytes")
            if base_mem and info.get("peak_mem_bytes") is not None:
                info["memory_vs_eager"] = round(info["peak_mem_bytes"] / base_mem, 3)
            if info.get("achieved_gbps") and info.get("copy_gbps"):
                info["copy_fraction"] = round(info["achieved_gbps"] / info["copy_gbps"], 3)
