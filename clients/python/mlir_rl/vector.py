"""Several mlir-rl sessions stepped together: :class:`MlirRlVectorEnv`.

One ``StepMany`` call steps every session, and the server runs the entries in parallel on its cores, so a batch of
``num_envs`` steps costs one round trip instead of ``num_envs``.

With Gymnasium >= 1.0 importable the class is a ``gymnasium.vector.VectorEnv`` with 1.x conventions (Gymnasium's
vector wrappers, e.g. ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` and ``NormalizeReward``, work on it);
with Gymnasium 0.29 a 0.29 ``gymnasium.vector.VectorEnv`` (``is_vector_env``, same-step autoreset with
``final_observation`` / ``final_info``, which 0.29's wrappers expect); without gymnasium a plain class with the 1.x
conventions:

- ``reset(seed=s)`` seeds sub-environment ``i`` with ``s + i`` (a list gives one seed each);
  ``reset(options={"reset_mask": mask})`` resets only the sub-environments where the boolean ``mask`` is True (the
  returned observation still holds every sub-environment's current one). Observations are dicts of arrays stacked
  on a first axis of length ``num_envs``; rewards, ``terminated`` and ``truncated`` are arrays.
- ``metadata["autoreset_mode"]`` is an ``AutoresetMode`` (Gymnasium's own with 1.x): ``NEXT_STEP`` (the default,
  as Gymnasium's ``SyncVectorEnv``; with 0.29 ``SAME_STEP``): the step after an episode ended resets that
  sub-environment instead of stepping it (its action is ignored, reward 0, the reset's observation and info).
  ``SAME_STEP``: it is reset within the step that ended it; the episode's last observation and info are in
  ``infos["final_obs"]`` / ``infos["final_info"]`` (0.29: ``final_observation`` / ``final_info``). ``DISABLED``:
  nothing is reset; reset ended sub-environments with ``reset_mask`` before stepping them again.
- ``infos`` is a dict: each key maps to an array over the sub-environments with a boolean mask ``"_" + key``
  saying which reported it; a dict value (``evaluation``, ``final_info``) is a dict of such arrays (1.x layout).
  Gymnasium 0.29's layout is flat: dict values are objects in an object array.
- A sub-environment whose session the server no longer knows (it restarted) is rebuilt from its recorded actions
  and takes its step alone, as :class:`~mlir_rl.MlirRlEnv` does (``auto_recover``).
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import spaces as _spaces
from .benchmarks import BenchmarkChoice, default_order, resolve_benchmarks
from .cluster import ServerPool
from .env import DEFAULT_SERVER, DEFAULT_TIMEOUT, Connection, MlirRlEnv, _ClosesItself, _step_request
from .errors import (AbortedError, FailedPreconditionError, InvalidArgumentError, MlirRlError, NotFoundError, UnavailableError,
                     error_class, from_rpc_error)
from .v1 import env_pb2

import grpc

logger = logging.getLogger("mlir_rl")

# Which gymnasium.vector is importable: 1 (>= 1.0), 0 (0.x), None (none).
GYMNASIUM_VECTOR_API: Optional[int]
try:  # pragma: no cover - depends on the environment
    import gymnasium.vector as _gymnasium_vector

    _VectorBase: Any = _gymnasium_vector.VectorEnv
    GYMNASIUM_VECTOR_API = 1 if hasattr(_gymnasium_vector, "AutoresetMode") else 0
except ImportError:  # pragma: no cover - depends on the environment
    _gymnasium_vector = None
    _VectorBase = object
    GYMNASIUM_VECTOR_API = None

if GYMNASIUM_VECTOR_API == 1:  # pragma: no cover - depends on the environment
    AutoresetMode = _gymnasium_vector.AutoresetMode
else:

    class AutoresetMode(enum.Enum):  # type: ignore[no-redef]
        """Gymnasium 1.x's ``gymnasium.vector.AutoresetMode`` (same values), for use without it."""

        NEXT_STEP = "NextStep"
        SAME_STEP = "SameStep"
        DISABLED = "Disabled"

# Gymnasium 0.29's info layout (flat; final_observation / final_info) instead of 1.x's.
LEGACY_INFOS = GYMNASIUM_VECTOR_API == 0
DEFAULT_AUTORESET_MODE = AutoresetMode.SAME_STEP if LEGACY_INFOS else AutoresetMode.NEXT_STEP

__all__ = ["MlirRlVectorEnv", "AutoresetMode", "DEFAULT_AUTORESET_MODE"]

_MODE_NAMES = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP,
               "disabled": AutoresetMode.DISABLED}


def parse_autoreset_mode(mode: Any) -> Any:
    """An ``AutoresetMode`` from itself (Gymnasium's or this module's), its value (``"NextStep"``) or a name
    (``"next_step"``, ``"same-step"``, ...)."""
    if mode is None:
        return DEFAULT_AUTORESET_MODE
    if isinstance(mode, enum.Enum) and type(mode).__name__ == "AutoresetMode":
        mode = mode.value
    if isinstance(mode, str):
        key = mode.replace("-", "_").lower()
        if key in _MODE_NAMES:
            return _MODE_NAMES[key]
        for m in AutoresetMode:
            if m.value == mode:
                return m
    raise InvalidArgumentError(f"autoreset_mode must be next_step, same_step or disabled, got {mode!r}")


class MlirRlVectorEnv(_ClosesItself, _VectorBase):
    """``num_envs`` sessions of the same session options, stepped with one ``StepMany`` call per ``step``.

    Args:
        num_envs: number of sub-environments (sessions).
        benchmark: what resets start on, as for :func:`mlir_rl.make` (a URI, a list, a dataset, a split, generator
            families), shared: in ``"cycle"`` order sub-environment ``i`` takes picks ``i, i + num_envs, ...`` (a
            list of ``num_envs`` URIs gives each its own), in ``"random"`` order each draws with its own
            ``np_random``; ``None``: each picks from the train split at random.
        autoreset_mode: ``AutoresetMode`` or its name (``"next_step"``, ``"same_step"``, ``"disabled"``); default
            ``NEXT_STEP`` (``SAME_STEP`` under Gymnasium 0.29). See the module's docstring.
        server, timeout, channel: as for :class:`~mlir_rl.MlirRlEnv`; all sub-environments share one channel.
        servers: several servers instead of ``server``: a list of ``host:port``, or ``"dns:///name:port"`` (every
            address of the name, resolved again every ``resolve_interval`` seconds). Sessions are spread over them
            by load (fewest sessions), pinned to their server for the episode, stepped with one ``StepMany`` per
            server per step (concurrently), and rebuilt on another server when theirs becomes unreachable. See
            :mod:`mlir_rl.cluster`.
        resolver: with ``servers="dns:///..."``, a callable ``(host, port) -> ["ip:port", ...]`` replacing the
            system resolver. ``resolve_interval``, ``retry_interval``, ``probe_timeout``, ``wait_for_server``:
            the pool's settings (:class:`~mlir_rl.cluster.ServerPool`).
        options: the other keyword arguments of :class:`~mlir_rl.MlirRlEnv` (session options such as
            ``max_loops``, ``reward_mode``; ``masked_actions``, ``info_timings``, ``benchmark_order``, ...).

    ``envs`` holds the sub-environments (:class:`~mlir_rl.MlirRlEnv`), e.g. for ``export_schedule`` or
    ``last_evaluation``.
    """

    def __init__(self, num_envs: int, benchmark: Any = None, *, server: str = DEFAULT_SERVER,
                 timeout: Optional[float] = DEFAULT_TIMEOUT, channel: Optional[grpc.Channel] = None,
                 autoreset_mode: Any = None, servers: Any = None, resolver: Any = None,
                 resolve_interval: float = 10.0, retry_interval: float = 2.0, probe_timeout: float = 5.0,
                 wait_for_server: float = 60.0, **options: Any):
        # What close() needs, even if this raises.
        self._closed, self.closed, self.envs, self._conn, self._pool = True, True, [], None, None
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise InvalidArgumentError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.num_envs = num_envs
        max_attempts = options.get("max_attempts", 5)
        if servers is not None:
            if channel is not None:
                raise InvalidArgumentError("channel= and servers= exclude each other")
            self._pool = ServerPool(
                servers, lambda address: Connection(address, timeout=timeout, max_attempts=max_attempts),
                resolver=resolver, resolve_interval=resolve_interval, retry_interval=retry_interval,
                probe_timeout=probe_timeout, wait_for_server=wait_for_server)
        else:
            self._conn = Connection(server, channel=channel, timeout=timeout)
        self._closed = self.closed = False
        try:
            # One look-up of the names for all sub-environments; each gets its place in a shared cycle.
            choices: List[Any] = [None] * num_envs
            if benchmark is not None:
                order = options.pop("benchmark_order", None) or default_order(benchmark)
                choice = BenchmarkChoice(resolve_benchmarks(benchmark, self._catalog), order)
                choices = [choice.strided(i, num_envs) for i in range(num_envs)]
            for c in choices:
                if self._pool is not None:
                    self.envs.append(MlirRlEnv(c, timeout=timeout, pool=self._pool, **options))
                else:
                    self.envs.append(MlirRlEnv(c, server=server, timeout=timeout, channel=self._conn.channel,
                                               **options))
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
        self.metadata = dict(first.metadata, autoreset_mode=self.autoreset_mode)
        self.render_mode = first.render_mode
        self.is_vector_env = True  # Gymnasium 0.29's wrappers ask
        self.head_names, self.nvec = first.head_names, first.nvec
        self.type_names, self.tile_sizes = first.type_names, first.tile_sizes
        # Sub-environments whose episode ended in the last step and that were not reset (NEXT_STEP: reset at the
        # next step; DISABLED: must be reset with reset_mask first).
        self._ended: List[int] = []

    @property
    def pool(self) -> Optional[ServerPool]:
        """The servers (with ``servers=``): ``pool.sessions()``, ``pool.usable()``, ``pool.addresses``; else None."""
        return self._pool

    def _catalog(self) -> Any:
        request = env_pb2.ListBenchmarksRequest()
        if self._pool is not None:
            reply = None
            for _ in range(len(self._pool.addresses) + 1):
                address = self._pool.place()
                try:
                    reply = self._pool.connection(address).call("ListBenchmarks", request, idempotent=True)
                    break
                except UnavailableError:
                    if self._pool.probe(address):
                        raise
            if reply is None:
                raise UnavailableError("no server answered ListBenchmarks")
            return [(b.uri, b.dataset, b.split) for b in reply.benchmarks], list(reply.generator_families)
        reply = self._conn.call("ListBenchmarks", request, idempotent=True)
        return [(b.uri, b.dataset, b.split) for b in reply.benchmarks], list(reply.generator_families)

    # -- Gymnasium vector API ----------------------------------------------------------------------------------

    def reset(self, *, seed: Any = None, options: Optional[Dict[str, Any]] = None
              ) -> Tuple["OrderedDict[str, np.ndarray]", Dict[str, Any]]:
        """Resets every sub-environment, or those where ``options["reset_mask"]`` is True. ``seed``: an int
        (``seed + i`` for sub-environment ``i``), a list of ``num_envs`` seeds (or None), or None. The other
        ``options`` go to each sub-environment's reset."""
        self._check_open()
        n = self.num_envs
        if seed is None:
            seeds: List[Any] = [None] * n
        elif isinstance(seed, (list, tuple)):
            if len(seed) != n:
                raise InvalidArgumentError(f"{len(seed)} seeds given for {n} environments")
            seeds = list(seed)
        else:
            seeds = [seed + i for i in range(n)]
        options = dict(options or {})  # reset_mask is taken out of a copy: wrappers read the caller's dict after us
        mask = options.pop("reset_mask", None)
        if mask is None:
            indices = list(range(n))
        else:
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,) or not mask.any():
                raise InvalidArgumentError(f"options['reset_mask'] must be a numpy bool array of shape ({n},) with "
                                           f"at least one True, got {mask!r}")
            indices = np.flatnonzero(mask).tolist()
        infos: List[Tuple[int, Dict[str, Any]]] = []
        for i in indices:
            _, info = self.envs[i].reset(seed=seeds[i], options=options or None)
            infos.append((i, info))
        reset = set(indices)
        self._ended = [i for i in self._ended if i not in reset]
        return _stack([env._obs for env in self.envs]), self._merge(infos)

    def step(self, actions: Any) -> Tuple["OrderedDict[str, np.ndarray]", np.ndarray, np.ndarray, np.ndarray,
                                          Dict[str, Any]]:
        """One action per sub-environment (an array of shape ``(num_envs, len(nvec))`` or a sequence of actions).

        Raises the error of the first entry the server refused (e.g. :class:`InvalidArgumentError` for a malformed
        action), naming the sub-environment, after the other sub-environments have taken their steps.
        """
        rewards, terminated, truncated, entries = self._step(actions, self.autoreset_mode)
        infos: List[Tuple[int, Dict[str, Any]]] = []
        for i, info, reset_info, final_obs in entries:
            if reset_info is None:
                infos.append((i, info))
            elif info is None:  # NEXT_STEP: reset instead of stepped
                infos.append((i, reset_info))
            elif LEGACY_INFOS:  # SAME_STEP
                infos.append((i, dict(reset_info, final_observation=final_obs, final_info=info)))
            else:
                infos.append((i, dict(reset_info, final_obs=final_obs, final_info=info)))
        return _stack([env._obs for env in self.envs]), rewards, terminated, truncated, self._merge(infos)

    def _step(self, actions: Any, mode: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[Tuple[Any, ...]]]:
        """The step of every sub-environment with ``mode``'s autoreset: rewards, terminated, truncated and, per
        sub-environment in order, ``(i, step info, reset info, final observation)`` (a sub-environment reset by
        NEXT_STEP has no step info; one not reset has no reset info; the final observation is SAME_STEP's)."""
        self._check_open()
        n = self.num_envs
        if len(actions) != n:
            raise InvalidArgumentError(f"{len(actions)} actions given for {n} environments")
        ended = self._ended
        if ended and mode is AutoresetMode.DISABLED:
            raise FailedPreconditionError(
                f"the episodes of environments {ended} are over and autoreset is disabled: reset them first with "
                f"reset(options={{'reset_mask': mask}})")
        if ended and mode is AutoresetMode.SAME_STEP:
            ended = []  # (the mode changed under it: the ended episodes refuse the step, as the server says)
        stepping = range(n) if not ended else [i for i in range(n) if i not in ended]
        envs = self.envs
        values: List[Any] = [None] * n
        if self._pool is None:
            request = env_pb2.StepManyRequest()
            for i in stepping:
                env = envs[i]
                values[i] = v = env._action_values(actions[i])
                request.steps.append(_step_request(env._require_session(), v, env._obs_id))
        else:
            for i in stepping:
                values[i] = envs[i]._action_values(actions[i])
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        entries: List[Tuple[Any, ...]] = []
        failures: List[Tuple[int, MlirRlError]] = []
        if stepping:
            if self._pool is None:
                reply = self._step_many(request, envs[stepping[0]])
                if len(reply.results) != len(request.steps):
                    raise MlirRlError(f"StepMany answered {len(reply.results)} entries for {len(request.steps)} "
                                      f"requests")
                results = reply.results
            else:
                results = self._step_many_servers(stepping, values)
            for i, result in zip(stepping, results):
                env = envs[i]
                try:
                    if result.code != 0:
                        result = self._recover_entry(i, env, values[i], result)
                    # The sub-environment's own arrays: _stack copies them into the batch.
                    obs, rewards[i], terminated[i], truncated[i], info = env._finish_step(values[i], result.reply,
                                                                                         copy=False)
                    if (terminated[i] or truncated[i]) and mode is AutoresetMode.SAME_STEP:
                        final_obs = OrderedDict((name, a.copy()) for name, a in obs.items())
                        _, reset_info = env.reset()
                        entries.append((i, info, reset_info, final_obs))
                    else:
                        entries.append((i, info, None, None))
                except MlirRlError as e:  # the other entries' replies must still be taken
                    failures.append((i, e))
        for i in ended:  # NEXT_STEP: these start their next episode now (reward 0, not done)
            try:
                _, reset_info = envs[i].reset()
            except MlirRlError as e:
                failures.append((i, e))
                continue
            entries.append((i, None, reset_info, None))
        if failures:
            failures.sort(key=lambda f: f[0])
            i, error = failures[0]
            others = "" if len(failures) == 1 else f" ({len(failures) - 1} more refused: environments " \
                f"{', '.join(str(f[0]) for f in failures[1:])})"
            raise type(error)(f"environment {i}: {error}{others}; the other environments took their step")
        if mode is AutoresetMode.SAME_STEP:
            self._ended = []
        else:
            done = terminated | truncated
            self._ended = np.flatnonzero(done).tolist() if done.any() else []
        if ended:
            entries.sort(key=lambda entry: entry[0])
        return rewards, terminated, truncated, entries

    def _step_many(self, request: Any, probe: MlirRlEnv) -> Any:
        """StepMany. A call that fails UNAVAILABLE must not be repeated blindly (it may have been applied): ask,
        idempotently and with retries, whether the server still knows a session of the batch. If it does not, it
        restarted and nothing of this call survived: the call is sent again (its entries then come back NOT_FOUND and
        are rebuilt by `_recover_entry`)."""
        try:
            return self._conn.call("StepMany", request, idempotent=False)
        except UnavailableError:
            if not probe._auto_recover or probe._episode_benchmark is None:
                raise
            try:
                self._conn.call("Observe", env_pb2.ObserveRequest(session_id=probe._require_session()),
                                idempotent=True)
            except NotFoundError:
                logger.warning("StepMany: the server restarted; rebuilding the sessions from their actions")
                return self._conn.call("StepMany", request, idempotent=False)
            raise

    def _step_many_servers(self, stepping: Sequence[int], values: List[Any]) -> List[Any]:
        """Several servers: one ``StepMany`` per server, sent concurrently (gRPC futures), so every server works
        on its own cores at once; the per-entry results in ``stepping`` order. The sessions of a server that
        fails (UNAVAILABLE and no answer to its health check) are rebuilt on the others from their recorded
        actions and their step is sent again there, in the next round."""
        envs, pool = self.envs, self._pool
        results: Dict[int, Any] = {}
        todo = list(stepping)
        for _ in range(len(pool.addresses) + 3):
            if not todo:
                break
            groups: Dict[Any, List[int]] = {}
            for i in todo:
                envs[i]._require_session()
                groups.setdefault(envs[i]._conn, []).append(i)
            calls = []
            for conn, indices in groups.items():
                request = env_pb2.StepManyRequest()
                for i in indices:
                    env = envs[i]
                    request.steps.append(_step_request(env._session_id, values[i], env._obs_id))
                calls.append((conn, indices, conn.stub.StepMany.future(request, timeout=conn.timeout,
                                                                       metadata=conn._metadata)))
            todo = []
            for conn, indices, future in calls:
                try:
                    reply = future.result()
                except grpc.RpcError as e:
                    code = e.code()
                    if code == grpc.StatusCode.ABORTED:  # undone as a whole: send it again
                        todo.extend(indices)
                        continue
                    if code != grpc.StatusCode.UNAVAILABLE:
                        raise from_rpc_error(e, "StepMany") from None
                    if pool.probe(conn.server):
                        # Alive: it may have restarted (then it knows none of the sessions and the entries come
                        # back NOT_FOUND, rebuilt by _recover_entry) or the call may have been applied (raise).
                        probe = envs[indices[0]]
                        try:
                            conn.call("Observe", env_pb2.ObserveRequest(session_id=probe._session_id),
                                      idempotent=True)
                        except NotFoundError:
                            logger.warning("StepMany on %s: the server restarted; rebuilding its sessions",
                                           conn.server)
                            todo.extend(indices)
                            continue
                        raise from_rpc_error(e, "StepMany") from None
                    for i in indices:
                        if not envs[i]._auto_recover:
                            raise from_rpc_error(e, "StepMany") from None
                        envs[i]._failover(f"StepMany: {e.details()}")
                    todo.extend(indices)
                    continue
                if len(reply.results) != len(indices):
                    raise MlirRlError(f"StepMany answered {len(reply.results)} entries for {len(indices)} requests")
                for i, result in zip(indices, reply.results):
                    results[i] = result
        if todo:
            raise UnavailableError(f"environments {todo}: no server took their step")
        return [results[i] for i in stepping]

    def _recover_entry(self, i: int, env: MlirRlEnv, values: List[int], result: Any) -> Any:
        """A refused StepMany entry: raises its error, unless the server lost the session (it restarted), in which
        case the episode is rebuilt from the recorded actions, as MlirRlEnv does, and this step taken alone."""
        code = next((c for c in grpc.StatusCode if c.value[0] == result.code), None)
        error = error_class(code)(result.message)
        if isinstance(error, AbortedError):  # undone by the server (nothing applied): take the step again, alone
            step = env._conn.call("Step", _step_request(env._session_id, values, env._obs_id), idempotent=False)
            return env_pb2.StepManyResult(reply=step)
        if isinstance(error, UnavailableError) and env._pool is not None and env._auto_recover \
                and env._episode_benchmark is not None and not env._pool.probe(env._conn.server):
            # Undone by a server that shuts down: rebuild the episode elsewhere and take the step there.
            env._failover(f"StepMany entry: {result.message}")
            step = env._session_call("Step", lambda sid: _step_request(sid, values, env._obs_id), idempotent=False)
            return env_pb2.StepManyResult(reply=step)
        if not (isinstance(error, NotFoundError) and env._auto_recover and env._episode_benchmark is not None):
            raise error
        logger.warning("environment %d: session %s is unknown to the server (%s); replaying %d action(s) to "
                       "restore it", i, env.session_id, result.message, len(env._actions))
        env._recover()
        step = env._session_call("Step", lambda sid: _step_request(sid, values, env._obs_id), idempotent=False)
        return env_pb2.StepManyResult(reply=step)

    def _merge(self, infos: Sequence[Tuple[int, Dict[str, Any]]]) -> Dict[str, Any]:
        return _merge_infos_flat(infos, self.num_envs) if LEGACY_INFOS else _merge_infos(infos, self.num_envs)

    def action_masks(self) -> np.ndarray:
        """Each sub-environment's :meth:`~mlir_rl.MlirRlEnv.action_masks`, stacked: shape ``(num_envs, sum(nvec))``."""
        self._check_open()
        return np.stack([env.action_masks() for env in self.envs])

    def render(self) -> Tuple[str, ...]:
        """Each sub-environment's current IR text."""
        self._check_open()
        return tuple(env.render() for env in self.envs)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Tuple[Any, ...]:
        """Calls method ``name`` of every sub-environment (or reads the attribute when it is not callable)."""
        self._check_open()
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> Tuple[Any, ...]:
        """Attribute ``name`` of every sub-environment."""
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values: Any) -> None:
        """Sets attribute ``name`` of the sub-environments: one value each (list or tuple), or the same for all."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise InvalidArgumentError(f"{len(values)} values given for {self.num_envs} environments")
        for env, value in zip(self.envs, values):
            setattr(env, name, value)

    def close(self, **kwargs: Any) -> None:
        """Closes every session and the shared channel. Idempotent."""
        for env in self.envs:
            env.close()
        self.envs = []
        if self._conn is not None:
            self._conn.release()
            self._conn = None
        if self._pool is not None:
            self._pool.release()
            self._pool = None
        self._closed = self.closed = True

    def close_extras(self, **kwargs: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError("the vector environment is closed")

    def __repr__(self) -> str:
        mode = getattr(self, "autoreset_mode", None)
        return f"MlirRlVectorEnv(num_envs={getattr(self, 'num_envs', '?')}, " \
               f"autoreset_mode={getattr(mode, 'name', mode)})"


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


_SCALARS = (int, float, bool)


def _add_info(out: Dict[str, Any], info: Dict[str, Any], i: int, n: int) -> Dict[str, Any]:
    """Gymnasium 1.x's vector info layout (``VectorEnv._add_info``): ``key -> array over environments`` plus the mask
    ``"_" + key``; numbers get a numeric array of their type, numpy arrays a stacked array, dicts the same layout
    inside, ``final_obs`` and anything else an object array."""
    for key, value in info.items():
        array = out.get(key)
        if array is not None and type(array) is np.ndarray and key != "final_obs":  # seen before: fill in
            array[i] = value
            out["_" + key][i] = True
            continue
        if key == "final_obs":
            if array is None:
                array = np.full(n, None, dtype=object)
            array[i] = value
        elif isinstance(value, dict):
            array = _add_info(array if array is not None else {}, value, i, n)
        else:
            kind = type(value)
            if kind in _SCALARS or issubclass(kind, np.number):
                array = np.zeros(n, dtype=kind)
            elif isinstance(value, np.ndarray):
                array = np.zeros((n, *value.shape), dtype=value.dtype)
            else:
                array = np.full(n, None, dtype=object)
            array[i] = value
        mask = out.get("_" + key)
        if mask is None:
            mask = np.zeros(n, dtype=np.bool_)
        mask[i] = True
        out[key], out["_" + key] = array, mask
    return out


def _merge_infos(infos: Sequence[Tuple[int, Dict[str, Any]]], n: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for i, info in infos:
        _add_info(out, info, i, n)
    return out


def _merge_infos_flat(infos: Sequence[Tuple[int, Dict[str, Any]]], n: int) -> Dict[str, Any]:
    """Gymnasium 0.29's vector info layout: ``key -> array over environments`` plus the mask ``"_" + key``; anything
    but a number is an object in an object array."""
    out: Dict[str, Any] = {}
    for i, info in infos:
        for key, value in info.items():
            array = out.get(key)
            if array is None:
                kind = type(value)
                if kind in _SCALARS or issubclass(kind, np.number):
                    array = np.zeros(n, dtype=kind)
                else:
                    array = np.full(n, None, dtype=object)
                out[key] = array
                out["_" + key] = np.zeros(n, dtype=bool)
            array[i] = value
            out["_" + key][i] = True
    return out
