"""Training configuration: one dataclass, per-model defaults, validation with clear errors."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MODELS = ("dcgan", "vae", "gan2d")
LOSSES = ("bce", "hinge")
LR_SCHEDULES = ("constant", "linear")
AMP_MODES = ("none", "bf16", "fp16")
VAE_ARCHS = ("conv", "mlp")


@dataclass
class TrainConfig:
    model: str = "dcgan"
    data: str | None = None          # default per model: digits (dcgan, vae), ring8 (gan2d)
    steps: int | None = None         # optimizer steps in total; or
    epochs: int | None = None        # passes over the data (converted to steps)
    batch_size: int | None = None
    image_size: int = 32
    nz: int | None = None            # latent size: 100 (dcgan), 2 (gan2d), 16 (vae)
    ngf: int = 32                    # DCGAN width (64 in the paper; 32 keeps the CPU run short)
    ndf: int = 32
    vae_arch: str = "conv"
    beta: float = 1.0                # VAE: weight of the KL term (beta-VAE)
    loss: str = "bce"                # GAN loss: non-saturating BCE on logits, or hinge
    lr: float | None = None
    beta1: float | None = None
    beta2: float = 0.999
    lr_schedule: str | None = None   # constant, or linear decay to 0 over the run (default per model)
    ema: float | None = None         # EMA decay of the generator's weights (0: off; None: per model, on for gan2d)
    pack: int | None = None          # PacGAN packing degree (gan2d; default per data set, 1 elsewhere)
    maxout: int | None = None        # gan2d discriminator: maxout pieces (1: LeakyReLU blocks)
    r1: float | None = None          # R1 gradient penalty weight (needs double backward); 0 off; default per model
    amp: str = "none"
    fused: bool = True
    backend: str | None = None
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    sample_every: int | None = None  # default: 5 pictures + evaluations per run
    checkpoint_every: int | None = None  # default: with each sample grid
    eval_samples: int | None = None  # 2,500 points (VEEGAN/PacGAN protocol) or 1,000 images
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
        return cls(**d)


MODEL_DEFAULTS = {
    # DCGAN paper: Adam 2e-4, beta1 0.5, batch 128 (64 here: a 2-core CPU does more steps in the same time).
    "dcgan": dict(data="digits", steps=1000, batch_size=64, nz=100, lr=2e-4, beta1=0.5, lr_schedule="constant",
                  pack=1, maxout=1, ema=None, r1=0.0),
    "vae": dict(data="digits", steps=1000, batch_size=64, nz=16, lr=1e-3, beta1=0.9, lr_schedule="constant",
                pack=1, maxout=1, ema=None, r1=0.0),
    # PacGAN 2-D experiments: batch 100, Adam beta1 0.8, 2-d Gaussian z, N(0, 0.02) init, a maxout
    # discriminator (3 x 200 units, 5 pieces). PacGAN trains 400 epochs (400k steps, lr 1e-4); gencore's
    # default is far shorter: lr 2e-4 decayed linearly to 0, an R1 penalty on the discriminator, samples
    # from an EMA of the generator (measured choices, docs/training.md).
    "gan2d": dict(data="ring8", steps=10000, batch_size=100, nz=2, lr=2e-4, beta1=0.8, lr_schedule="linear",
                  pack=1, maxout=5, ema=0.999, r1=0.1),
}

# Per-data-set defaults of gan2d, on top of MODEL_DEFAULTS["gan2d"] (measured over several seeds by
# gencore.experiments.gan2d_protocol; results in docs/training.md). Without R1 the discriminator stayed
# at chance on the grid (loss log 4 for 30k steps: it never learned the 25 bumps) and the ring kept
# dropping a mode; with it both converge in 10-30k steps. The penalty's weight follows the data's scale
# (ring radius 1, grid spacing 2). On the grid, pack 1 with R1 was measured; pack 4 with R1 was not better.
GAN2D_DATA_DEFAULTS = {
    "ring8": dict(pack=2, r1=0.1, steps=15000),
    "grid25": dict(pack=1, r1=1.0, steps=30000),
}

# Values that checkpoints written before an option existed were trained with.
LEGACY_VALUES = {"lr_schedule": "constant", "maxout": 1, "pack": 1}
# Before gan2d had an EMA default, a saved ema of None meant "off"; 0.0 says so now.
LEGACY_EMA_OFF = 0.0


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill per-model defaults and check every option; raises ValueError naming the bad option."""
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose one of {', '.join(MODELS)}")
    c = dataclasses.replace(cfg)
    if c.data is None:
        c.data = MODEL_DEFAULTS[c.model]["data"]
    defaults = MODEL_DEFAULTS[c.model] | (GAN2D_DATA_DEFAULTS.get(c.data, {}) if c.model == "gan2d" else {})
    if c.model != "gan2d":
        if c.pack not in (None, 1):
            raise ValueError("--pack (PacGAN) applies to gan2d only")
        if c.maxout not in (None, 1):
            raise ValueError("--maxout applies to gan2d only")
    for k in ("batch_size", "nz", "lr", "beta1", "lr_schedule", "pack", "maxout", "ema", "r1"):
        if getattr(c, k) is None:
            setattr(c, k, defaults[k])
    if c.steps is not None and c.epochs is not None:
        raise ValueError("give --steps or --epochs, not both")
    if c.steps is None and c.epochs is None:
        c.steps = defaults["steps"]
    for k in ("steps", "epochs", "batch_size", "nz", "ngf", "ndf", "pack", "maxout", "log_every", "sample_every",
              "checkpoint_every", "eval_samples", "image_size"):
        v = getattr(c, k)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {v!r}")
    if c.loss not in LOSSES:
        raise ValueError(f"unknown loss {c.loss!r}; choose one of {', '.join(LOSSES)}")
    if c.amp not in AMP_MODES:
        raise ValueError(f"unknown --amp {c.amp!r}; choose one of {', '.join(AMP_MODES)}")
    if c.vae_arch not in VAE_ARCHS:
        raise ValueError(f"unknown --vae-arch {c.vae_arch!r}; choose one of {', '.join(VAE_ARCHS)}")
    if c.ema is not None and not 0.0 <= c.ema < 1.0:
        raise ValueError(f"--ema decay must be in [0, 1) (0: off), got {c.ema}")
    if c.lr <= 0 or not 0 <= c.beta1 < 1 or not 0 <= c.beta2 < 1:
        raise ValueError(f"bad Adam settings: lr={c.lr}, betas=({c.beta1}, {c.beta2})")
    if c.beta < 0 or c.r1 < 0:
        raise ValueError(f"--beta and --r1 must be >= 0, got {c.beta} and {c.r1}")
    if c.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown --lr-schedule {c.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if c.model == "vae" and (c.ema or c.r1 or c.loss != "bce"):
        raise ValueError("--ema, --r1 and --loss apply to the GAN models (dcgan, gan2d), not vae")
    if c.batch_size % c.pack:
        raise ValueError(f"--batch-size {c.batch_size} must be divisible by --pack {c.pack}")
    if c.amp == "fp16" and c.r1:
        raise ValueError("--r1 with --amp fp16 is not supported (the penalty's gradient would need unscaling); "
                         "use --amp bf16 or none")
    return c
