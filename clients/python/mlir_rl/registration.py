"""Gymnasium's plugin hook (entry point group ``gymnasium.envs``, name ``mlir_rl``): placeholder.

Gymnasium calls :func:`register_envs` for every installed package that declares the entry point (Gymnasium 0.26 to
0.29 do so on ``import gymnasium``), so it must stay cheap and must not raise. Not implemented yet: it registers no
environment id; the registration comes with the Gymnasium 1.x work, which will replace this function.
"""

from __future__ import annotations


def register_envs() -> None:
    """Registers mlir-rl's Gymnasium environment ids. Placeholder: registers none yet."""
    return None
