"""Reproducible experiments (multi-seed protocols) built on gencore.training."""
