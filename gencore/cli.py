"""The `gencore` command (also `python -m gencore`)."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    from gencore.info import format_info, info

    data = info()
    print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0


def _cmd_demo(args) -> int:
    """A small end-to-end check: the KL term on every backend that runs here, against the reference."""
    import torch

    import gencore
    from gencore.ops import kl_normal, kl_normal_reference

    torch.manual_seed(args.seed)
    mu = torch.randn(args.batch, args.latent, dtype=torch.float64)
    logvar = torch.randn(args.batch, args.latent, dtype=torch.float64) * 0.5
    ref = kl_normal_reference(mu, logvar, "batchmean").item()
    print(f"KL(batchmean) of a {args.batch}x{args.latent} batch, float64 reference: {ref:.6f}")
    ok = True
    for backend in gencore.available_backends("cpu"):
        got = kl_normal(mu.float(), logvar.float(), "batchmean", backend=backend).item()
        err = abs(got - ref) / max(abs(ref), 1e-12)
        ok &= err < 1e-5
        print(f"  {backend:<7} float32: {got:.6f}  (relative error {err:.1e})")
    return 0 if ok else 1


def _cmd_bench(args) -> int:
    """The benchmark suite (quick mode unless --full) and its report; needs a source checkout."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "report.py").is_file():
        print(f"gencore bench: no benchmarks/ folder next to the gencore package ({root}); it runs from a "
              "source checkout (git clone, then `pip install --no-build-isolation -e .`)", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={results}"] + ([] if args.full else ["--quick"]) + (["-k", args.k] if args.k else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=root, env=env)
    if not results.is_file():
        print(f"gencore bench: pytest wrote no results (exit status {rc})", file=sys.stderr)
        return rc or 1
    report = [sys.executable, "-m", "benchmarks.report", str(results), "--out", str(out), "--quiet"]
    report += ["--no-plots"] if args.no_plots else []
    rc_report = subprocess.call(report, cwd=root, env=env)
    if rc_report == 0:
        print(f"gencore bench: results {results}, report {out / 'benchmark_report.md'}")
    return rc or rc_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gencore", description="Fused kernels for training GANs and VAEs.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, native build, SIMD, OpenMP, GPU and backend status")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("demo", help="run the fused ops on every available backend against the reference")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("bench", help="run the benchmark suite (quick mode) and write its report (source checkout)")
    p.add_argument("--out", default="bench_out", help="folder for results.json, the report and plots")
    p.add_argument("--full", action="store_true", help="full rounds and sizes instead of quick mode")
    p.add_argument("-k", default=None, help="pytest -k expression to select benchmarks")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
