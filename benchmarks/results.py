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


# Names of fields an op file may add that are measurements too (they differ between providers of one
# case): floor_ms, vs_floor, saved_activation_bytes, peak_allocated_bytes, ...
MEASURED_SUFFIXES = ("_ms", "_s", "_us", "_gbps", "_bytes", "_ratio", "_fraction")
MEASURED_PREFIXES = ("vs_", "speedup", "peak", "memory", "achieved", "time_")


def is_measured(name: str) -> bool:
    return name in MEASURED_FIELDS or name.endswith(MEASURED_SUFFIXES) or name.startswith(MEASURED_PREFIXES)


def case_key(extra_info: dict) -> tuple:
    """What a result measures, without who measured it: results with equal keys are comparable."""
    return tuple(sorted((k, repr(v)) for k, v in extra_info.items() if not is_measured(k)))


def variant(extra_info: dict) -> str:
    """The case-describing fields beyond CORE_FIELDS, as 'k=v, ...' ('' when none)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(extra_info.items())
                     if not is_measured(k) and k not in CORE_FIELDS)


def _id_without_provider(r: dict) -> str:
    param, provider = r.get("param") or r.get("name") or "", r["extra_info"]["provider"]
    return param.replace(provider, "").strip("-_")


def group_by_case(results: list[dict]) -> list[dict]:
    """[{provider: result}] for the gencore results (extra_info with op and provider), one dict per case.

    Two results of one provider with the same case_key mean the op file varied something it did not
    record in extra_info (say, negative_slope); those are told apart by their pytest id with the
    provider's name taken out, marked in extra_info["case_id"], and a warning says to record the field."""
    import warnings

    keyed: dict = {}
    for r in results:
        info = r.get("extra_info") or {}
        if "op" in info and "provider" in info:
            keyed.setdefault(case_key(info), []).append(r)
    cases = []
    for key, rs in keyed.items():
        providers = [r["extra_info"]["provider"] for r in rs]
        if len(set(providers)) == len(providers):
            cases.append({r["extra_info"]["provider"]: r for r in rs})
            continue
        warnings.warn(f"{len(rs)} results share the case {dict(key)} with repeated providers; telling them apart "
                      "by pytest id. Record what differs in extra_info (run_benchmark(extra={{...}})).",
                      stacklevel=2)
        split: dict = {}
        for r in rs:
            r["extra_info"]["case_id"] = _id_without_provider(r)
            split.setdefault(r["extra_info"]["case_id"], {})[r["extra_info"]["provider"]] = r
        cases += split.values()
    return cases


def add_ratios(results: list[dict], stat: str = "median") -> None:
    """Fill speedup_vs_eager / speedup_vs_compile / memory_vs_eager / achieved_gbps / copy_fraction /
    speedup_vs_eager_at_copy_bw in
    each result's extra_info from the `stat` ("median" or "min") of the eager and compile results of
    the same case (same run)."""
    for providers in group_by_case(results):
        for r in providers.values():
            info, t = r["extra_info"], r["stats"][stat]
            for base in BASELINES:
                if base in providers and t:
                    info[f"speedup_vs_{base}"] = round(providers[base]["stats"][stat] / t, 3)
            if info.get("bytes") and t:
                info["achieved_gbps"] = round(info["bytes"] / t / 1e9, 2)
            base_mem = providers.get("eager", {}).get("extra_info", {}).get("peak_mem_bytes")
            if base_mem and info.get("peak_mem_bytes") is not None:
                info["memory_vs_eager"] = round(info["peak_mem_bytes"] / base_mem, 3)
            if info.get("achieved_gbps") and info.get("copy_gbps"):
                info["copy_fraction"] = round(info["achieved_gbps"] / info["copy_gbps"], 3)
            if "eager" in providers and info.get("bytes") and info.get("copy_gbps"):
                # The x eager of an op that moves its minimum bytes at this run's copy bandwidth: what a
                # target asks of memory. An estimate, not a bound: copy_gbps is measured with a copy of
                # about twice the op's bytes, mostly from memory, and an op whose data stays in the
                # last-level cache can beat it.
                eager_t = providers["eager"]["stats"][stat]
                info["speedup_vs_eager_at_copy_bw"] = round(eager_t * info["copy_gbps"] * 1e9 / info["bytes"], 3)
