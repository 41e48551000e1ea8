"""Several mlir-rl sessions stepped together: :class:`MlirRlVectorEnv`.

One ``StepMany`` call steps every session, and the server runs the entries in parallel on its cores, so a batch of
``num_envs`` steps costs one round trip instead of ``num_envs``. The conventions are those of Gymnasium 0.29's
vector environments (``SyncVectorEnv``), with or without gymnasium installed:

- ``reset(seed=s)`` seeds sub-environment ``i`` with ``s + i``; observations are dicts of arrays stacked on a first
  axis of length ``num_envs``; rewards, ``terminated`` and ``truncated`` are arrays.
- Same-step autoreset: an environment whose episode ends is reset within the same ``step``; its returned observation
  is the new episode's first one, and the episode's last observation and info are in
  ``infos["final_observation"][i]`` and ``infos["final_info"][i]`` (masks ``infos["_final_observation"]``,
  ``infos["_final_info"]``).
- ``infos`` is a dict: each key maps to an array over the environments, with a boolean mask ``"_" + key`` saying
  which environments reported it.
- A sub-environment whose session the server no longer knows (it restarted) is rebuilt from its recorded actions
  and takes its step alone, as :class:`~mlir_rl.MlirRlEnv` does (``auto_recover``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import spaces as _spaces
from .benchmarks import BenchmarkChoice, default_order, resolve_benchmarks
from .env import DEFAULT_SERVER, DEFAULT_TIMEOUT, Connection, MlirRlEnv, _ClosesItself, _step_request
from .errors import InvalidArgumentError, MlirRlError, NotFoundError, error_class
from .v1 import env_pb2

import grpc

logger = logging.getLogger("mlir_rl")


class MlirRlVectorEnv(_ClosesItself):
    """``num_envs`` sessions of the same session options, stepped with one ``StepMany`` call per ``step``.

    Args:
        num_envs: number of sub-environments (sessions).
        benchmark: what resets start on, as for :func:`mlir_rl.make` (a URI, a list, a dataset, a split, generator
            families), shared: in ``"cycle"`` order sub-environment ``i`` takes picks ``i, i + num_envs, ...`` (a
            list of ``num_envs`` URIs gives each its own), in ``"random"`` order each draws with its own
            ``np_random``; ``None``: each picks from the train split at random.
        server, timeout, channel: as for :class:`~mlir_rl.MlirRlEnv`; all sub-environments share one channel.
        options: session options (``max_loops``, ``reward_mode``, ...), as for :class:`~mlir_rl.MlirRlEnv`.

    ``envs`` holds the sub-environments (:class:`~mlir_rl.MlirRlEnv`), e.g. for ``export_schedule``.
    """

    metadata = {"autoreset_mode": "same-step"}

    def __init__(self, num_envs: int, benchmark: Any = None, *, server: str = DEFAULT_SERVER,
                 timeout: Optional[float] = DEFAULT_TIMEOUT, channel: Optional[grpc.Channel] = None,
                 **options: Any):
        self._closed, self.envs, self._conn = True, [], None  # what close() needs, even if this raises
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise InvalidArgumentError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = num_envs
        self._conn = Connection(server, channel=channel, timeout=timeout)
        self._closed = False
        try:
            # One look-up of the names for all sub-environments; each gets its place in a shared cycle.
            choices: List[Any] = [None] * num_envs
            if benchmark is not None:
                order = options.pop("benchmark_order", None) or default_order(benchmark)
                choice = BenchmarkChoice(resolve_benchmarks(benchmark, self._catalog), order)
                choices = [choice.strided(i, num_envs) for i in range(num_envs)]
            for c in choices:
                self.envs.append(MlirRlEnv(c, server=server, timeout=timeout, channel=self._conn.channel, **options))
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        self.single_action_space = first.action_space
        self.single_observation_space = first.observation_space
        if _spaces.HAVE_GYMNASIUM:  # pragma: no cover - depends on the environment
            from gymnasium.vector.utils import batch_space
            self.action_space = batch_space(first.action_space, num_envs)
            self.observation_space = batch_space(first.observation_space, num_envs)
        self.head_names, self.nvec = first.head_names, first.nvec
        self.type_names, self.tile_sizes = first.type_names, first.tile_sizes

    def _catalog(self) -> Any:
        reply = self._conn.call("ListBenchmarks", env_pb2.ListBenchmarksRequest(), idempotent=True)
        return [(b.uri, b.dataset, b.split) for b in reply.benchmarks], list(reply.generator_families)

    # -- Gymnasium vector API ----------------------------------------------------------------------------------

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None
              ) -> Tuple["OrderedDict[str, np.ndarray]", Dict[str, Any]]:
        """Resets every sub-environment (``seed + i`` for sub-environment ``i`` when ``seed`` is given)."""
        self._check_open()
        results = [env.reset(seed=None if seed is None else seed + i, options=options)
                   for i, env in enumerate(self.envs)]
        return _stack([obs for obs, _ in results]), _merge_infos([info for _, info in results])

    def step(self, actions: Any) -> Tuple["OrderedDict[str, np.ndarray]", np.ndarray, np.ndarray, np.ndarray,
                                          Dict[str, Any]]:
        """One action per sub-environment (an array of shape ``(num_envs, len(nvec))`` or a sequence of actions).

        Raises the error of the first entry the server refused (e.g. :class:`InvalidArgumentError` for a masked
        action), naming the sub-environment, after the other sub-environments have taken their steps.
        """
        self._check_open()
        if len(actions) != self.num_envs:
            raise InvalidArgumentError(f"{len(actions)} actions given for {self.num_envs} environments")
        values = [env._action_values(a) for env, a in zip(self.envs, actions)]
        request = env_pb2.StepManyRequest(steps=[_step_request(env._require_session(), v, env._obs_id)
                                                 for env, v in zip(self.envs, values)])
        reply = self._conn.call("StepMany", request, idempotent=False)
        if len(reply.results) != self.num_envs:
            raise MlirRlError(f"StepMany answered {len(reply.results)} entries for {self.num_envs} requests")
        observations: List[Any] = [None] * self.num_envs
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: List[Dict[str, Any]] = [{} for _ in range(self.num_envs)]
        failures: List[Tuple[int, MlirRlError]] = []
        for i, (env, v, result) in enumerate(zip(self.envs, values, reply.results)):
            try:
                if result.code != 0:
                    code = next((c for c in grpc.StatusCode if c.value[0] == result.code), None)
                    error = error_class(code)(result.message)
                    if not (isinstance(error, NotFoundError) and env._auto_recover and
                            env._episode_benchmark is not None):
                        raise error
                    # The server no longer knows the session (it restarted): the entry was not applied. Rebuild the
                    # episode from the recorded actions, as MlirRlEnv does, and take this step alone.
                    logger.warning("environment %d: session %s is unknown to the server (%s); replaying %d "
                                   "action(s) to restore it", i, env.session_id, result.message, len(env._actions))
                    env._recover()
                    step = env._conn.call("Step", _step_request(env._session_id, v, env._obs_id), idempotent=False)
                    result = env_pb2.StepManyResult(reply=step)
                # The sub-environment's own arrays: _stack copies them into the batch.
                obs, rewards[i], terminated[i], truncated[i], info = env._finish_step(v, result.reply, copy=False)
                if terminated[i] or truncated[i]:
                    final_observation = OrderedDict((name, a.copy()) for name, a in obs.items())
                    final_info = info
                    obs, info = env.reset()
                    info = dict(info, final_observation=final_observation, final_info=final_info)
            except MlirRlError as e:  # the other entries' replies must still be taken
                failures.append((i, e))
                continue
            observations[i], infos[i] = obs, info
        if failures:
            i, error = failures[0]
            others = "" if len(failures) == 1 else f" ({len(failures) - 1} more refused: environments " \
                f"{', '.join(str(f[0]) for f in failures[1:])})"
            raise type(error)(f"environment {i}: {error}{others}; the other environments took their step")
        return _stack(observations), rewards, terminated, truncated, _merge_infos(infos)

    def action_masks(self) -> np.ndarray:
        """Each sub-environment's :meth:`~mlir_rl.MlirRlEnv.action_masks`, stacked: shape ``(num_envs, sum(nvec))``."""
        self._check_open()
        return np.stack([env.action_masks() for env in self.envs])

    def close(self) -> None:
        """Closes every session and the shared channel. Idempotent."""
        for env in self.envs:
            env.close()
        self.envs = []
        if self._conn is not None:
            self._conn.release()
            self._conn = None
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise MlirRlError("the vector environment is closed")


def _stack(observations: Sequence["OrderedDict[str, np.ndarray]"]) -> "OrderedDict[str, np.ndarray]":
    """Each tensor stacked over the environments into a new batch (preallocated and filled row by row: np.stack costs
    several times more for the 24 small tensors of an observation)."""
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for name, a in observations[0].items():
        batch = np.empty((len(observations),) + a.shape, dtype=a.dtype)
        for i, o in enumerate(observations):
            batch[i] = o[name]
        out[name] = batch
    return out


def _merge_infos(infos: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Gymnasium's vector info layout: ``key -> array over environments`` plus the mask ``"_" + key``."""
    out: Dict[str, Any] = {}
    n = len(infos)
    for i, info in enumerate(infos):
        for key, value in info.items():
            if key not in out:
                numeric = isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating))
                out[key] = np.zeros(n, dtype=np.asarray(value).dtype) if numeric else np.full(n, None, dtype=object)
                out["_" + key] = np.zeros(n, dtype=bool)
            out[key][i] = value
            out["_" + key][i] = True
    return out
