"""Module-level helpers: ``make``, ``make_vec``, ``list_benchmarks`` and ``version``.

Without ``server=`` they use ``$MLIR_RL_SERVER`` when set, else a local ``mlir-rl-server`` shared by the process
(started on first use, stopped when the last environment using it is closed or the process exits; see
:mod:`mlir_rl.local_server`)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from . import local_server
from .env import Connection, MlirRlEnv, benchmark_to_dict, message_to_dict
from .v1 import env_pb2
from .vector import MlirRlVectorEnv

__all__ = ["make", "make_vec", "list_benchmarks", "generator_families", "version"]

ENV_SERVERS = "MLIR_RL_SERVERS"


def _servers(server: Optional[str], servers: Any) -> Any:
    """``servers=``, else ``$MLIR_RL_SERVERS`` (a comma-separated list, or ``dns:///name:port``) when no ``server=``
    is given either."""
    if servers is not None:
        if server is not None:
            raise ValueError("give server= or servers=, not both")
        return servers
    if server is None:
        return os.environ.get(ENV_SERVERS, "").strip() or None
    return None


def make(benchmark: Any = None, *, server: Optional[str] = None, mlir: Optional[str] = None,
         servers: Any = None, **options: Any) -> MlirRlEnv:
    """An :class:`MlirRlEnv` on ``server`` (``host:port``; ``None``: ``$MLIR_RL_SERVER``, else the process's local
    server); ``options`` are the constructor's keyword arguments (session options such as ``max_loops=8,
    reward_mode="immediate"``, and ``timeout``, ``render_mode``, ``benchmark_order``, ...).
    ``benchmark``: one URI, a list of URIs, a dataset, a split (``"train"``, ``"eval"``), generator families
    (``"generator://family"``), or a list of these, picked at each reset in ``benchmark_order`` (``"cycle"`` or
    ``"random"``; see :mod:`mlir_rl.benchmarks`); ``None``: the train split, at random.
    With ``mlir=TEXT`` the module (Linalg on tensors, or TOSA) is uploaded, validated by the server, and becomes
    the benchmark.
    ``servers=``: several servers (a list of ``host:port``, or ``"dns:///name:port"``; default
    ``$MLIR_RL_SERVERS``): each episode goes to the one holding the fewest sessions of this env and its forks, and
    moves to another (replaying its actions) when its server becomes unreachable (:mod:`mlir_rl.cluster`)."""
    servers = _servers(server, servers)
    if servers is not None:
        return MlirRlEnv(benchmark, servers=servers, mlir=mlir, **options)
    return local_server.open_env(MlirRlEnv, server, benchmark, mlir=mlir, **options)


def make_vec(num_envs: int, benchmark: Any = None, *, server: Optional[str] = None, servers: Any = None,
             **options: Any) -> MlirRlVectorEnv:
    """A :class:`MlirRlVectorEnv` of ``num_envs`` sessions on ``server`` (as for :func:`make`), stepped with one
    call per step. ``benchmark`` as for :func:`make`, shared by the sub-environments: in ``"cycle"`` order (a list's
    default) sub-environment ``i`` takes picks ``i, i + num_envs, ...`` (so a list of ``num_envs`` URIs gives each
    its own), in ``"random"`` order each draws with its own RNG (seeded ``seed + i``).
    ``servers=``: several servers (a list of ``host:port``, or ``"dns:///name:port"`` for every address of a name,
    resolved again as replicas come and go; default ``$MLIR_RL_SERVERS``): sessions spread by load, one
    ``StepMany`` per server per step, sent concurrently, and failover by replay (:mod:`mlir_rl.cluster`)."""
    servers = _servers(server, servers)
    if servers is not None:
        return MlirRlVectorEnv(num_envs, benchmark, servers=servers, **options)
    return local_server.open_env(MlirRlVectorEnv, server, num_envs, benchmark, **options)


def list_benchmarks(server: Optional[str] = None, dataset: str = "", *, split: str = "",
                    timeout: Optional[float] = 60.0) -> List[Dict[str, Any]]:
    """The server's benchmarks as dicts with keys uri, dataset, name, description, num_ops, op_families, dtype,
    flops, bytes, arithmetic_intensity, split ("train", "eval", "user") and reference_ns (0 until measured); all
    datasets when ``dataset`` is empty, all splits when ``split`` is empty. ``generator://<family>/<seed>`` URIs
    (families: :func:`generator_families`) work wherever a benchmark URI does."""
    with local_server.address(server) as address:
        conn = Connection(address, timeout=timeout)
        try:
            reply = conn.call("ListBenchmarks", env_pb2.ListBenchmarksRequest(dataset=dataset, split=split),
                              idempotent=True)
            return [benchmark_to_dict(b) for b in reply.benchmarks]
        finally:
            conn.release()


def generator_families(server: Optional[str] = None, *, timeout: Optional[float] = 60.0) -> List[str]:
    """Families of generator://<family>/<seed> benchmarks (seeded random ops, disjoint from the eval split)."""
    with local_server.address(server) as address:
        conn = Connection(address, timeout=timeout)
        try:
            return list(conn.call("ListBenchmarks", env_pb2.ListBenchmarksRequest(families_only=True),
                                  idempotent=True).generator_families)
        finally:
            conn.release()


def version(server: Optional[str] = None, *, timeout: Optional[float] = 60.0) -> Dict[str, str]:
    """The server's version: dict with server_version, protocol_version ("v1"), mlir_version, host_cpu."""
    with local_server.address(server) as address:
        conn = Connection(address, timeout=timeout)
        try:
            return message_to_dict(conn.call("GetVersion", env_pb2.GetVersionRequest(), idempotent=True))
        finally:
            conn.release()
