"""Checkpoints written atomically and loaded without running code (torch.load(weights_only=True))."""
from __future__ import annotations

import os
import tempfile

import torch

CHECKPOINT_FORMAT = "gencore-checkpoint-v1"


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`: a crash
    leaves either the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a gencore checkpoint; a folder means its checkpoint.pt. Pickled objects are refused
    (weights_only=True), and anything that is not a gencore checkpoint is a clear ValueError."""
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle holding objects weights_only refuses
        raise ValueError(f"{path} is not a loadable gencore checkpoint (corrupt, or it holds pickled "
                         f"objects, which are refused): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a gencore checkpoint (no format tag {CHECKPOINT_FORMAT!r})")
    return ckpt
