"""Drop-in modules built on gencore.ops."""
from gencore.nn.losses import KLDivergence

__all__ = ["KLDivergence"]
