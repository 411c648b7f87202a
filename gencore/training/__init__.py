"""Training loops, run folders and checkpoints (`gencore train` is the command-line front end)."""
from gencore.training.checkpoint import atomic_save, load_checkpoint
from gencore.training.config import TrainConfig, resolve
from gencore.training.trainer import Trainer, build_models, trainer_from_checkpoint

__all__ = ["TrainConfig", "resolve", "Trainer", "build_models", "trainer_from_checkpoint", "atomic_save",
           "load_checkpoint"]
