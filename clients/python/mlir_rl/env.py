"""The Gymnasium environment: one ``MlirRlEnv`` is one session on an mlir-rl server at a time.

Example::

    from mlir_rl import make

    with make("benchmark://nn-ops/matmul_64x64x64_f32", server="127.0.0.1:50051") as env:
        obs, info = env.reset(seed=0)
        mask = env.action_masks()
        obs, reward, terminated, truncated, info = env.step(action)
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
import sys
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np

from . import spaces as _spaces
from .cluster import ServerPool
from .benchmarks import BenchmarkChoice, default_order, resolve_benchmarks, single_uri
from .errors import (FailedPreconditionError, InternalError, InvalidArgumentError, MlirRlError, NotFoundError,
                     UnavailableError, from_rpc_error)
from .v1 import env_pb2, env_pb2_grpc

__all__ = ["MlirRlEnv", "Connection", "session_options", "DEFAULT_SERVER", "DEFAULT_TIMEOUT"]

logger = logging.getLogger("mlir_rl")

DEFAULT_SERVER = "127.0.0.1:50051"
# A step may compile and time a candidate (seconds for big kernels, plus the untransformed reference once).
DEFAULT_TIMEOUT = 600.0

_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    # Reconnect quickly to a restarted local server (gRPC's default first backoff is 1 s). Not
    # grpc.min_reconnect_backoff_ms: gRPC also takes it as the minimum *connect timeout* (20 s by default), so at
    # 100 ms, 64 clients starting at once on a busy machine failed their TLS/HTTP2 handshakes ("tcp handshaker
    # shutdown").
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

BENCHMARK_SCHEME = "benchmark://"


# ---------------------------------------------------------------------------------------------------------------
# Connection


def _read_pem(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class Connection:
    """A gRPC channel and stub, shared by an environment and its forks and closed with its last user.

    Credentials for servers that require them: ``token`` (sent as ``authorization: Bearer <token>``), ``tls_ca`` (a
    PEM file: connect with TLS, verifying the server against it) and ``tls_cert`` / ``tls_key`` (a client
    certificate); each defaults to the environment variable ``MLIR_RL_TOKEN``, ``MLIR_RL_TLS_CA``,
    ``MLIR_RL_TLS_CERT``, ``MLIR_RL_TLS_KEY``, so every env, vector env and helper of a process picks them up.

    ``call`` converts gRPC errors into :mod:`mlir_rl.errors` exceptions and retries UNAVAILABLE with exponential
    backoff (``max_attempts`` tries, starting at ``backoff`` seconds) when the call is idempotent, and ABORTED
    whatever the call (the server answers ABORTED only for a call it undid, e.g. a step whose evaluation's worker was
    killed from outside twice).
    """

    def __init__(self, server: str = DEFAULT_SERVER, *, channel: Optional[grpc.Channel] = None,
                 timeout: Optional[float] = DEFAULT_TIMEOUT, max_attempts: int = 5, backoff: float = 0.1,
                 token: Optional[str] = None, tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.server = server
        self.timeout = timeout
        self.max_attempts = int(max_attempts)
        self.backoff = float(backoff)
        self._owns_channel = channel is None
        # Credentials (servers started with --auth_tokens_file / --tls_cert): arguments, else the environment.
        token = token if token is not None else os.environ.get("MLIR_RL_TOKEN") or None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        if channel is None:
            tls_ca = tls_ca if tls_ca is not None else os.environ.get("MLIR_RL_TLS_CA") or None
            if tls_ca:
                tls_cert = tls_cert if tls_cert is not None else os.environ.get("MLIR_RL_TLS_CERT") or None
                tls_key = tls_key if tls_key is not None else os.environ.get("MLIR_RL_TLS_KEY") or None
                credentials = grpc.ssl_channel_credentials(_read_pem(tls_ca), _read_pem(tls_key), _read_pem(tls_cert))
                channel = grpc.secure_channel(server, credentials, options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.insecure_channel(server, options=_CHANNEL_OPTIONS)
        self.channel = channel
        self.stub = env_pb2_grpc.MlirRlEnvStub(self.channel)
        self._users = 1
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._users <= 0

    def acquire(self) -> "Connection":
        with self._lock:
            if self._users <= 0:
                raise FailedPreconditionError("the connection is closed")
            self._users += 1
        return self

    def release(self) -> None:
        with self._lock:
            if self._users <= 0:
                return
            self._users -= 1
            last = self._users == 0
        if last and self._owns_channel:
            self.channel.close()

    def call(self, method: str, request: Any, *, idempotent: bool, timeout: Any = "default") -> Any:
        if self.closed:
            raise FailedPreconditionError("the connection is closed")
        if timeout == "default":
            timeout = self.timeout
        rpc = getattr(self.stub, method)
        attempts = self.max_attempts if idempotent else 1
        delay = self.backoff
        for attempt in range(self.max_attempts):
            try:
                return rpc(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                retry = (e.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < attempts) or \
                    (e.code() == grpc.StatusCode.ABORTED and attempt + 1 < self.max_attempts)
                if retry:
                    logger.debug("%s: %s, retrying in %.2f s", method, e.code().name, delay)
                    time.sleep(delay)
                    delay = min(2 * delay, 2.0)
                    continue
                error = from_rpc_error(e, method)
                error.rpc_error = e
            # Raised outside the except block: the traceback of gRPC's internals is not the interesting part.
            raise error
        raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------------
# Session options


def _enum_choices(enum: Any) -> Dict[str, int]:
    """An enum's values by their lower-case names without the prefix they share (REWARD_MODE_FINAL -> "final"), the
    zero "unspecified" value left out."""
    names = [v.name for v in enum.values if v.number != 0]
    prefix = os.path.commonprefix(names)
    prefix = prefix[:prefix.rfind("_") + 1]
    return {v.name[len(prefix):].lower(): v.number for v in enum.values if v.number != 0}


_FIELD = env_pb2.SessionOptions.DESCRIPTOR.fields_by_name
# The session options and how each is written, read from the protocol's SessionOptions: nothing here lists them.
OPTION_NAMES: Tuple[str, ...] = tuple(f.name for f in env_pb2.SessionOptions.DESCRIPTOR.fields)
_CHOICES = {f.name: _enum_choices(f.enum_type) for f in env_pb2.SessionOptions.DESCRIPTOR.fields if f.enum_type}


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"option {name!r} must be an integer, got {value!r}")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"option {name!r} must be a number, got {value!r}")
    return float(value)


def _as_choice(name: str, value: Any) -> int:
    choices = _CHOICES[name]
    if isinstance(value, str) and value.lower() in choices:
        return choices[value.lower()]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) in choices.values():
        return int(value)
    raise InvalidArgumentError(f"option {name!r} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def session_options(**options: Any) -> env_pb2.SessionOptions:
    """A ``SessionOptions`` message from keyword arguments; ``None`` leaves a field at the server default.

    The names, types and choices are the protocol's (``proto/mlir_rl/v1/env.proto``, ``SessionOptions``): integers
    (``max_loops``, ``actions_per_op``, ``max_steps``, ``num_threads``, ``max_vector_elements``, ``max_accesses``),
    numbers (``transform_penalty``, ``execution_penalty``), ``tile_sizes`` (a sequence of ints), and enums written as
    their value names without the shared prefix, in any case: ``reward_mode`` ``"final"`` | ``"immediate"``;
    ``masked_actions`` ``"reject"`` (a masked action raises InvalidArgumentError) | ``"penalize"`` (a failed step
    with the transform penalty, for agents that ignore masks, e.g. gymnasium's ``check_env``); ``interchange_mode``
    ``"level_pointers"`` | ``"swaps"`` (one of the 3L-6 swaps of two loops 1-3 apart); ``evaluation_cache``
    ``"use"`` (a candidate measured before is not measured again) | ``"refresh"`` (measure, replace the cached result)
    | ``"bypass"`` (measure, no cache). Unknown names raise :class:`InvalidArgumentError` (a ``ValueError``); value
    ranges are checked by the server.
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise InvalidArgumentError(f"unknown session option(s) {', '.join(map(repr, unknown))}; "
                                   f"known: {', '.join(OPTION_NAMES)}")
    msg = env_pb2.SessionOptions()
    for name, value in options.items():
        if value is None:
            continue
        field = _FIELD[name]
        if field.label == field.LABEL_REPEATED:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise InvalidArgumentError(f"option {name!r} must be a sequence of integers, got {value!r}")
            getattr(msg, name).extend(_as_int(name, v) for v in value)
        elif field.enum_type is not None:
            setattr(msg, name, _as_choice(name, value))
        elif field.cpp_type == field.CPPTYPE_DOUBLE or field.cpp_type == field.CPPTYPE_FLOAT:
            setattr(msg, name, _as_float(name, value))
        else:
            setattr(msg, name, _as_int(name, value))
    return msg


# ---------------------------------------------------------------------------------------------------------------
# Proto -> plain Python


# Per message type: its fields as (name, repeated), read from the descriptor once rather than on every call.
_message_fields: Dict[str, Tuple[Tuple[str, bool], ...]] = {}


def _fields_of(descriptor: Any) -> Tuple[Tuple[str, bool], ...]:
    fields = _message_fields.get(descriptor.full_name)
    if fields is None:
        fields = tuple((f.name, f.label == f.LABEL_REPEATED) for f in descriptor.fields)
        _message_fields[descriptor.full_name] = fields
    return fields


def message_to_dict(message: Any) -> Dict[str, Any]:
    """The fields of a flat proto message (scalars and repeated scalars) as a plain dict, defaults included."""
    out: Dict[str, Any] = {}
    for name, repeated in _fields_of(message.DESCRIPTOR):
        value = getattr(message, name)
        out[name] = list(value) if repeated else value
    return out


def benchmark_to_dict(info: "env_pb2.BenchmarkInfo") -> Dict[str, Any]:
    return message_to_dict(info)


# What a step's default info keeps of an evaluation: facts of the schedule, the same for the same seed and actions
# (the speedup follows the reward; a repeated schedule is served from the server's evaluation cache). Measured times,
# compile times and the cache flag change from call to call: they are in ``env.last_evaluation`` and, with
# ``info_timings=True``, in the info.
EVALUATION_SUMMARY_FIELDS = ("speedup", "correct", "failure")


def _outcome_to_dict(outcome: "env_pb2.StepOutcome", timings: bool = False) -> Dict[str, Any]:
    """A step's info from its outcome. ``evaluation`` is present only when the step evaluated a candidate (a key that
    is sometimes None and sometimes a dict would break Gymnasium's vector info merging)."""
    info: Dict[str, Any] = {
        "action": outcome.action.values[:],
        "applied": outcome.applied,
        "failure_reason": outcome.failure_reason,
        "description": outcome.description,
        "reward": outcome.reward,
    }
    if outcome.HasField("evaluation"):
        evaluation = outcome.evaluation
        if timings:
            info["evaluation"] = message_to_dict(evaluation)
        else:
            info["evaluation"] = {name: getattr(evaluation, name) for name in EVALUATION_SUMMARY_FIELDS}
    if timings:
        info["apply_ms"] = outcome.apply_ms
    return info


def _step_request(session_id: str, values: List[int], since: int) -> "env_pb2.StepRequest":
    """``StepRequest(session_id, actions=[Action(values)], observation=ObservationRequest(since=since))``, built
    without the keyword constructor's intermediate messages."""
    request = env_pb2.StepRequest(session_id=session_id)
    request.actions.add().values.extend(values)
    request.observation.since = since
    return request


def _normalize_benchmark(uri: str) -> str:
    if not isinstance(uri, str) or not uri:
        raise InvalidArgumentError(f"a benchmark must be a non-empty URI string, got {uri!r}")
    return uri if "://" in uri else BENCHMARK_SCHEME + uri


# ---------------------------------------------------------------------------------------------------------------
# The environment


if _spaces.HAVE_GYMNASIUM:  # pragma: no cover - depends on the environment
    import gymnasium as _gymnasium

    _EnvBase = _gymnasium.Env
else:

    class _EnvBase:  # type: ignore[no-redef]
        """The parts of ``gymnasium.Env`` the environment relies on, for use without gymnasium."""

        metadata: Dict[str, Any] = {"render_modes": []}
        render_mode: Optional[str] = None
        spec = None
        _np_random: Optional[np.random.Generator] = None

        @property
        def np_random(self) -> np.random.Generator:
            if self._np_random is None:
                self._np_random = np.random.default_rng()
            return self._np_random

        @np_random.setter
        def np_random(self, value: np.random.Generator) -> None:
            self._np_random = value

        @property
        def unwrapped(self) -> "_EnvBase":
            return self

        def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> Any:
            if seed is not None:
                self._np_random = np.random.default_rng(seed)

        def close(self) -> None:
            pass

        def __enter__(self) -> "_EnvBase":
            return self

        def __exit__(self, *args: Any) -> bool:
            self.close()
            return False


class _ClosesItself:
    """``close()`` on leaving a ``with`` block, and as a best effort when garbage-collected (against sessions orphaned
    on the server), never at interpreter shutdown. Subclasses keep ``_closed`` and make ``close()`` idempotent."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *args: Any) -> bool:
        self.close()
        return False

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or sys.is_finalizing():
            return
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class MlirRlEnv(_ClosesItself, _EnvBase):
    """A Gymnasium environment backed by an mlir-rl server session.

    Args:
        benchmark: what each ``reset`` starts on (unless its ``options`` name a benchmark): one URI
            (``benchmark://dataset/name``, the scheme may be left out, or ``generator://family/seed``), a split
            (``"train"``, ``"eval"``, ``"user"``), a dataset (``"nn-ops"``), generator families
            (``"generator://family"``, ``"generator://"`` for all), or a list of these; ``None``: the train split.
            Names are looked up on the server here (unknown ones raise :class:`NotFoundError`).
            See :mod:`mlir_rl.benchmarks`.
        benchmark_order: ``"cycle"`` (the default for a list; a seeded reset restarts the cycle) or ``"random"``
            (the default otherwise; drawn with ``self.np_random``, so seeded resets repeat the sequence).
        server: ``host:port`` of the server.
        servers: several servers instead (a list of ``host:port``, or ``"dns:///name:port"``; see
            :mod:`mlir_rl.cluster`): each episode starts on the one with the fewest sessions of this env and its
            forks, and moves to another, replaying its actions, when its server becomes unreachable.
        resolver: with ``servers="dns:///..."``, a callable ``(host, port) -> ["ip:port", ...]`` instead of the
            system resolver.
        timeout: deadline of each call in seconds (``None``: none).
        render_mode: ``None`` or ``"ansi"``; ``render()`` returns the current IR text either way.
        max_attempts: tries of an idempotent call while the server is UNAVAILABLE.
        auto_recover: when the server no longer knows the session (it restarted), rebuild the episode with
            ``Reset(replay_actions=...)`` from the actions recorded here and retry the call, once.
        info_timings: also put the per-call measurements in each info: ``apply_ms`` and the whole evaluation
            (times, compile times, cache flag) in steps, ``reference`` in resets. Off by default, so that infos are
            the same for the same seed and actions (Gymnasium's ``check_env`` compares them); the measurements are
            always in ``last_evaluation``, ``last_apply_ms`` and ``reference``.
        masked_actions: ``"penalize"`` (default here): a masked action is a failed step with the transform
            penalty, so every action of ``action_space`` is accepted, as Gymnasium's contract wants;
            ``"reject"``: it raises :class:`InvalidArgumentError` and changes nothing (the server's default).
        **options: the session options of the protocol's ``SessionOptions`` (:func:`session_options`: max_loops,
            actions_per_op, max_steps, reward_mode, transform_penalty, execution_penalty, tile_sizes, num_threads,
            max_vector_elements, max_accesses, interchange_mode, evaluation_cache, ...); ``None`` = server default.

    Attributes beyond Gymnasium's: ``head_names`` (one per entry of an action), ``type_names`` (values of head
    ``type``), ``tile_sizes`` (``tile_sizes[v]`` is the size a tile head value ``v`` means; 0 = not tiled),
    ``max_loops``, ``session_id``, ``benchmark`` (of the current episode), ``actions`` (recorded this episode),
    ``last_evaluation`` (the whole evaluation of the last step as a dict, ``None`` when it evaluated nothing),
    ``last_apply_ms``, ``reference`` (the untransformed benchmark's measurement when the last reset knew it).
    """

    # render() returns the current IR as text ("ansi"); there is no animation, render_fps only completes the metadata
    # Gymnasium's checker expects of an environment that renders.
    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, benchmark: Any = None, *, server: str = DEFAULT_SERVER,
                 timeout: Optional[float] = DEFAULT_TIMEOUT, render_mode: Optional[str] = None,
                 max_attempts: int = 5, auto_recover: bool = True, channel: Optional[grpc.Channel] = None,
                 mlir: Optional[str] = None, description: str = "", info_timings: bool = False,
                 benchmark_order: Optional[str] = None, servers: Any = None, resolver: Any = None,
                 pool: Optional[ServerPool] = None, **options: Any):
        self._closed = True  # until the connection exists (so __del__ / close of a half-built env do nothing)
        self._session_id: Optional[str] = None
        # The last full observation (private arrays) and its id: steps ask the server for the tensors that changed
        # since (ObservationRequest.since) and this fills in the rest.
        self._obs: Optional["OrderedDict[str, np.ndarray]"] = None
        self._obs_id = 0
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise InvalidArgumentError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        self.info_timings = bool(info_timings)
        self.last_evaluation: Optional[Dict[str, Any]] = None
        self.last_apply_ms: Optional[float] = None
        self.reference: Optional[Dict[str, Any]] = None
        options.setdefault("masked_actions", "penalize")  # every action of action_space is accepted (Gymnasium)
        self._options = session_options(**options)
        if benchmark_order is not None and benchmark_order not in ("cycle", "random"):
            raise InvalidArgumentError(f"benchmark_order must be 'cycle' or 'random', got {benchmark_order!r}")
        self._benchmark_order = benchmark_order
        # Where resets take their benchmark from; None until needed when no benchmark was given (the train split).
        self._choice: Optional[BenchmarkChoice] = None
        self._auto_recover = bool(auto_recover)
        self._pool: Optional[ServerPool] = None
        self.migrations = 0  # times the episode moved to another server because its server became unreachable
        if pool is not None or servers is not None:
            if channel is not None:
                raise InvalidArgumentError("channel= and servers= exclude each other")
            if pool is None:
                pool = ServerPool(servers, lambda address: Connection(address, timeout=timeout,
                                                                      max_attempts=max_attempts),
                                  resolver=resolver)
            else:
                pool.acquire()
            self._pool = pool
            try:
                address = pool.place()
                self._conn = pool.connection(address).acquire()
            except BaseException:
                pool.release()
                self._pool = None
                raise
            pool.move(None, address)
        else:
            self._conn = Connection(server, channel=channel, timeout=timeout, max_attempts=max_attempts)
        self._closed = False
        # Uploaded benchmarks (uri -> (text, description)), re-uploaded if a restarted server no longer knows them.
        self._uploads: Dict[str, Tuple[str, str]] = {}
        try:
            if mlir is not None:
                if benchmark is not None:
                    raise InvalidArgumentError("give either a benchmark URI or mlir text, not both")
                self._choice = BenchmarkChoice([self.add_benchmark(mlir, description)["uri"]])
            elif isinstance(benchmark, BenchmarkChoice):
                self._choice = benchmark
            elif benchmark is not None:
                self._choice = BenchmarkChoice(resolve_benchmarks(benchmark, self._catalog),
                                               benchmark_order or default_order(benchmark))
            reply = self._call("GetSpaces", env_pb2.GetSpacesRequest(options=self._options), idempotent=True)
            self._set_spaces(reply)
        except BaseException:
            self.close()
            raise
        self._episode_benchmark: Optional[str] = None
        self._episode_seed = 0
        self._actions: List[List[int]] = []
        self.recoveries = 0  # times the episode was rebuilt after the server lost the session
        self._restore_pending = False  # unpickled with an open episode, not yet rebuilt on the server

    # -- spaces ------------------------------------------------------------------------------------------------

    def _set_spaces(self, reply: "env_pb2.GetSpacesReply") -> None:
        self.action_space = _spaces.action_space_from_proto(reply.action_space)
        self.observation_space = _spaces.observation_space_from_proto(reply.observation_space)
        md = reply.action_space.multi_discrete
        self.nvec: List[int] = [int(n) for n in md.nvec]
        self.head_names: List[str] = list(md.head_names)
        if len(self.head_names) != len(self.nvec):
            raise MlirRlError(f"the action space has {len(self.nvec)} heads but {len(self.head_names)} head names")
        self.type_names: List[str] = list(md.type_names)
        tile_heads = [i for i, name in enumerate(self.head_names) if name.startswith("tile_")]
        self.max_loops: int = len(tile_heads)
        sizes = [int(s) for s in md.tile_sizes]
        if tile_heads:
            choices = self.nvec[tile_heads[0]]
            # Index 0 means "not tiled"; accept a list that leaves that entry out.
            if len(sizes) == choices - 1:
                sizes = [0] + sizes
            if len(sizes) != choices:
                raise MlirRlError(f"the action space lists {len(md.tile_sizes)} tile sizes for tile heads of "
                                  f"{choices} values")
        self.tile_sizes: List[int] = sizes
        self._spaces_reply = reply

    @property
    def spaces_description(self) -> Dict[str, str]:
        """The server's description of each observation tensor (and of the action space under ``"action"``)."""
        out = {"action": self._spaces_reply.action_space.description}
        for s in self._spaces_reply.observation_space:
            out[s.name] = s.description
        return out

    # -- state -------------------------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return self._conn.server

    @property
    def pool(self) -> Optional[ServerPool]:
        """The servers this environment may use (``servers=``), else None."""
        return self._pool

    @property
    def timeout(self) -> Optional[float]:
        return self._conn.timeout

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def session_id(self) -> Optional[str]:
        return self._session_id

    @property
    def benchmark(self) -> Optional[str]:
        """The benchmark of the current episode (before the first reset: the one given to the constructor)."""
        if self._episode_benchmark is not None:
            return self._episode_benchmark
        return None if self._choice is None else self._choice.fixed

    @property
    def actions(self) -> List[List[int]]:
        """The actions the server processed this episode (including ones that failed to apply), in order."""
        return [list(a) for a in self._actions]

    @property
    def options(self) -> env_pb2.SessionOptions:
        out = env_pb2.SessionOptions()
        out.CopyFrom(self._options)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError("the environment is closed")

    def _require_session(self) -> str:
        """The current session's id; an unpickled environment rebuilds its episode here, on its first call."""
        self._check_open()
        if self._session_id is None:
            if not self._restore_pending:
                raise FailedPreconditionError("no episode: call reset() first")
            self._restore_session()
        return self._session_id

    def _require_episode(self) -> None:
        """Raises unless an episode is open (or waits, unpickled, to be rebuilt on the next call)."""
        self._check_open()
        if self._session_id is None and not self._restore_pending:
            raise FailedPreconditionError("no episode: call reset() first")

    # -- benchmarks --------------------------------------------------------------------------------------------

    def list_benchmarks(self, dataset: str = "", split: str = "") -> List[Dict[str, Any]]:
        """The server's benchmarks (all datasets / splits when empty) as dicts of ``BenchmarkInfo`` fields."""
        self._check_open()
        reply = self._call("ListBenchmarks", env_pb2.ListBenchmarksRequest(dataset=dataset, split=split),
                           idempotent=True)
        return [benchmark_to_dict(b) for b in reply.benchmarks]

    def version(self) -> Dict[str, str]:
        self._check_open()
        return message_to_dict(self._call("GetVersion", env_pb2.GetVersionRequest(), idempotent=True))

    def _catalog(self) -> Tuple[List[Tuple[str, str, str]], List[str]]:
        """Every benchmark as (uri, dataset, split), and the generator families: what names resolve against."""
        reply = self._call("ListBenchmarks", env_pb2.ListBenchmarksRequest(), idempotent=True)
        return [(b.uri, b.dataset, b.split) for b in reply.benchmarks], list(reply.generator_families)

    @property
    def benchmark_choice(self) -> Optional[BenchmarkChoice]:
        """Where resets take their benchmark from (sources, order, cycle position); ``None`` until the first reset
        when no benchmark was given (then: the train split in random order)."""
        return self._choice

    def _pick_benchmark(self) -> str:
        if self._choice is None:
            # The training split (the eval split is held out), sorted so the pick depends only on the seed and the
            # set of benchmarks, not on the server's order.
            uris = sorted(b["uri"] for b in self.list_benchmarks(split="train"))
            if not uris:
                raise FailedPreconditionError("the server offers no benchmarks")
            self._choice = BenchmarkChoice(uris, self._benchmark_order or "random")
        return self._choice.next(self.np_random)

    # -- actions -----------------------------------------------------------------------------------------------

    @staticmethod
    def _action_values(action: Any) -> List[int]:
        """An action as a list of ints. Length, ranges and masks are the server's to check."""
        if type(action) is np.ndarray and action.ndim == 1 and action.dtype.kind in "iu":
            return action.tolist()  # the common case: Python ints without a per-element loop
        try:
            a = np.asarray(action)
        except Exception as e:  # noqa: BLE001 - anything numpy cannot read is a bad action
            raise InvalidArgumentError(f"cannot read the action {action!r} as an integer vector: {e}") from None
        if a.ndim == 0:
            a = a.reshape(1)
        if a.ndim != 1:
            raise InvalidArgumentError(f"an action must be a 1-D integer vector, got shape {a.shape}")
        if a.dtype.kind in "iu":
            return a.tolist()
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return [int(v) for v in a.tolist()]
        if a.dtype.kind == "O" and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in a):
            return [int(v) for v in a]
        raise InvalidArgumentError(f"action values must be integers, got {a.tolist()!r}")

    def head_masks(self) -> List[np.ndarray]:
        """One bool array per action head (in ``head_names`` order): the values legal in the current state.

        For gymnasium's ``MultiDiscrete.sample(mask=...)`` use ``tuple(m.astype(np.int8) for m in env.head_masks())``.
        """
        self._require_episode()
        if self._obs is None:
            raise FailedPreconditionError("no observation yet: call reset() first")
        return _spaces.head_masks_from_observation(self._obs, self.head_names, self.nvec)

    def action_masks(self) -> np.ndarray:
        """The legal values of every head, concatenated in head order (length ``sum(nvec)``), as maskable PPO
        implementations expect. Only the heads an action's type uses are checked by the server."""
        return np.concatenate(self.head_masks()).astype(bool)

    # -- RPCs on the session -----------------------------------------------------------------------------------

    def add_benchmark(self, mlir: str, description: str = "") -> Dict[str, Any]:
        """Uploads a benchmark (Linalg on tensors, or TOSA) to the server; returns its info dict, whose ``uri``
        (``benchmark://user/<hash>``) ``reset(options={"benchmark": uri})`` accepts. Rejections raise
        InvalidArgumentError with MLIR's diagnostic (line and column)."""
        reply = self._call("AddBenchmark", env_pb2.AddBenchmarkRequest(mlir=mlir, description=description),
                           idempotent=True)
        self._uploads[reply.benchmark.uri] = (mlir, description)
        return benchmark_to_dict(reply.benchmark)

    def _reset_rpc(self, benchmark: str, seed: int, replay: Sequence[Sequence[int]],
                   close_session_id: Optional[str] = None) -> "env_pb2.ResetReply":
        request = env_pb2.ResetRequest(benchmark=benchmark, options=self._options, seed=seed,
                                       close_session_id=close_session_id or "")
        for a in replay:
            request.replay_actions.add().values.extend(a)
        request.observation.SetInParent()
        try:
            return self._conn.call("Reset", request, idempotent=False)
        except NotFoundError:
            if benchmark not in self._uploads:
                raise
            self.add_benchmark(*self._uploads[benchmark])  # the server restarted: upload again (same URI)
            return self._conn.call("Reset", request, idempotent=False)

    def _session_call(self, method: str, make_request: Callable[[str], Any], *, idempotent: bool) -> Any:
        """Calls ``method`` on the current session; when the server has lost the session (NOT_FOUND, e.g. after
        a restart), rebuilds it from the recorded actions and retries once."""
        sid = self._require_session()
        try:
            return self._conn.call(method, make_request(sid), idempotent=idempotent)
        except NotFoundError as e:
            if not self._auto_recover or self._session_id != sid or self._episode_benchmark is None:
                raise
            logger.warning("%s: session %s is unknown to the server (%s); replaying %d action(s) to restore it",
                           method, sid, e, len(self._actions))
        except UnavailableError as e:
            if not self._auto_recover or self._episode_benchmark is None:
                raise
            if self._pool is not None and not self._pool.probe(self._conn.server):
                # The server is gone (no answer to its health check): rebuild the episode on another one.
                self._failover(f"{method}: {e}")
                return self._session_call(method, make_request, idempotent=idempotent)
            # A call that must not be repeated blindly: ask (idempotently, with retries) whether the server still
            # knows the session. If it does not, it restarted and nothing of this call survived: recover and retry.
            if idempotent:
                raise
            try:
                self._conn.call("Observe", env_pb2.ObserveRequest(session_id=sid), idempotent=True)
            except NotFoundError:
                logger.warning("%s: the server restarted; replaying %d action(s) to restore session %s",
                               method, len(self._actions), sid)
            else:
                raise
        self._recover()
        return self._conn.call(method, make_request(self._session_id), idempotent=idempotent)

    def _recover(self) -> None:
        """Rebuilds the episode from its recorded actions on a new session (``Reset(replay_actions=...)``); with
        several servers, on another one when this one is unreachable."""
        try:
            reply = self._reset_rpc(self._episode_benchmark, self._episode_seed, self._actions)
        except UnavailableError as e:
            if self._pool is None or self._pool.probe(self._conn.server):
                raise
            self._failover(f"Reset: {e}")
            return
        self._session_id = reply.session_id
        self._take_observation(reply.observation)  # the new session's first observation: later deltas build on it
        self.recoveries += 1

    # -- several servers -------------------------------------------------------------------------------------------

    def _switch(self, address: str) -> None:
        """Moves this environment (not its session) to the pool's server ``address``."""
        old = self._conn
        if old.server == address:
            return
        self._conn = self._pool.connection(address).acquire()
        self._pool.move(old.server, address)
        old.release()

    def _failover(self, reason: Any) -> None:
        """The current server is unreachable: mark it unusable and move to the usable server with the fewest
        sessions, rebuilding the open episode there from its recorded actions (no episode is lost, only delayed).
        Raises :class:`UnavailableError` when no server answers within the pool's ``wait_for_server``."""
        pool = self._pool
        pool.mark_unusable(self._conn.server, reason)
        self._session_id = None
        self._obs_id = 0
        while True:
            address = pool.place()
            logger.warning("moving %s from %s to %s (%s)", "its episode" if self._episode_benchmark else
                           "the environment", self._conn.server, address, reason)
            self._switch(address)
            if self._episode_benchmark is None:
                return
            try:
                reply = self._reset_rpc(self._episode_benchmark, self._episode_seed, self._actions)
            except UnavailableError as e:
                if pool.probe(address):
                    raise
                reason = f"Reset: {e}"
                continue
            self._session_id = reply.session_id
            self._take_observation(reply.observation)
            self.recoveries += 1
            self.migrations += 1
            return

    def _call(self, method: str, request: Any, *, idempotent: bool) -> Any:
        """A call that needs no session; with several servers, sent to another one when this one is unreachable."""
        if self._pool is None:
            return self._conn.call(method, request, idempotent=idempotent)
        for _ in range(len(self._pool.addresses) + 2):
            try:
                return self._conn.call(method, request, idempotent=idempotent)
            except UnavailableError:
                if self._pool.probe(self._conn.server):
                    raise
                self._switch(self._pool.place())
        return self._conn.call(method, request, idempotent=idempotent)

    def _end_session_elsewhere(self, conn: "Connection", sid: str) -> None:
        """Ends a session on a server this environment is leaving, without waiting for the answer."""
        try:
            conn.stub.Close.future(env_pb2.CloseRequest(session_id=sid), timeout=10.0, metadata=conn._metadata)
        except Exception as e:  # noqa: BLE001 - the session expires on the server anyway
            logger.debug("closing session %s on %s: %s", sid, conn.server, e)

    def _close_session(self) -> None:
        sid, self._session_id = self._session_id, None
        self._obs, self._obs_id = None, 0
        self._restore_pending = False
        if sid is None or self._conn.closed:
            return
        try:
            self._conn.call("Close", env_pb2.CloseRequest(session_id=sid), idempotent=False,
                            timeout=10.0 if self.timeout is None else min(10.0, self.timeout))
        except MlirRlError as e:  # the session is gone either way
            logger.debug("closing session %s: %s", sid, e)

    # -- Gymnasium API -----------------------------------------------------------------------------------------

    def reset(self, *, seed: Optional[int] = None, options: Optional[Mapping[str, Any]] = None
              ) -> Tuple["OrderedDict[str, np.ndarray]", Dict[str, Any]]:
        """Starts an episode on a new session (the previous one is closed).

        ``seed`` seeds ``self.np_random`` (Gymnasium's convention) and the server's evaluation inputs (0 when
        ``None``). ``options``: ``"benchmark"`` (URI, for this episode only; default: the constructor's, else a
        pick with ``self.np_random``) and ``"replay_actions"`` (actions applied after the reset, as ``step``
        would).
        """
        self._check_open()
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise InvalidArgumentError(f"seed must be a non-negative integer or None, got {seed!r}")
        super().reset(seed=None if seed is None else int(seed))
        options = dict(options or {})
        unknown = sorted(set(options) - {"benchmark", "replay_actions"})
        if unknown:
            raise InvalidArgumentError(f"unknown reset option(s) {', '.join(map(repr, unknown))}; "
                                       f"known: 'benchmark', 'replay_actions'")
        if seed is not None and self._choice is not None:
            self._choice.restart()  # a seeded reset starts the benchmark cycle again (reproducible episodes)
        if options.get("benchmark") is not None:
            benchmark = _normalize_benchmark(options["benchmark"])
        else:
            benchmark = self._pick_benchmark()
        replay = [self._action_values(a) for a in (options.get("replay_actions") or [])]
        server_seed = 0 if seed is None else int(seed)

        # The previous session is closed by the Reset itself (one round trip instead of two).
        previous, self._session_id = self._session_id, None
        self._restore_pending = False
        self._obs, self._obs_id = None, 0
        if self._pool is not None:
            # A new episode goes to the server with the fewest sessions (this one when it is among them).
            address = self._pool.place(current=self._conn.server)
            if address != self._conn.server:
                if previous is not None:
                    self._end_session_elsewhere(self._conn, previous)
                    previous = None
                self._switch(address)
        while True:
            try:
                reply = self._reset_rpc(benchmark, server_seed, replay, close_session_id=previous)
                break
            except UnavailableError as e:
                # Several servers: this one is gone (or draining, which refuses new sessions): try another.
                if self._pool is None or self._pool.probe(self._conn.server):
                    error: MlirRlError = e
                else:
                    self._switch(self._pool.place())
                    previous = None
                    continue
            except MlirRlError as e:
                error = e
            # A Reset refused before it got to closing (e.g. an unknown benchmark) leaves the old session open.
            if previous is not None:
                self._session_id = previous
                self._close_session()
            raise error
        self._session_id = reply.session_id
        self._episode_benchmark = reply.benchmark or benchmark
        self._episode_seed = server_seed
        self._actions = [list(a) for a in replay]
        obs = self._take_observation(reply.observation)
        info: Dict[str, Any] = message_to_dict(reply.info)
        info["benchmark"] = self._episode_benchmark
        info["session_id"] = reply.session_id
        self.reference = message_to_dict(reply.reference) if reply.HasField("reference") else None
        self.last_evaluation = self.last_apply_ms = None
        if self.info_timings and self.reference is not None:
            info["reference"] = self.reference
        info["terminated"] = bool(reply.terminated)
        info["truncated"] = bool(reply.truncated)
        return obs, info

    def step(self, action: Any) -> Tuple["OrderedDict[str, np.ndarray]", float, bool, bool, Dict[str, Any]]:
        """Applies one action ``[type, tile_0, ..., tile_{L-1}, interchange]``.

        Raises :class:`InvalidArgumentError` (``ValueError``) for a malformed action, and for a masked one with
        ``masked_actions="reject"`` (the state is unchanged), and :class:`FailedPreconditionError` after the end of
        the episode. A transformation that fails to apply, or a masked action with ``masked_actions="penalize"``
        (the default), is not an error: ``info["applied"]`` is False and the reward is the transform penalty.
        """
        values = self._action_values(action)
        reply = self._session_call("Step", lambda sid: _step_request(sid, values, self._obs_id), idempotent=False)
        return self._finish_step(values, reply)

    def _finish_step(self, values: List[int], reply: "env_pb2.StepReply", copy: bool = True
                     ) -> Tuple["OrderedDict[str, np.ndarray]", float, bool, bool, Dict[str, Any]]:
        """The Gymnasium step result from the server's reply to ``values``. ``copy=False`` (the vector env, which
        copies them into its batch) returns this environment's private arrays, not to be handed out or changed."""
        if not reply.outcomes:
            # The server stopped before the action: the episode was already over.
            state = "truncated" if reply.truncated and not reply.terminated else "terminated"
            raise FailedPreconditionError(f"the episode is over ({state}): call reset() to start a new one")
        # Record what the server processed (including actions that failed to apply), for replay.
        self._actions.append(values)
        obs = self._take_observation(reply.observation) if copy else self._update_observation(reply.observation)
        outcome = reply.outcomes[-1]
        info = _outcome_to_dict(outcome, self.info_timings)
        self.last_apply_ms = outcome.apply_ms
        self.last_evaluation = message_to_dict(outcome.evaluation) if outcome.HasField("evaluation") else None
        info.update(message_to_dict(reply.info))
        return obs, float(reply.reward), bool(reply.terminated), bool(reply.truncated), info

    def observe(self, include_ir: bool = False, include_schedule: bool = False
                ) -> Tuple["OrderedDict[str, np.ndarray]", Dict[str, Any]]:
        """The current observation without acting: ``(obs, info)``; ``info`` holds the episode fields,
        ``terminated`` and ``truncated``, and ``ir`` / ``schedule`` when asked for."""
        def make_request(sid: str) -> "env_pb2.ObserveRequest":
            return env_pb2.ObserveRequest(session_id=sid, observation=env_pb2.ObservationRequest(
                include_ir=include_ir, include_schedule=include_schedule, since=self._obs_id))

        reply = self._session_call("Observe", make_request, idempotent=True)
        obs = self._take_observation(reply.observation)
        info = message_to_dict(reply.info)
        info["terminated"] = bool(reply.terminated)
        info["truncated"] = bool(reply.truncated)
        if include_ir:
            info["ir"] = reply.observation.ir
        if include_schedule:
            info["schedule"] = reply.observation.schedule
        return obs, info

    def render(self) -> str:
        """The current payload IR text."""
        _, info = self.observe(include_ir=True)
        return info["ir"]

    def export_schedule(self) -> Dict[str, Any]:
        """The schedule so far: ``transform_script`` (Transform dialect; apply with ``mlir-opt
        --transform-interpreter`` to ``benchmark_ir``), ``benchmark_ir``, ``current_ir``, ``actions`` and
        ``benchmark``."""
        reply = self._session_call("ExportSchedule", lambda sid: env_pb2.ExportScheduleRequest(session_id=sid),
                                   idempotent=True)
        return {
            "transform_script": reply.transform_script,
            "benchmark_ir": reply.benchmark_ir,
            "current_ir": reply.current_ir,
            "actions": [list(a.values) for a in reply.actions],
            "benchmark": reply.benchmark,
        }

    def fork(self) -> "MlirRlEnv":
        """A new environment on a copy of the current session (same channel, spaces, options and RNG state).

        The copy is independent: stepping one leaves the other unchanged. Close it when done.
        """
        reply = self._session_call("Fork", lambda sid: env_pb2.ForkRequest(session_id=sid), idempotent=False)
        # A shallow copy of the attributes (copy.copy would go through pickling's __getstate__ / __setstate__).
        child = type(self).__new__(type(self))
        child.__dict__.update(self.__dict__)
        child.__dict__.update({
            "_conn": self._conn.acquire(),
            "_session_id": reply.session_id,
            "_actions": [list(a) for a in self._actions],
            "_obs": None if self._obs is None else OrderedDict((k, v.copy()) for k, v in self._obs.items()),
            "_obs_id": 0,  # the copy's session has sent nothing yet: its first observation is a full one
            "action_space": copy.deepcopy(self.action_space),
            "observation_space": copy.deepcopy(self.observation_space),
            "recoveries": 0,
        })
        if getattr(self, "_np_random", None) is not None:
            child._np_random = copy.deepcopy(self._np_random)
        for name in ("nvec", "head_names", "type_names", "tile_sizes"):
            setattr(child, name, list(getattr(self, name)))
        if self._choice is not None:
            child._choice = copy.deepcopy(self._choice)
        if self._pool is not None:  # the copy's session is on the same server, counted there
            self._pool.acquire()
            self._pool.move(None, self._conn.server)
        return child

    def close(self) -> None:
        """Ends the session and releases the connection (shared with forks). Idempotent."""
        if getattr(self, "_closed", True):
            return
        try:
            self._close_session()
        finally:
            self._closed = True
            self._conn.release()
            if self._pool is not None:
                self._pool.move(self._conn.server, None)
                self._pool.release()

    # -- pickling ----------------------------------------------------------------------------------------------

    def __getstate__(self) -> Dict[str, Any]:
        """What a copy in another process needs: the server's address and the call settings, the options, spaces,
        benchmark choice, RNG, and the episode (benchmark, seed, recorded actions, last observation). The gRPC
        channel and the session stay here."""
        state = dict(self.__dict__)
        conn = state.pop("_conn")
        pool = state.pop("_pool", None)
        state["_connection_settings"] = {"server": conn.server, "timeout": conn.timeout,
                                         "max_attempts": conn.max_attempts, "backoff": conn.backoff,
                                         "servers": None if pool is None else pool.spec,
                                         "resolver": None if pool is None else pool.resolver_given}
        # An episode to rebuild (Reset with replay_actions) on the copy's first call.
        state["_restore_pending"] = not self._closed and (self._session_id is not None or self._restore_pending)
        state["_session_id"] = None
        state["_obs_id"] = 0  # the copy's session has sent nothing yet: its first observation is a full one
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Connects to the same server (no call yet); an open episode is rebuilt from its actions on the first call
        that needs the session, so unpickling never waits for the network."""
        state = dict(state)
        settings = state.pop("_connection_settings")
        self.__dict__.update(state)
        self._pool = None
        servers = settings.get("servers")
        if servers is not None and not self._closed:
            # A pool of its own over the same servers; the episode is rebuilt where it is placed.
            def connect(address: str, s: Dict[str, Any] = settings) -> Connection:
                return Connection(address, timeout=s["timeout"], max_attempts=s["max_attempts"], backoff=s["backoff"])

            self._pool = ServerPool(servers, connect, resolver=settings.get("resolver"))
            address = self._pool.place()
            self._conn = self._pool.connection(address).acquire()
            self._pool.move(None, address)
            return
        self._conn = Connection(settings["server"], timeout=settings["timeout"],
                                max_attempts=settings["max_attempts"], backoff=settings["backoff"])
        if self._closed:
            self._conn.release()

    def _restore_session(self) -> None:
        """Rebuilds the episode of an unpickled environment: a new session with the recorded actions replayed."""
        reply = self._reset_rpc(self._episode_benchmark, self._episode_seed, self._actions)
        self._restore_pending = False
        self._session_id = reply.session_id
        self._update_observation(reply.observation)  # the new session's first observation: later deltas build on it

    def __repr__(self) -> str:
        if not hasattr(self, "_conn"):
            return "MlirRlEnv(<not connected>)"
        state = "closed" if self._closed else (f"session {self._session_id}" if self._session_id else "no episode")
        return f"MlirRlEnv({self.benchmark!r}, server={self.server!r}, {state})"

    def _take_observation(self, observation: "env_pb2.Observation") -> "OrderedDict[str, np.ndarray]":
        """The observation as fresh arrays for the caller (theirs to modify)."""
        return OrderedDict((name, array.copy()) for name, array in self._update_observation(observation).items())

    def _update_observation(self, observation: "env_pb2.Observation") -> "OrderedDict[str, np.ndarray]":
        """Takes in a reply's observation and returns the private arrays. A delta observation carries only the
        tensors that changed since the one this environment holds; the rest come from its private copy."""
        received = _spaces.observation_to_dict(observation)
        if observation.delta:
            if self._obs is None:
                raise InternalError("the server sent a delta observation but this environment holds no full one")
            kept = self._obs
            kept.update(received)
        else:
            kept = received
        self._obs, self._obs_id = kept, observation.id
        return kept
