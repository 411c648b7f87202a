"""The `gencore` command (also `python -m gencore`)."""
from __future__ import annotations

import argparse
import json
import os
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


# ---- train / sample / eval ------------------------------------------------------------------------
# Options that may differ between a run and its --resume (they do not change what is being trained).
RESUME_OVERRIDABLE = ("steps", "epochs", "device", "log_every", "sample_every", "checkpoint_every", "eval_samples")


class CommandError(Exception):
    """A user error of a subcommand: printed as one line, exit status 2."""


def _default_out(model: str, data: str) -> str:
    import time

    tag = data.split(":", 1)[0] if data.startswith("folder:") else data
    return os.path.join("runs", f"{model}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}")


def _cmd_train(args) -> int:
    import torch

    from gencore.training import TrainConfig, Trainer, resolve, trainer_from_checkpoint
    from gencore.training.trainer import CHECKPOINT_NAME

    given = {k: v for k, v in vars(args).items() if k not in _NON_CONFIG}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume:
        if not args.out:
            raise CommandError("--resume needs --out DIR, the run folder to continue")
        ckpt_path = os.path.join(args.out, CHECKPOINT_NAME)
        if not os.path.exists(ckpt_path):
            raise CommandError(f"--resume: {ckpt_path} does not exist")
        from gencore.training import load_checkpoint
        saved = load_checkpoint(ckpt_path)["config"]
        given["model"] = args.model
        changed = [k for k, v in given.items() if k not in RESUME_OVERRIDABLE and saved.get(k) != v]
        if changed:
            raise CommandError(f"--resume cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} "
                               f"(the checkpoint was trained with {', '.join(f'{k}={saved.get(k)!r}' for k in changed)})")
        overrides = {k: v for k, v in given.items() if k in RESUME_OVERRIDABLE}
        trainer = trainer_from_checkpoint(ckpt_path, overrides, out_dir=args.out, progress=not args.no_progress)
    else:
        cfg = resolve(TrainConfig(**given))
        out = args.out or _default_out(cfg.model, cfg.data)
        if os.path.exists(os.path.join(out, CHECKPOINT_NAME)):
            raise CommandError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
        trainer = Trainer(cfg, out, progress=not args.no_progress)
        procs = f", {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
        if trainer.dist.is_main:
            print(f"training {cfg.model} on {cfg.data} for {trainer.total_steps} steps "
                  f"({trainer.device}{procs}, fused={cfg.fused}) -> {out}", file=sys.stderr)
    try:
        summary = trainer.run()
    except KeyboardInterrupt:
        return 130
    finally:
        trainer.close()
    if not trainer.dist.is_main:
        return 0
    print(json.dumps(summary, indent=2))
    print(f"wrote {trainer.out_dir}: samples.png, losses.png, metrics.json, checkpoint.pt", file=sys.stderr)
    return 0


def _cmd_sample(args) -> int:
    from gencore.training import plots, trainer_from_checkpoint

    trainer = trainer_from_checkpoint(args.checkpoint, {"device": args.device}, load_data=False)
    samples = trainer.generate(args.n, seed=args.seed)
    if trainer.cfg.model == "gan2d":
        if not plots.save_points_plot(samples, trainer.dataset.means, args.out, f"{args.n} samples"):
            raise CommandError("plotting 2-D samples needs matplotlib: pip install 'gencore[train]'")
    else:
        plots.save_image_grid(samples, args.out, scale=max(1, 128 // trainer.cfg.image_size))
    print(f"wrote {args.out} ({args.n} samples from step {trainer.step})")
    return 0


def _cmd_eval(args) -> int:
    from gencore.training import trainer_from_checkpoint

    overrides = {"device": args.device} | ({"eval_samples": args.n} if args.n else {})
    trainer = trainer_from_checkpoint(args.checkpoint, overrides)
    result = {"step": trainer.step, "model": trainer.cfg.model, "data": trainer.cfg.data, **trainer.evaluate()}
    text = json.dumps(result, indent=2)
    print(text)
    out = args.out or os.path.join(trainer.out_dir, "eval.json")
    with open(out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


_NON_CONFIG = {"command", "func", "out", "resume", "threads", "no_progress", "nproc"}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _add_train_parser(sub) -> None:
    from gencore.training.config import AMP_MODES, LOSSES, LR_SCHEDULES, MODELS, VAE_ARCHS

    S = argparse.SUPPRESS  # unset options keep the model's default (and --resume can tell what was given)
    p = sub.add_parser("train", help="train a DCGAN, VAE or 2-D GAN on bundled data; writes a run folder",
                       description="Train a model. Defaults are chosen so the bare command finishes in a few "
                                   "minutes on a 2-core CPU. Run folder: config.json, metrics.jsonl, real.png, "
                                   "samples/ + samples.png, losses.png, metrics.json, checkpoint.pt.")
    p.add_argument("model", choices=MODELS)
    p.add_argument("--data", default=S, help="digits (default for dcgan/vae) | ring8 (default for gan2d) | grid25 | "
                                             "fake | folder:PATH")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=_positive_int, default=S, help="optimizer steps (defaults: dcgan 1000, vae 1000, gan2d 15000 on ring8, 30000 on grid25)")
    steps.add_argument("--epochs", type=_positive_int, default=S, help="passes over the data instead of --steps")
    p.add_argument("--batch-size", type=_positive_int, default=S, help="default 64 (gan2d: 100, as PacGAN)")
    p.add_argument("--image-size", type=_positive_int, default=S, help="32 (default) or 64 (ConvVAE also 16)")
    p.add_argument("--nz", "--latent-dim", dest="nz", type=_positive_int, default=S,
                   help="noise / latent size (dcgan 100, vae 16, gan2d 2)")
    p.add_argument("--ngf", type=_positive_int, default=S, help="DCGAN generator width (default 32)")
    p.add_argument("--ndf", type=_positive_int, default=S, help="DCGAN discriminator width (default 32)")
    p.add_argument("--vae-arch", choices=VAE_ARCHS, default=S, help="conv (default) or mlp (784-400-20 style)")
    p.add_argument("--beta", type=float, default=S, help="VAE: weight of the KL term (default 1)")
    p.add_argument("--loss", choices=LOSSES, default=S, help="GAN loss: bce (non-saturating, default) or hinge")
    p.add_argument("--lr", type=float, default=S, help="Adam learning rate (dcgan 2e-4, vae 1e-3, gan2d 1e-4)")
    p.add_argument("--adam-beta1", dest="beta1", type=float, default=S, help="Adam beta1 (dcgan 0.5, gan2d 0.8, vae 0.9)")
    p.add_argument("--adam-beta2", dest="beta2", type=float, default=S, help="Adam beta2 (default 0.999)")
    p.add_argument("--ema", nargs="?", type=float, const=0.999, default=S,
                   help="keep an EMA of the generator (decay; 0.999 without a value; 0: off) and sample from it "
                        "(default: off, gan2d 0.999)")
    p.add_argument("--pack", type=_positive_int, default=S,
                   help="gan2d: PacGAN packing degree m (default per data set, see docs/training.md)")
    p.add_argument("--maxout", type=_positive_int, default=S,
                   help="gan2d: maxout pieces of the discriminator's hidden layers (default 5, PacGAN; 1: LeakyReLU)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=S,
                   help="constant learning rate, or linear decay to 0 over the run (default per model)")
    p.add_argument("--r1", type=float, default=S, help="R1 gradient penalty weight (default 0; gan2d: 0.1 on ring8, 1.0 on grid25; 0 turns it off; needs --no-fused for BatchNorm discriminators)")
    p.add_argument("--amp", choices=AMP_MODES, default=S, help="mixed precision: bf16 (CPU or GPU) or fp16 (GPU, gradient scaler)")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=S,
                   help="gencore's fused layers (default) or plain torch.nn layers (--no-fused); same checkpoints")
    p.add_argument("--backend", default=S, help="gencore backend for the fused ops: auto, torch, cpu, cuda, triton")
    p.add_argument("--device", default=S, help="auto (default: cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=S, help="random seed (default 0)")
    p.add_argument("--log-every", type=_positive_int, default=S, help="steps between loss records (default 10)")
    p.add_argument("--sample-every", type=_positive_int, default=S, help="steps between sample grids and evaluations (default: steps/5)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=S, help="steps between checkpoints (default: --sample-every)")
    p.add_argument("--eval-samples", type=_positive_int, default=S, help="samples for metrics (gan2d 2500, images 1000)")
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL-DATA-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for PyTorch (default: PyTorch's)")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--nproc", type=_positive_int, default=1,
                   help="train with N processes on this machine (DistributedDataParallel, synchronized BatchNorm; "
                        "starts `torchrun --standalone --nproc_per_node=N -m gencore train ...`); --batch-size "
                        "is then the global batch")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="generate a sample grid from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or a run folder")
    p.add_argument("--n", type=_positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="grid.png", help="PNG to write (default grid.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("eval", help="compute a checkpoint's offline metrics; prints and writes JSON")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or a run folder")
    p.add_argument("--n", type=_positive_int, default=None, help="samples to evaluate (gan2d 2500, images 1000)")
    p.add_argument("--out", default=None, help="JSON to write (default: eval.json in the run folder)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_eval)


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
    _add_train_parser(sub)
    p = sub.add_parser("bench", help="run the benchmark suite (quick mode) and write its report (source checkout)")
    p.add_argument("--out", default="bench_out", help="folder for results.json, the report and plots")
    p.add_argument("--full", action="store_true", help="full rounds and sizes instead of quick mode")
    p.add_argument("-k", default=None, help="pytest -k expression to select benchmarks")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=_cmd_bench)
    return parser


def _launch_nproc(argv: list[str], nproc: int) -> int:
    """`gencore train --nproc N ...`: the same command under torchrun (one node, N processes)."""
    import subprocess

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "gencore", *rest]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "train" and args.nproc > 1:
        from gencore.training.distributed import env_world_size
        if env_world_size() > 1:
            raise SystemExit("gencore train: error: --nproc starts its own processes; under torchrun leave it out")
        return _launch_nproc(argv, args.nproc)
    if args.command in ("train", "sample", "eval"):
        try:
            return args.func(args)
        except (CommandError, ValueError, FileNotFoundError, RuntimeError) as exc:
            print(f"gencore {args.command}: error: {exc}", file=sys.stderr)
            return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
