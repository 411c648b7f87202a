"""Offline evaluation metrics: nothing is downloaded.

- 2-D mixtures (VEEGAN / PacGAN protocol): each generated point goes to its nearest mode; it is
  high quality when that distance is within 3 standard deviations; a mode counts as covered when at
  least `min_count` (PacGAN: 20 of 2,500) high-quality points fall on it; reverse KL compares the
  histogram of points over nearest modes with the uniform mixture weights.
- digits: a small MLP classifier that gencore trains on scikit-learn's digits (deterministic, cached on
  disk) gives class coverage, confidence, and its hidden features give a Fréchet distance and a
  kernel inception distance (KID) against the real digits.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

# ---- 2-D mixtures ------------------------------------------------------------------------------------
def mode_metrics(samples: torch.Tensor, means: torch.Tensor, std: float, min_count: int = 20) -> dict:
    """modes covered, fraction of high-quality samples, reverse KL(model histogram || uniform).

    `modes` counts the modes with at least `min_count` high-quality samples (20 of 2,500 by default:
    a mode reached by a stray point is not covered); `modes_any` counts those with at least one, as
    PacGAN's released evaluation code does, for comparison with the published tables."""
    samples, means = samples.detach().float().cpu(), means.float().cpu()
    dist = torch.cdist(samples, means)
    nearest_dist, nearest = dist.min(1)
    hq = nearest_dist <= 3 * std
    hq_counts = torch.bincount(nearest[hq], minlength=len(means))
    counts = torch.bincount(nearest, minlength=len(means)).double()
    p = counts / counts.sum()
    nz = p > 0
    reverse_kl = float((p[nz] * (p[nz] * len(means)).log()).sum())
    return {"modes": int((hq_counts >= min_count).sum()), "modes_any": int((hq_counts >= 1).sum()),
            "num_modes": len(means),
            "high_quality": float(hq.double().mean()), "reverse_kl": reverse_kl, "num_samples": len(samples)}


# ---- digits classifier -------------------------------------------------------------------------------
CLASSIFIER_VERSION = 1


class DigitsClassifier(nn.Module):
    """64 -> 128 -> 64 -> 10 MLP on 8x8 digits in [-1, 1]; `features` is the 64-d hidden layer."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """Any (N, C, H, W) images in [-1, 1] -> (N, 64): grey, area-averaged down to 8x8."""
        x = images.detach().float()
        if x.shape[1] != 1:
            x = x.mean(1, keepdim=True)
        if x.shape[-1] != 8 or x.shape[-2] != 8:
            x = F.adaptive_avg_pool2d(x, 8)
        return x.flatten(1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _cache_dir() -> str:
    return os.environ.get("GENCORE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gencore")


def train_digits_classifier(steps: int = 400) -> DigitsClassifier:
    """Deterministic: fixed seed, full-batch Adam on the 1,500 training digits at their native 8x8."""
    from gencore.data import load_digits_tensor

    x, y = load_digits_tensor(8, "train")
    cpu_rng = torch.get_rng_state()  # leave the caller's random stream untouched
    try:
        torch.manual_seed(0)
        model = DigitsClassifier()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        g = torch.Generator().manual_seed(1)
        for _ in range(steps):
            # Input noise so the classifier is not thrown by generated images' blur.
            xb = x + 0.1 * torch.randn(x.shape, generator=g)
            with torch.enable_grad():  # may be called from no_grad evaluation code
                loss = F.cross_entropy(model(xb), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        torch.set_rng_state(cpu_rng)
    return model.eval()


_CLASSIFIER: DigitsClassifier | None = None


def digits_classifier() -> DigitsClassifier:
    """The cached classifier (trained once, about a second, then loaded from the cache directory:
    $GENCORE_CACHE_DIR or ~/.cache/gencore)."""
    global _CLASSIFIER
    if _CLASSIFIER is not None:
        return _CLASSIFIER
    path = os.path.join(_cache_dir(), f"digits_classifier_v{CLASSIFIER_VERSION}.pt")
    with torch.random.fork_rng(devices=[]):  # construction draws random weights: keep the caller's stream
        model = DigitsClassifier()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
    except (OSError, RuntimeError, KeyError, EOFError, ValueError):
        model = train_digits_classifier()
        try:
            from gencore.training.checkpoint import atomic_save
            atomic_save(model.state_dict(), path)
        except OSError:
            pass  # a read-only cache only costs retraining
    _CLASSIFIER = model
    return model


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """||m1 - m2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), in float64."""
    a, b = f1.double(), f2.double()
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(s1)
    s1h = (v * w.clamp_min(0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(s1h @ s2 @ s1h).clamp_min(0).sqrt().sum()
    return float((m1 - m2).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross)


def kernel_inception_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3 of Binkowski et al."""
    a, b = f1.double(), f2.double()
    d = a.shape[1]
    kxx, kyy, kxy = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())


@torch.no_grad()
def digits_metrics(images: torch.Tensor, reference: torch.Tensor | None = None) -> dict:
    """Class coverage (classes given at least 1/4 of their uniform share), mean confidence, reverse KL
    of the predicted-class histogram, FD and KID on the classifier's features against `reference`
    (default: all 1,797 real digits at the images' size, so both sides go through the same resizing)."""
    from gencore.data import load_digits_tensor

    clf = digits_classifier()
    if reference is None:
        reference = load_digits_tensor(images.shape[-1])[0]
    logits = clf(images.cpu())
    prob = logits.softmax(1)
    pred = prob.argmax(1)
    counts = torch.bincount(pred, minlength=10).double()
    p = counts / counts.sum()
    nz = p > 0
    feats, ref_feats = clf.features(images.cpu()), clf.features(reference.cpu())
    return {"classes_covered": int((counts >= 0.25 * len(images) / 10).sum()),
            "confidence": float(prob.max(1).values.mean()),
            "class_reverse_kl": float((p[nz] * (p[nz] * 10).log()).sum()),
            "fd": frechet_distance(feats, ref_feats),
            "kid": kernel_inception_distance(feats, ref_feats),
            "num_samples": len(images)}


@torch.no_grad()
def classifier_accuracy() -> float:
    """Accuracy of the digits classifier on the 297 held-out digits."""
    from gencore.data import load_digits_tensor

    x, y = load_digits_tensor(8, "test")
    return float((digits_classifier()(x).argmax(1) == y).double().mean())


@torch.no_grad()
def vae_metrics(model, images: torch.Tensor, batch_size: int = 256, seed: int = 0) -> dict:
    """Per-image ELBO (nats, Bernoulli pixels), reconstruction BCE, KL and reconstruction MSE (in the
    [-1, 1] data scale, per pixel) on `images`, with a fixed sampling seed."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    bce = kl = mse = 0.0
    n = len(images)
    for i in range(0, n, batch_size):
        x = images[i:i + batch_size].to(device)
        out = model(x, generator=g)
        target = (x + 1) / 2
        bce += float(F.binary_cross_entropy_with_logits(out.recon_logits.float(), target, reduction="sum"))
        kl += float(out.kl)
        mse += float(((torch.sigmoid(out.recon_logits.float()) * 2 - 1 - x) ** 2).sum())
    model.train(was_training)
    return {"elbo": -(bce + kl) / n, "recon_bce": bce / n, "kl": kl / n,
            "recon_mse": mse / (n * math.prod(images.shape[1:])), "num_images": n}
