"""Gymnasium registration of the mlir-rl environments.

``import mlir_rl`` calls :func:`register_envs` when gymnasium is importable, after which::

    env = gymnasium.make("mlir_rl/MlirRl-v0", benchmark="benchmark://nn-ops/matmul_64x64x64_f32",
                         server="127.0.0.1:50051")
    envs = gymnasium.make_vec("mlir_rl/MlirRl-v0", num_envs=8, server="127.0.0.1:50051")  # Gymnasium >= 1.0

``gymnasium.make("mlir_rl:mlir_rl/MlirRl-v0", ...)`` imports the package first. :func:`register_envs` is also the
target of the package's ``gymnasium.envs`` entry point (Gymnasium 0.x loads those plugins on ``import gymnasium``):
this module imports nothing of mlir_rl at module level, and the entry points are strings, so loading it while
gymnasium itself is still being imported is safe.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ENV_ID", "register_envs", "make_vector_env"]

#: Keyword arguments: those of :class:`mlir_rl.MlirRlEnv` (``benchmark``, ``server``, session options, ...).
ENV_ID = "mlir_rl/MlirRl-v0"


def _has_vector_entry_points(register: Any) -> bool:
    """Whether ``register`` takes a ``vector_entry_point`` (Gymnasium >= 1.0). Read from the signature, not from
    ``gymnasium.__version__``, which does not exist yet while Gymnasium 0.x imports its plugins."""
    import inspect

    try:
        return "vector_entry_point" in inspect.signature(register).parameters
    except (TypeError, ValueError):  # pragma: no cover - a register without a signature
        return False


def register_envs() -> bool:
    """Registers :data:`ENV_ID` with Gymnasium (idempotent). Returns False when gymnasium is not importable.

    Gymnasium >= 1.0 also gets a ``vector_entry_point``: ``gymnasium.make_vec(ENV_ID, num_envs=n, ...)`` builds one
    :class:`mlir_rl.MlirRlVectorEnv` (one ``StepMany`` call per step) instead of ``n`` separately stepped envs.
    """
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:
        return False
    if ENV_ID in registry:
        return True
    kwargs: Any = {}
    if _has_vector_entry_points(register):
        kwargs["vector_entry_point"] = "mlir_rl.registration:make_vector_env"
    register(id=ENV_ID, entry_point="mlir_rl.env:MlirRlEnv", **kwargs)
    return True


def make_vector_env(num_envs: int = 1, **kwargs: Any) -> Any:
    """``gymnasium.make_vec``'s vector entry point: :func:`mlir_rl.make_vec` with the same keyword arguments."""
    if "max_episode_steps" in kwargs:
        if kwargs["max_episode_steps"] is not None:
            raise ValueError("mlir_rl environments limit episodes with the session option max_steps (the server "
                             "ends the episode and pays the final reward); max_episode_steps is not supported")
        del kwargs["max_episode_steps"]
    from .client import make_vec

    return make_vec(num_envs, **kwargs)
