"""Module-level helpers: ``make``, ``make_vec``, ``list_benchmarks`` and ``version``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .env import DEFAULT_SERVER, Connection, MlirRlEnv, benchmark_to_dict, message_to_dict
from .v1 import env_pb2
from .vector import MlirRlVectorEnv

__all__ = ["make", "make_vec", "list_benchmarks", "generator_families", "version"]


def make(benchmark: Any = None, *, server: str = DEFAULT_SERVER, mlir: Optional[str] = None,
         **options: Any) -> MlirRlEnv:
    """An :class:`MlirRlEnv` on ``server``; ``options`` are the constructor's keyword arguments (session options
    such as ``max_loops=8, reward_mode="immediate"``, and ``timeout``, ``render_mode``, ``benchmark_order``, ...).
    ``benchmark``: one URI, a list of URIs, a dataset, a split (``"train"``, ``"eval"``), generator families
    (``"generator://family"``), or a list of these, picked at each reset in ``benchmark_order`` (``"cycle"`` or
    ``"random"``; see :mod:`mlir_rl.benchmarks`); ``None``: the train split, at random.
    With ``mlir=TEXT`` the module (Linalg on tensors, or TOSA) is uploaded, validated by the server, and becomes
    the benchmark."""
    return MlirRlEnv(benchmark, server=server, mlir=mlir, **options)


def make_vec(num_envs: int, benchmark: Any = None, *, server: str = DEFAULT_SERVER,
             **options: Any) -> MlirRlVectorEnv:
    """A :class:`MlirRlVectorEnv` of ``num_envs`` sessions on ``server``, stepped with one call per step.
    ``benchmark`` as for :func:`make`, shared by the sub-environments: in ``"cycle"`` order (a list's default)
    sub-environment ``i`` takes picks ``i, i + num_envs, ...`` (so a list of ``num_envs`` URIs gives each its own),
    in ``"random"`` order each draws with its own RNG (seeded ``seed + i``)."""
    return MlirRlVectorEnv(num_envs, benchmark, server=server, **options)


def list_benchmarks(server: str = DEFAULT_SERVER, dataset: str = "", *, split: str = "",
                    timeout: Optional[float] = 60.0) -> List[Dict[str, Any]]:
    """The server's benchmarks as dicts with keys uri, dataset, name, description, num_ops, op_families, dtype,
    flops, bytes, arithmetic_intensity, split ("train", "eval", "user") and reference_ns (0 until measured); all
    datasets when ``dataset`` is empty, all splits when ``split`` is empty. ``generator://<family>/<seed>`` URIs
    (families: :func:`generator_families`) work wherever a benchmark URI does."""
    conn = Connection(server, timeout=timeout)
    try:
        reply = conn.call("ListBenchmarks", env_pb2.ListBenchmarksRequest(dataset=dataset, split=split),
                          idempotent=True)
        return [benchmark_to_dict(b) for b in reply.benchmarks]
    finally:
        conn.release()


def generator_families(server: str = DEFAULT_SERVER, *, timeout: Optional[float] = 60.0) -> List[str]:
    """Families of generator://<family>/<seed> benchmarks (seeded random ops, disjoint from the eval split)."""
    conn = Connection(server, timeout=timeout)
    try:
        return list(conn.call("ListBenchmarks", env_pb2.ListBenchmarksRequest(dataset="-"),
                              idempotent=True).generator_families)
    finally:
        conn.release()


def version(server: str = DEFAULT_SERVER, *, timeout: Optional[float] = 60.0) -> Dict[str, str]:
    """The server's version: dict with server_version, protocol_version ("v1"), mlir_version, host_cpu."""
    conn = Connection(server, timeout=timeout)
    try:
        return message_to_dict(conn.call("GetVersion", env_pb2.GetVersionRequest(), idempotent=True))
    finally:
        conn.release()
