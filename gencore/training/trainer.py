"""The training loops (GAN: non-saturating BCE on logits or hinge, optional generator EMA and R1
penalty; VAE: ELBO with a beta-weighted KL), run folders, pictures, metrics and resumable checkpoints.

A run folder holds: config.json, metrics.jsonl (losses every log_every steps, evaluations at each
sample interval), real.png, samples/step_NNNNNN.png and samples.png (latest, from fixed noise),
losses.png, metrics.json (final evaluation) and checkpoint.pt.

Determinism: all training randomness comes from torch's default generator (noise, reparameterization)
and the data stream's own generator, both saved in the checkpoint; pictures and evaluations use
separate generators, so they never shift the training stream. On the CPU a run stopped and resumed
therefore gives bit-identical losses and weights.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

import gencore
from gencore import data as gdata
from gencore import metrics as gmetrics
from gencore.models import (ConvVAE, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator,
                            MLPVAE, pacgan_init)
from gencore.models.layers import is_batch_norm, is_fused
from gencore.training import distributed as gdist
from gencore.training import plots
from gencore.training.checkpoint import CHECKPOINT_FORMAT, atomic_save, load_checkpoint
from gencore.training.config import LEGACY_EMA_OFF, LEGACY_VALUES, TrainConfig, resolve

CHECKPOINT_NAME = "checkpoint.pt"
EMA_BN_BATCHES = 20  # batches of fresh noise that re-estimate the EMA generator's BatchNorm statistics


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a device name (cpu, cuda, cuda:1, auto)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA GPU is available")
    return device


def build_models(cfg: TrainConfig, dataset: gdata.Dataset) -> dict[str, torch.nn.Module]:
    """The model(s) of a run, shaped by the data set."""
    if cfg.model == "gan2d":
        if dataset.kind != "points":
            raise ValueError(f"gan2d trains on 2-D points (ring8, grid25), not on {dataset.name}")
        # PacGAN's init (N(0, 0.02) weights, zero biases) for both networks.
        return {"G": pacgan_init(MLPGenerator(nz=cfg.nz, out_dim=2, fused=cfg.fused)),
                "D": pacgan_init(MLPDiscriminator(in_dim=2, pack=cfg.pack, maxout=cfg.maxout, fused=cfg.fused))}
    if dataset.kind != "image":
        raise ValueError(f"{cfg.model} trains on images (digits, folder:PATH, fake), not on {dataset.name}")
    nc = dataset.sample_shape[0]
    if cfg.model == "dcgan":
        return {"G": DCGANGenerator(nz=cfg.nz, ngf=cfg.ngf, nc=nc, image_size=cfg.image_size, fused=cfg.fused),
                "D": DCGANDiscriminator(ndf=cfg.ndf, nc=nc, image_size=cfg.image_size, fused=cfg.fused)}
    if cfg.vae_arch == "conv":
        return {"vae": ConvVAE(nc=nc, image_size=cfg.image_size, latent_dim=cfg.nz, fused=cfg.fused)}
    shape = dataset.sample_shape
    return {"vae": MLPVAE(input_dim=math.prod(shape), latent_dim=cfg.nz, image_shape=shape, fused=cfg.fused)}


class _Progress:
    """tqdm when installed and enabled; otherwise plain log lines about 20 times per run."""

    def __init__(self, total: int, initial: int, enabled: bool, stream=None):
        self.total, self.n, self.stream = total, initial, stream or sys.stderr
        self.start, self.start_n = time.perf_counter(), initial
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, file=stream, unit="step")
            except ImportError:
                pass
        self.every = max(1, total // 20)
        self.postfix = ""

    def update(self, losses: dict | None) -> None:
        self.n += 1
        if losses is not None:
            self.postfix = " ".join(f"{k}={v:.4f}" for k, v in losses.items())
            if self.bar is not None:
                self.bar.set_postfix_str(self.postfix, refresh=False)
        if self.bar is not None:
            self.bar.update(1)
        elif self.n % self.every == 0 or self.n == self.total:
            rate = (self.n - self.start_n) / max(time.perf_counter() - self.start, 1e-9)
            eta = (self.total - self.n) / max(rate, 1e-9)
            print(f"step {self.n}/{self.total} {self.postfix} {rate:.1f} it/s ETA {eta:.0f}s",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Builds everything from a config (or a checkpoint) and runs the loop into `out_dir`."""

    def __init__(self, cfg: TrainConfig, out_dir: str, checkpoint: dict | None = None, progress: bool = True,
                 log=print, load_data: bool = True, step_callback=None):
        self.cfg = cfg = resolve(cfg)
        self.out_dir, self.progress, self.log = out_dir, progress, log
        # step_callback(step, total_steps), called after every step, replaces the progress bar (a caller
        # that runs many trainings keeps one bar over all of them).
        self.step_callback = step_callback
        self.device = resolve_device(cfg.device)
        self.dist = gdist.setup(self.device)
        if self.dist.enabled:
            if self.device.type == "cuda" and self.device.index is None:
                self.device = torch.device("cuda", self.dist.local_rank)  # one GPU per process
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if cfg.r1:
                raise ValueError(f"--r1 (double backward) is not supported with more than one process (gan2d "
                                 f"uses R1 {cfg.r1} by default on {cfg.data}); add --r1 0")
            if cfg.batch_size // cfg.pack < self.dist.world_size:
                raise ValueError(f"--batch-size {cfg.batch_size} is the global batch, split over "
                                 f"{self.dist.world_size} processes (in whole packs of --pack {cfg.pack}): "
                                 "every process needs at least one")
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("--amp fp16 needs a CUDA device (float16 autocast + gradient scaler); "
                             "on the CPU use --amp bf16")
        if cfg.backend is not None:
            gencore.set_backend(cfg.backend)
        torch.manual_seed(cfg.seed)
        if checkpoint is not None and not load_data and cfg.data.startswith("folder:"):
            # Sampling/evaluating a folder-trained model needs only the image shape, not the images.
            shape = tuple(checkpoint["sample_shape"])
            self.dataset = gdata.Dataset(cfg.data, "image", torch.zeros(cfg.batch_size, *shape, dtype=torch.uint8))
        else:
            self.dataset = gdata.load_dataset(cfg.data, cfg.image_size, seed=cfg.seed)
        self.models = {k: m.to(self.device) for k, m in build_models(cfg, self.dataset).items()}
        self.stream = gdata.BatchStream(len(self.dataset), cfg.batch_size, cfg.seed + 1)
        self.total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * self.stream.batches_per_epoch
        betas = (cfg.beta1, cfg.beta2)
        # fused=True: one multi-tensor kernel per step instead of a Python loop over the parameters (the
        # for-loop Adam is PyTorch's CPU default): the two optimizers of a gan2d step took 5.6 ms, now 1.2.
        self.optims = {k: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=betas, fused=True)
                       for k, m in self.models.items()}
        self.ema = None
        if cfg.ema:
            self.ema = copy.deepcopy(self.models["G"]).requires_grad_(False)
        # What the training steps call: the models themselves, or their DistributedDataParallel wrappers
        # (self.models keeps the bare modules, so checkpoints do not depend on the number of processes).
        self.train_models = self._distribute() if self.dist.enabled else dict(self.models)
        if cfg.r1 and any(is_fused(m) for m in self.models["D"].modules()):
            # A fused op's backward is not itself differentiable here: the penalty's gradient would
            # silently miss terms, so refuse instead.
            raise ValueError("--r1 (gradient penalty) needs double backward through the discriminator, which "
                             "gencore's fused BatchNorm+activation does not provide; add --no-fused")
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        # Fixed noise for the sample grids, from its own generator.
        g = torch.Generator().manual_seed(cfg.seed + 2)
        n_fixed = 2500 if cfg.model == "gan2d" else 64
        self.fixed_noise = torch.randn(n_fixed, cfg.nz, generator=g).to(self.device)
        self.step = 0
        if checkpoint is not None:
            self._load_state(checkpoint)
        if self.dist.rank > 0:
            # Every rank draws its own noise; rank 0 keeps the single-process stream (and the checkpoint's).
            torch.manual_seed(cfg.seed + 1_000_003 * self.dist.rank + self.step)

    def _distribute(self) -> dict[str, torch.nn.Module]:
        """Synchronized BatchNorm (gencore's fused layers on any device; nn.SyncBatchNorm for plain layers
        on CUDA) and one DistributedDataParallel wrapper per model."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        import gencore.nn as gnn
        synced = True
        for k, m in self.models.items():
            gnn.sync_batchnorm_activations(m)
            if any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules()):
                if self.device.type == "cuda":
                    self.models[k] = torch.nn.SyncBatchNorm.convert_sync_batchnorm(m)
                else:  # nn.SyncBatchNorm refuses CPU tensors
                    synced = False
        if not synced and self.dist.is_main:
            self.log("warning: --no-fused on CPU: plain nn.BatchNorm layers use each process's own batch "
                     "statistics (nn.SyncBatchNorm needs a GPU); gencore's fused layers (--fused) are synchronized")
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Synchronized BatchNorm keeps the running statistics equal on every rank: no buffer broadcasts.
        import inspect
        key = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
               else "broadcast_buffers")  # renamed in recent PyTorch
        return {k: DDP(m, device_ids=ids, **{key: not synced}) for k, m in self.models.items()}

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"format": CHECKPOINT_FORMAT, "gencore_version": gencore.__version__,
                "config": self.cfg.to_dict(), "step": self.step,
                "sample_shape": list(self.dataset.sample_shape),
                "models": {k: m.state_dict() for k, m in self.models.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optims.items()},
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict(), "data_stream": self.stream.state_dict(), "rng": rng,
                "world_size": self.dist.world_size}

    def _load_state(self, ckpt: dict) -> None:
        for k, m in self.models.items():
            m.load_state_dict(ckpt["models"][k])
        for k, o in self.optims.items():
            o.load_state_dict(ckpt["optimizers"][k])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.stream.load_state_dict(ckpt["data_stream"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        self.step = int(ckpt["step"])

    def save_checkpoint(self) -> str:
        path = os.path.join(self.out_dir, CHECKPOINT_NAME)
        atomic_save(self.state_dict(), path)
        return path

    # ---- steps --------------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _gan_step(self, real: torch.Tensor, scale: float = 1.0) -> dict:
        # G and D are the DDP wrappers when distributed; the generator step calls D's bare module, so its
        # frozen parameters never enter DDP's gradient bookkeeping.
        cfg, G, D, D_bare = self.cfg, self.train_models["G"], self.train_models["D"], self.models["D"]
        opt_g, opt_d = self.optims["G"], self.optims["D"]
        z = torch.randn(real.shape[0], cfg.nz, device=self.device)
        if cfg.r1:
            real.requires_grad_(True)
        with self._autocast():
            fake = G(z)
            d_real, d_fake = D(real), D(fake.detach())
            if cfg.loss == "bce":  # -log D(x) - log(1 - D(G(z))) on logits
                loss_d = (F.binary_cross_entropy_with_logits(d_real.float(), torch.ones_like(d_real, dtype=torch.float))
                          + F.binary_cross_entropy_with_logits(d_fake.float(), torch.zeros_like(d_fake, dtype=torch.float)))
            else:
                loss_d = F.relu(1 - d_real.float()).mean() + F.relu(1 + d_fake.float()).mean()
        out = {"loss_d": loss_d}
        if cfg.r1:
            (grad,) = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            loss_d = loss_d + 0.5 * cfg.r1 * r1
            out["r1"] = r1
        opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d * scale if scale != 1.0 else loss_d).backward()
        self.scaler.step(opt_d)

        D_bare.requires_grad_(False)  # the generator step needs no discriminator weight gradients
        with self._autocast():
            d_gen = D_bare(fake).float()
            loss_g = (F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen)) if cfg.loss == "bce"
                      else -d_gen.mean())
        opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g * scale if scale != 1.0 else loss_g).backward()
        self.scaler.step(opt_g)
        D_bare.requires_grad_(True)
        self.scaler.update()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.models["G"].parameters()), 1 - cfg.ema)
                torch._foreach_copy_(list(self.ema.buffers()), list(self.models["G"].buffers()))
        out["loss_g"] = loss_g
        out["d_real"] = torch.sigmoid(d_real.detach().float()).mean()
        out["d_fake"] = torch.sigmoid(d_fake.detach().float()).mean()
        return out

    def _vae_step(self, x: torch.Tensor, scale: float = 1.0) -> dict:
        vae, opt = self.train_models["vae"], self.optims["vae"]
        with self._autocast():
            out = vae(x)
        n = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(out.recon_logits.float(), (x + 1) / 2, reduction="sum") / n
        kl = out.kl.float() / n
        loss = recon + self.cfg.beta * kl
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss * scale if scale != 1.0 else loss).backward()
        self.scaler.step(opt)
        self.scaler.update()
        return {"loss": loss, "recon": recon, "kl": kl}

    def train_step(self) -> dict:
        """One optimizer step (both networks for a GAN); returns float losses.

        Distributed: the data stream's batch is the global batch (the same on every rank); each rank
        trains on its slice (sizes may differ by one). Losses are means over the local slice, so each is
        scaled by local/average slice size before backward: DDP's mean over ranks then is the gradient of
        the global batch's mean loss, and the logged losses are global means."""
        if self.cfg.lr_schedule == "linear":
            # Linear decay to 0 at total_steps; a function of the step only, so a resumed run matches.
            lr = self.cfg.lr * max(0.0, 1.0 - self.step / self.total_steps)
            for opt in self.optims.values():
                for group in opt.param_groups:
                    group["lr"] = lr
        index = self.stream.next()
        scale = 1.0
        if self.dist.enabled:
            n_global, pack = len(index), self.cfg.pack  # slices hold whole PacGAN packs
            index = index.view(-1, pack).tensor_split(self.dist.world_size)[self.dist.rank].reshape(-1)
            scale = len(index) * self.dist.world_size / n_global
        batch = self.dataset.batch(index).to(self.device, non_blocking=True)
        out = self._vae_step(batch, scale) if self.cfg.model == "vae" else self._gan_step(batch, scale)
        self.step += 1
        if self.dist.enabled:
            return gdist.average(out, len(index), self.device)
        return {k: float(v.detach()) for k, v in out.items()}

    # ---- pictures and evaluation ------------------------------------------------------------------
    def sampler(self) -> torch.nn.Module:
        if self.ema is not None:
            self._calibrate_ema_batchnorm()
            return self.ema
        return self.models.get("G", self.models.get("vae"))

    @torch.no_grad()
    def _calibrate_ema_batchnorm(self) -> None:
        """The EMA generator averages the weights, but its BatchNorm buffers are the raw generator's running
        statistics, which do not fit the averaged weights (on gan2d, eval-mode samples with them lost most
        high-quality points). Before sampling, re-estimate them for the EMA weights, like SWA's update_bn:
        the cumulative mean and variance over EMA_BN_BATCHES training-size batches of fresh noise, from a
        generator of its own (the training stream does not move). Once per step; the next training step
        copies the raw generator's buffers back, so training itself never sees these."""
        bns = [m for m in self.ema.modules() if is_batch_norm(m)]
        if not bns or getattr(self, "_ema_bn_step", None) == self.step:
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        was = self.ema.training
        self.ema.train()
        g = torch.Generator().manual_seed(self.cfg.seed + 4)
        try:
            for _ in range(EMA_BN_BATCHES):
                self.ema(torch.randn(self.cfg.batch_size, self.cfg.nz, generator=g).to(self.device))
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom
            self.ema.train(was)
        self._ema_bn_step = self.step

    @torch.no_grad()
    def generate(self, n: int | None = None, seed: int | None = None) -> torch.Tensor:
        """Samples in eval mode (running BatchNorm statistics): the fixed noise, or n from `seed`."""
        model = self.sampler()
        was = model.training
        model.eval()
        try:
            if n is None:
                z = self.fixed_noise
            else:
                g = torch.Generator().manual_seed(self.cfg.seed + 3 if seed is None else seed)
                z = torch.randn(n, self.cfg.nz, generator=g).to(self.device)
            chunks = [(model.decode(c).sigmoid() * 2 - 1) if self.cfg.model == "vae" else model(c)
                      for c in z.split(500)]
        finally:
            model.train(was)
        return torch.cat(chunks).float().cpu()

    @torch.no_grad()
    def evaluate(self) -> dict:
        cfg = self.cfg
        if cfg.model == "gan2d":
            n = cfg.eval_samples or 2500
            return gmetrics.mode_metrics(self.generate(n), self.dataset.means, self.dataset.std)
        n = cfg.eval_samples or 1000
        result = {}
        if cfg.data == "digits":
            result.update(gmetrics.digits_metrics(self.generate(n)))
            if cfg.model == "vae":
                x_test, _ = gdata.load_digits_tensor(cfg.image_size, "test")
                result.update({f"test_{k}": v for k, v in gmetrics.vae_metrics(self.models["vae"], x_test).items()})
        elif cfg.model == "vae":
            result.update(gmetrics.vae_metrics(self.models["vae"], self.dataset.batch(torch.arange(min(n, len(self.dataset))))))
        return result

    def _rng_guard(self):
        """Evaluation and pictures must not move the training random stream (resume equality)."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def save_pictures(self) -> None:
        samples = self.generate()
        title = f"{self.cfg.model} on {self.cfg.data}, step {self.step}"
        os.makedirs(os.path.join(self.out_dir, "samples"), exist_ok=True)
        path = os.path.join(self.out_dir, "samples", f"step_{self.step:06d}.png")
        if self.cfg.model == "gan2d":
            plots.save_points_plot(samples, self.dataset.means, path, title)
        else:
            plots.save_image_grid(samples, path, scale=max(1, 128 // self.cfg.image_size))
        if os.path.exists(path):
            with open(path, "rb") as src:
                data = src.read()
            tmp = os.path.join(self.out_dir, ".samples.png.tmp")
            with open(tmp, "wb") as dst:
                dst.write(data)
            os.replace(tmp, os.path.join(self.out_dir, "samples.png"))
        plots.save_loss_plot(os.path.join(self.out_dir, "metrics.jsonl"), os.path.join(self.out_dir, "losses.png"), title)

    def save_real(self) -> None:
        path = os.path.join(self.out_dir, "real.png")
        if self.cfg.model == "gan2d":
            idx = torch.arange(2500)
            plots.save_points_plot(self.dataset.batch(idx), self.dataset.means, path, f"{self.cfg.data}: real samples")
        else:
            plots.save_image_grid(self.dataset.batch(torch.arange(64)), path, scale=max(1, 128 // self.cfg.image_size))

    # ---- the loop ---------------------------------------------------------------------------------
    def _append(self, record: dict) -> None:
        with open(os.path.join(self.out_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_metrics(self) -> None:
        """On resume, drop records written after the checkpoint (a crash may have left some)."""
        path = os.path.join(self.out_dir, "metrics.jsonl")
        kept = [r for r in plots.read_metrics(path) if r["step"] <= self.step]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, path)

    def run(self) -> dict:
        """Train to total_steps; returns the final evaluation. Ctrl-C saves a checkpoint first.
        Distributed: every rank trains; only rank 0 writes files, logs, samples and evaluates (the other
        ranks return {"step", "rank"})."""
        if not self.dist.is_main:
            return self._run_worker()
        cfg = self.cfg
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, "config.json"), "w") as f:
            json.dump(cfg.to_dict() | {"total_steps": self.total_steps, "device": str(self.device),
                                       "world_size": self.dist.world_size}, f, indent=2)
        if self.step > 0:
            self._truncate_metrics()
            self.log(f"resuming at step {self.step}/{self.total_steps} in {self.out_dir}")
        else:
            open(os.path.join(self.out_dir, "metrics.jsonl"), "w").close()
            self.save_real()
        sample_every = cfg.sample_every or max(1, self.total_steps // 5)
        checkpoint_every = cfg.checkpoint_every or sample_every
        bar = _Progress(self.total_steps, self.step, self.progress) if self.step_callback is None else None
        t0 = time.perf_counter()
        try:
            while self.step < self.total_steps:
                losses = self.train_step()
                logged = None
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    logged = {k: v for k, v in losses.items() if k.startswith("loss")}
                    self._append({"step": self.step, **losses})
                if bar is not None:
                    bar.update(logged)
                else:
                    self.step_callback(self.step, self.total_steps)
                if self.step % sample_every == 0 and self.step != self.total_steps:
                    with self._rng_guard():
                        self._append({"step": self.step, "eval": self.evaluate()})
                        self.save_pictures()
                if self.step % checkpoint_every == 0 and self.step != self.total_steps:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            path = self.save_checkpoint()
            self.log(f"interrupted at step {self.step}: saved {path}; continue with --resume --out {self.out_dir}")
            raise
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        self.save_checkpoint()
        with self._rng_guard():
            final = self.evaluate()
            self._append({"step": self.step, "eval": final})
            self.save_pictures()
        summary = {"step": self.step, "model": cfg.model, "data": cfg.data, "train_seconds": round(elapsed, 2),
                   **final}
        with open(os.path.join(self.out_dir, "metrics.json"), "w") as f:
            json.dump(summary, f, indent=2)
        return summary


    def close(self) -> None:
        """Leave the process group. The DDP wrappers go first: a DDP reducer that outlives the group and
        frees it at interpreter exit deadlocks PyTorch's gloo shutdown (its worker thread needs the GIL
        that the freeing thread holds)."""
        if self.dist.enabled:
            import gc
            self.train_models = dict(self.models)
            gc.collect()
            gdist.teardown(self.dist)

    def _run_worker(self) -> dict:
        """A rank other than 0: the same steps (the collectives pair with rank 0's), no files."""
        while self.step < self.total_steps:
            self.train_step()
        return {"step": self.step, "rank": self.dist.rank}


def trainer_from_checkpoint(path: str, overrides: dict | None = None, out_dir: str | None = None,
                            progress: bool = False, log=print, load_data: bool = True) -> Trainer:
    """Rebuild a run from its checkpoint (for --resume, sample and eval). `overrides` may change the
    step budget, the device and the intervals, nothing that would change what is being trained."""
    ckpt = load_checkpoint(path)
    # Options added after a checkpoint was written take the values it was trained with.
    cfg = TrainConfig.from_dict({**LEGACY_VALUES, **ckpt["config"]})
    if cfg.ema is None:  # saved as None: trained without EMA (only a default may switch it on now)
        cfg.ema = LEGACY_EMA_OFF
    for k, v in (overrides or {}).items():
        if k in ("steps", "epochs"):
            cfg.steps, cfg.epochs = None, None
        setattr(cfg, k, v)
    if out_dir is None:
        out_dir = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return Trainer(cfg, out_dir, checkpoint=ckpt, progress=progress, log=log, load_data=load_data)
