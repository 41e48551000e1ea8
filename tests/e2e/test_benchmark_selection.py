"""Benchmark selection (issue 18, item 2): make / make_vec take a URI, a list, a dataset, a split or generator
families, picked at each reset in cycle or seeded random order."""

from __future__ import annotations

import numpy as np
import pytest

import mlir_rl
from mlir_rl import errors
from mlir_rl.benchmarks import BenchmarkChoice

A = "benchmark://nn-ops/matmul_64x64x64_f32"
B = "benchmark://nn-ops/relu_128x256_f32"
C = "benchmark://nn-ops/add_256x256_f32"


def episodes(env: mlir_rl.MlirRlEnv, n: int, seed=None) -> list:
    """The benchmarks of ``n`` resets, the first with ``seed``."""
    out = []
    for i in range(n):
        _, info = env.reset(seed=seed if i == 0 else None)
        assert info["benchmark"] == env.benchmark
        out.append(info["benchmark"])
    return out


def test_a_list_is_cycled_and_a_seeded_reset_restarts_the_cycle(server):
    with mlir_rl.make([A, "nn-ops/relu_128x256_f32", C], server=server) as env:
        assert env.benchmark is None and env.benchmark_choice.order == "cycle"
        assert episodes(env, 4) == [A, B, C, A]
        assert episodes(env, 2, seed=3) == [A, B]
        # A benchmark named by reset's options is for that episode only: the cycle goes on after it.
        _, info = env.reset(options={"benchmark": C})
        assert info["benchmark"] == C
        assert episodes(env, 1) == [C]


def test_random_order_is_reproducible_with_the_seed(server):
    nn_ops = {b["uri"] for b in mlir_rl.list_benchmarks(server=server, dataset="nn-ops")}
    with mlir_rl.make("nn-ops", server=server) as env:
        assert env.benchmark_choice.order == "random" and set(env.benchmark_choice.sources) == nn_ops
        first = episodes(env, 6, seed=7)
        assert set(first) <= nn_ops and len(set(first)) > 1
        assert episodes(env, 6, seed=7) == first
        assert episodes(env, 6, seed=8) != first
    # The same seed picks the same sequence in another env (and so in another process).
    with mlir_rl.make("benchmark://nn-ops", server=server, benchmark_order="random") as other:
        assert episodes(other, 6, seed=7) == first
    with mlir_rl.make([A, B, C], server=server, benchmark_order="random") as env:
        picks = episodes(env, 12, seed=1)
        assert set(picks) == {A, B, C} and episodes(env, 12, seed=1) == picks


def test_splits_datasets_and_generator_families(server):
    evals = sorted(b["uri"] for b in mlir_rl.list_benchmarks(server=server, split="eval"))
    with mlir_rl.make("eval", server=server, benchmark_order="cycle") as env:
        assert env.benchmark_choice.sources == evals
        assert episodes(env, 2, seed=0) == evals[:2]
    families = mlir_rl.generator_families(server=server)
    with mlir_rl.make("generator://matmul", server=server, benchmark_order="cycle") as env:
        picks = episodes(env, 3, seed=0)
        assert picks == ["generator://matmul/0", "generator://matmul/1", "generator://matmul/2"]
    with mlir_rl.make(["generator://matmul", A], server=server) as env:  # a list: cycled
        assert episodes(env, 4, seed=0) == ["generator://matmul/0", A, "generator://matmul/1", A]
    with mlir_rl.make("generator://", server=server) as env:  # every family, random
        assert env.benchmark_choice.sources == [f"generator://{f}" for f in families]
        picks = episodes(env, 3, seed=5)
        assert all(p.rsplit("/", 1)[0][len("generator://"):] in families for p in picks)
        assert episodes(env, 3, seed=5) == picks


def test_unknown_names_and_orders_are_refused_by_make(server):
    with pytest.raises(errors.NotFoundError, match="no benchmarks in dataset 'nn-opz'.*datasets: .*nn-ops"):
        mlir_rl.make("nn-opz", server=server)
    with pytest.raises(errors.NotFoundError, match="unknown generator family 'nope'.*matmul"):
        mlir_rl.make(["generator://nope"], server=server)
    with pytest.raises(ValueError, match="benchmark_order"):
        mlir_rl.make(A, server=server, benchmark_order="shuffled")
    with pytest.raises(ValueError, match="empty list"):
        mlir_rl.make([], server=server)
    with pytest.raises(ValueError, match="non-empty string"):
        mlir_rl.make([A, 3], server=server)


def test_vector_env_shares_one_cycle(server):
    with mlir_rl.make_vec(2, [A, B, C], server=server) as envs:
        envs.reset(seed=0)
        assert [e.benchmark for e in envs.envs] == [A, B]
        # Sub-environment i takes picks i, i + 2, i + 4, ...: together they go through the list in order.
        assert episodes(envs.envs[0], 2) == [C, B]
        assert episodes(envs.envs[1], 2) == [A, C]
    with mlir_rl.make_vec(3, [A, B, C], server=server) as envs:  # a list of num_envs URIs: one each, always
        for _ in range(2):
            envs.reset()
            assert [e.benchmark for e in envs.envs] == [A, B, C]
    with mlir_rl.make_vec(2, "nn-ops", server=server) as envs:
        envs.reset(seed=4)
        picks = [e.benchmark for e in envs.envs]
        with mlir_rl.make("nn-ops", server=server) as single:  # sub-environment 1 was seeded 4 + 1
            _, info = single.reset(seed=5)
            assert info["benchmark"] == picks[1]


def test_benchmark_choice_units():
    rng = np.random.default_rng(0)
    choice = BenchmarkChoice(["generator://a", "x"], "cycle", offset=1, stride=2)
    assert [choice.next(rng) for _ in range(4)] == ["x", "x", "x", "x"]
    choice = BenchmarkChoice(["generator://a", "x", "y"], "cycle", offset=1, stride=2)
    # positions 1, 3, 5, 7 of [a, x, y]: a family takes the lap as its seed
    assert [choice.next(rng) for _ in range(4)] == ["x", "generator://a/1", "y", "x"]
    choice.restart()
    assert choice.next(rng) == "x"
    assert BenchmarkChoice(["u"], "random").fixed == "u" and BenchmarkChoice(["generator://a"]).fixed is None
    with pytest.raises(ValueError):
        BenchmarkChoice([], "cycle")
