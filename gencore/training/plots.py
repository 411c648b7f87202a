"""Pictures of a run: image grids and 2-D scatter plots of samples, and loss curves."""
from __future__ import annotations

import json
import math
import os

import torch


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> uint8 (H', W', 3) grid, nrow images per row (default: square)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = torch.full((3, padding + rows * (h + padding), padding + nrow * (w + padding)), 255, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i, :3]
    return grid.permute(1, 2, 0).contiguous()


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise RuntimeError("saving PNG pictures needs Pillow: pip install 'gencore[train]'") from exc
    return Image


def save_image_grid(images: torch.Tensor, path: str, nrow: int | None = None, scale: int = 1) -> None:
    """Save images in [-1, 1] as one PNG grid; `scale` enlarges small images (nearest neighbour)."""
    Image = _pil()
    grid = image_grid(images, nrow)
    im = Image.fromarray(grid.numpy())
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    im.save(path)


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def save_points_plot(points: torch.Tensor, means: torch.Tensor | None, path: str, title: str = "") -> bool:
    """Scatter of generated 2-D points (blue) over the mixture means (red crosses). False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    p = points.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4, c="tab:blue", label="generated")
    if means is not None:
        ax.scatter(means[:, 0], means[:, 1], s=40, marker="x", c="tab:red", label="modes")
        lim = float(means.abs().max()) * 1.5
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_loss_plot(metrics_path: str, path: str, title: str = "") -> bool:
    """Loss curves from metrics.jsonl (raw and moving average). False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    records = [r for r in read_metrics(metrics_path) if "eval" not in r]
    if not records:
        return False
    keys = [k for k in records[0] if k.startswith("loss")]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [r["step"] for r in records]
    for k in keys:
        v = torch.tensor([float(r[k]) for r in records])
        line, = ax.plot(steps, v, alpha=0.25)
        w = max(1, len(v) // 25)
        smooth = torch.nn.functional.avg_pool1d(v[None, None], w, 1).flatten() if len(v) >= w else v
        ax.plot(steps[w - 1:], smooth, color=line.get_color(), label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
