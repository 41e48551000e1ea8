"""Stable-Baselines3's vector-env interface over :class:`~mlir_rl.MlirRlVectorEnv` (one ``StepMany`` call per step).

SB3 (and sb3-contrib's MaskablePPO) take any ``VecEnv``; wrapping the batched env in :class:`Sb3VecEnv` gives them
the server's parallel steps instead of a ``DummyVecEnv`` that steps sessions one call at a time, or a
``SubprocVecEnv`` of processes::

    from mlir_rl.sb3 import make_sb3_vec
    venv = make_sb3_vec(8, "train", server="127.0.0.1:50051")
    model = MaskablePPO("MultiInputPolicy", venv)   # action masks: venv.env_method("action_masks")

Nothing here imports stable_baselines3 unless it is installed: then :class:`Sb3VecEnv` subclasses its
``stable_baselines3.common.vec_env.VecEnv`` (SB3 checks ``isinstance``, and would otherwise wrap the env in a
``DummyVecEnv``); without it the class has the same methods (duck-typed). The conventions are SB3's:

- ``reset()`` returns the observations only; the infos are in ``reset_infos``; seeds (``seed(s)``: ``s + i``) and
  options (``set_options``) apply to the next reset only.
- ``step_async(actions)`` / ``step_wait()`` → ``(obs, rewards, dones, infos)``: ``dones`` = terminated or truncated,
  ``infos`` a list of dicts with ``TimeLimit.truncated`` (truncated and not terminated); an episode that ends is
  reset in the same step, its last observation in ``infos[i]["terminal_observation"]`` and the new episode's reset
  info in ``reset_infos[i]``.
- ``get_attr`` / ``set_attr`` / ``env_method`` / ``env_is_wrapped`` / ``has_attr`` take ``indices`` (None, an int
  or a sequence).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .env import DEFAULT_SERVER
from .errors import InvalidArgumentError
from .vector import AutoresetMode, MlirRlVectorEnv, _stack

try:  # pragma: no cover - depends on the environment
    from stable_baselines3.common.vec_env import VecEnv as _Sb3VecEnvBase

    HAVE_SB3 = True
except Exception:  # pragma: no cover - depends on the environment (ImportError, or a broken torch install)
    _Sb3VecEnvBase = object
    HAVE_SB3 = False

__all__ = ["Sb3VecEnv", "make_sb3_vec", "HAVE_SB3"]


def make_sb3_vec(num_envs: int, benchmark: Any = None, *, server: str = DEFAULT_SERVER, **kwargs: Any) -> "Sb3VecEnv":
    """:class:`Sb3VecEnv` over ``mlir_rl.make_vec(num_envs, benchmark, server=server, **kwargs)``."""
    return Sb3VecEnv(MlirRlVectorEnv(num_envs, benchmark, server=server, **kwargs))


class Sb3VecEnv(_Sb3VecEnvBase):  # type: ignore[misc,valid-type]
    """SB3's ``VecEnv`` API over an :class:`~mlir_rl.MlirRlVectorEnv` (which it closes with itself).

    ``observation_space`` and ``action_space`` are a single sub-environment's (SB3's convention); ``venv`` is the
    wrapped vector env, ``envs`` its sub-environments.
    """

    def __init__(self, venv: MlirRlVectorEnv):
        if not isinstance(venv, MlirRlVectorEnv):
            raise InvalidArgumentError(f"Sb3VecEnv wraps an MlirRlVectorEnv, got {type(venv).__name__}")
        self.venv = venv
        self._actions: Optional[Any] = None
        n = venv.num_envs
        if HAVE_SB3:  # pragma: no cover - depends on the environment
            _Sb3VecEnvBase.__init__(self, n, venv.single_observation_space, venv.single_action_space)
        else:
            self.num_envs = n
            self.observation_space = venv.single_observation_space
            self.action_space = venv.single_action_space
            self.render_mode = venv.render_mode
            self.metadata = {"render_modes": [] if venv.render_mode is None else [venv.render_mode]}
        self.reset_infos: List[Dict[str, Any]] = [{} for _ in range(n)]
        self._seeds: List[Optional[int]] = [None] * n
        self._options: List[Dict[str, Any]] = [{} for _ in range(n)]

    @property
    def envs(self) -> List[Any]:
        return self.venv.envs

    # -- stepping ----------------------------------------------------------------------------------------------

    def reset(self) -> Dict[str, np.ndarray]:
        """Resets every sub-environment (with the seeds and options set since the last reset) and returns the
        stacked observations; the infos are in ``reset_infos``."""
        self.venv._check_open()
        for i, env in enumerate(self.venv.envs):
            _, self.reset_infos[i] = env.reset(seed=self._seeds[i], options=self._options[i] or None)
        self.venv._ended = []
        self._seeds = [None] * self.num_envs
        self._options = [{} for _ in range(self.num_envs)]
        return _stack([env._obs for env in self.venv.envs])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> Any:
        """``(obs, rewards, dones, infos)`` of the actions given to :meth:`step_async`, with same-step autoreset."""
        if self._actions is None:
            raise InvalidArgumentError("step_wait() without step_async(actions)")
        actions, self._actions = self._actions, None
        rewards, terminated, truncated, entries = self.venv._step(actions, AutoresetMode.SAME_STEP)
        infos: List[Dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i, info, reset_info, final_obs in entries:
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if reset_info is not None:
                info["terminal_observation"] = final_obs
                self.reset_infos[i] = reset_info
            infos[i] = info
        obs = _stack([env._obs for env in self.venv.envs])
        return obs, rewards.astype(np.float32), terminated | truncated, infos

    def step(self, actions: np.ndarray) -> Any:
        self.step_async(actions)
        return self.step_wait()

    def action_masks(self) -> np.ndarray:
        """Every sub-environment's flat mask, stacked: shape ``(num_envs, sum(nvec))`` (sb3-contrib's MaskablePPO
        asks ``env_method("action_masks")``, which gives the same rows)."""
        return self.venv.action_masks()

    def seed(self, seed: Optional[int] = None) -> List[Optional[int]]:
        """Seeds for the next reset: ``seed + i`` for sub-environment ``i`` (a random seed when None)."""
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self._seeds = [int(seed) + i for i in range(self.num_envs)]
        return list(self._seeds)

    def set_options(self, options: Any = None) -> None:
        """Reset options (``benchmark``, ``replay_actions``) for the next reset: one dict for all, or one each."""
        if options is None:
            options = {}
        self._options = [dict(options) for _ in range(self.num_envs)] if isinstance(options, dict) \
            else [dict(o or {}) for o in options]

    def close(self) -> None:
        self.venv.close()

    # -- the sub-environments ----------------------------------------------------------------------------------

    def _targets(self, indices: Any) -> List[Any]:
        envs = self.venv.envs
        if indices is None:
            return list(envs)
        if isinstance(indices, (int, np.integer)):
            return [envs[int(indices)]]
        return [envs[int(i)] for i in indices]

    def get_attr(self, attr_name: str, indices: Any = None) -> List[Any]:
        return [getattr(env, attr_name) for env in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        for env in self._targets(indices):
            setattr(env, attr_name, value)

    def has_attr(self, attr_name: str) -> bool:
        return all(hasattr(env, attr_name) for env in self.venv.envs)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> List[Any]:
        return [getattr(env, method_name)(*method_args, **method_kwargs) for env in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> List[bool]:
        """Whether each sub-environment is wrapped in ``wrapper_class``: they are bare :class:`MlirRlEnv`\\ s."""
        out = []
        for env in self._targets(indices):
            wrapped, e = False, env
            while e is not None and not wrapped:
                wrapped = isinstance(e, wrapper_class) and e is not env
                e = getattr(e, "env", None)
            out.append(wrapped)
        return out

    def get_images(self) -> Sequence[None]:
        return [None] * self.num_envs  # no image rendering: render() gives the IR text

    def render(self, mode: Optional[str] = None) -> List[str]:
        """Each sub-environment's current IR text (the only render mode, "ansi")."""
        return list(self.venv.render())

    # -- what SB3's VecEnvWrapper asks of the VecEnv it wraps ------------------------------------------------

    @property
    def unwrapped(self) -> "Sb3VecEnv":
        return self

    def getattr_depth_check(self, name: str, already_found: bool) -> Optional[str]:
        if hasattr(self, name) and already_found:
            return f"{type(self).__module__}.{type(self).__name__}"
        return None

    def _get_indices(self, indices: Any) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, (int, np.integer)):
            return [int(indices)]
        return indices

    def __repr__(self) -> str:
        return f"Sb3VecEnv({self.venv!r})"
