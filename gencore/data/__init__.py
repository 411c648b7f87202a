"""Training data that needs no download: scikit-learn's bundled 8x8 digits, the 2-D Gaussian mixtures of
the PacGAN/VEEGAN experiments, any local folder of images, and random tensors for timing.

`load_dataset(spec, image_size)` with spec one of: digits | ring8 | grid25 | fake | folder:PATH.
Images come as float tensors in [-1, 1] (N, C, H, W); 2-D points as (N, 2).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

DATASET_NAMES = ("digits", "ring8", "grid25", "fake", "folder:PATH")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DIGITS_TEST_SIZE = 297  # held out of the 1797 digits (fixed split) for VAE ELBO and classifier accuracy


@dataclass
class Dataset:
    """In-memory data set. `data` is float in [-1, 1], or uint8 for folders (converted per batch)."""
    name: str
    kind: str  # "image" or "points"
    data: torch.Tensor
    labels: torch.Tensor | None = None
    means: torch.Tensor | None = None  # mixture means (points only)
    std: float | None = None  # mixture component std (points only)
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        x = self.data[index]
        return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x


# ---- 2-D Gaussian mixtures ----------------------------------------------------------------------------
MIXTURES = {
    # PacGAN/VEEGAN "2D-ring": 8 modes at angle 2*pi*k/8 on radius 1, std 0.01.
    "ring8": dict(std=0.01),
    # PacGAN/VEEGAN "2D-grid": 25 modes at {-4,-2,0,2,4}^2, std 0.05.
    "grid25": dict(std=0.05),
}
MIXTURE_TRAIN_SIZE = 100_000  # PacGAN trains on 100k samples


def mixture_means(name: str) -> torch.Tensor:
    if name == "ring8":
        angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        return torch.stack([angle.cos(), angle.sin()], 1).float()
    if name == "grid25":
        v = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        return torch.cartesian_prod(v, v)
    raise ValueError(f"unknown mixture {name!r}; choose ring8 or grid25")


def sample_mixture(name: str, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n points from the equal-weight mixture, and the index of each point's component."""
    means = mixture_means(name)
    k = torch.randint(len(means), (n,), generator=generator)
    x = means[k] + MIXTURES[name]["std"] * torch.randn(n, 2, generator=generator)
    return x, k


# ---- images ------------------------------------------------------------------------------------------
def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1]).clamp_(0, 1)


def load_digits_tensor(image_size: int, split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 bundled 8x8 digits as (N, 1, image_size, image_size) in [-1, 1], and labels.
    split: all | train (1,500) | test (297, a fixed held-out set)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise RuntimeError("the digits data set needs scikit-learn: pip install 'gencore[train]'") from exc
    if split not in ("all", "train", "test"):
        raise ValueError(f"digits: split must be all, train or test, got {split!r}")
    bunch = load_digits()  # ships inside scikit-learn: no download
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    if split != "all":
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        idx = order[:-DIGITS_TEST_SIZE] if split == "train" else order[-DIGITS_TEST_SIZE:]
        x, y = x[idx], y[idx]
    return _resize(x, image_size) * 2 - 1, y


def _list_images(path: str) -> list[str]:
    files = []
    for root, _, names in os.walk(path):
        files += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(files)


def load_folder(path: str, image_size: int) -> torch.Tensor:
    """Every PNG/JPEG under `path` (recursively), RGB, shorter side resized to image_size and
    center-cropped, as uint8 (N, 3, S, S)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise RuntimeError("folder data sets need Pillow: pip install 'gencore[train]'") from exc
    if not os.path.isdir(path):
        raise ValueError(f"folder:{path}: not a directory")
    files = _list_images(path)
    if not files:
        raise ValueError(f"folder:{path}: no PNG or JPEG images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    out = torch.empty(len(files), 3, image_size, image_size, dtype=torch.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = image_size / min(w, h)
                im = im.resize((max(image_size, round(w * s)), max(image_size, round(h * s))),
                               Image.Resampling.BICUBIC)
                w, h = im.size
                left, top = (w - image_size) // 2, (h - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
                out[i] = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(
                    image_size, image_size, 3).permute(2, 0, 1)
        except OSError as exc:
            raise ValueError(f"folder:{path}: cannot read image {f}: {exc}") from exc
    return out


def load_dataset(spec: str, image_size: int = 32, seed: int = 0, nc: int = 3) -> Dataset:
    """The data set named by `spec` (see DATASET_NAMES). `seed` fixes ring8/grid25/fake samples;
    `nc` is the channel count of `fake`."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data set must be one of {', '.join(DATASET_NAMES)}; got {spec!r}")
    if spec == "digits":
        x, y = load_digits_tensor(image_size)
        return Dataset("digits", "image", x, labels=y)
    if spec in MIXTURES:
        x, k = sample_mixture(spec, MIXTURE_TRAIN_SIZE, torch.Generator().manual_seed(seed))
        return Dataset(spec, "points", x, labels=k, means=mixture_means(spec), std=MIXTURES[spec]["std"])
    if spec == "fake":
        g = torch.Generator().manual_seed(seed)
        return Dataset("fake", "image", torch.rand(1024, nc, image_size, image_size, generator=g) * 2 - 1)
    if spec.startswith("folder:"):
        path = os.path.expanduser(spec[len("folder:"):])
        return Dataset(spec, "image", load_folder(path, image_size), extra={"path": os.path.abspath(path)})
    raise ValueError(f"unknown data set {spec!r}; choose one of {', '.join(DATASET_NAMES)}")


class BatchStream:
    """Endless shuffled mini-batches (drop-last), one permutation per epoch from its own generator, with
    a state dict so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} is larger than the data set ({n} samples)")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.position = 0, 0
        self._perm = torch.randperm(n, generator=self.generator)

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.n:
            self.epoch += 1
            self.position = 0
            self._perm = torch.randperm(self.n, generator=self.generator)
        idx = self._perm[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "perm": self._perm.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = state["perm"].clone()
        self.generator.set_state(state["generator"])
