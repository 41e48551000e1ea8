"""The PPO agent against a real server: a short training run beats the masked random policy; checkpoints and
--resume; the mlir-rl-train / mlir-rl-evaluate programs.

The training run is seeded (policy initialization, sampling, the benchmark picks) but not bitwise reproducible: the
rewards are measured speedups, which vary from run to run, and the evaluation cache the shared test server keeps
changes which evaluations are measured. The margins below are set from repeated runs (README, "Training an agent").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the agent needs PyTorch (Debian: python3-torch)")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO_ROOT / "clients" / "python"

# Small kernels with cheap evaluations: a matmul that tiling and vectorization speed up many times, and two
# elementwise ops that most transformations slow down (the random policy's mean final reward is below 0).
BENCHMARKS = ["benchmark://nn-ops/matmul_64x64x64_f32", "benchmark://nn-ops/relu_128x256_f32",
              "benchmark://nn-ops/add_256x256_f32"]
TRAIN_ARGS = ["--num-envs", "8", "--steps-per-update", "16", "--hidden", "128", "--seed", "0",
              "--random-baseline", "48", "--checkpoint-every", "100", "--no-progress"]
# 32 updates since SPLIT_REDUCTION (an 11th action type, legal on the matmul): with 24 the ASan server's run of CI
# reached trained +0.23 against random -0.10 (margin 0.33); with 32, +0.32 against -0.11 (margin 0.43).
UPDATES = 32
# Mean final reward (log10 speedup) above the masked random policy's. Over 11 runs (8 with seed 0, seeds 1-3), each on
# a fresh server: random -0.30..-0.12, trained +0.36..+0.50 (margin 0.54..0.73), greedy +0.44..+0.51 (margin
# 0.60..0.74): the policy learns to tile and vectorize the matmul (22-27x) and to leave the elementwise ops nearly
# alone, while random schedules slow those down (down to 0.04x).
TRAIN_MARGIN = 0.35   # the sampled episodes of the last LAST_UPDATES updates
GREEDY_MARGIN = 0.35  # greedy decoding, one episode per benchmark
LAST_UPDATES = 4


def _jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlir_rl import train

    out = tmp_path_factory.mktemp("train")
    rc = train.main(["--server", server, "--benchmarks", *BENCHMARKS, "--updates", str(UPDATES), "--out", str(out),
                     *TRAIN_ARGS])
    assert rc == 0
    return out


def test_training_beats_the_masked_random_policy(trained: Path, server: str, tmp_path: Path):
    random_eps = _jsonl(trained / "random_baseline.jsonl")
    assert len(random_eps) == 48
    random_mean = float(np.mean([e["final_reward"] for e in random_eps]))
    rows = _jsonl(trained / "updates.jsonl")
    assert [r["update"] for r in rows] == list(range(1, UPDATES + 1))
    episodes = _jsonl(trained / "episodes.jsonl")
    last = [e for e in episodes if e["update"] >= UPDATES - LAST_UPDATES]
    trained_mean = float(np.mean([e["final_reward"] for e in last]))
    print(f"random {random_mean:.3f} ({len(random_eps)} episodes), trained (last {LAST_UPDATES} updates) "
          f"{trained_mean:.3f} ({len(last)} episodes)")
    assert trained_mean > random_mean + TRAIN_MARGIN, (trained_mean, random_mean)

    # Greedy decoding of the trained policy, one episode per benchmark, through mlir-rl-evaluate.
    from mlir_rl import evaluate

    search = tmp_path / "search.jsonl"
    search.write_text(json.dumps({"benchmark": BENCHMARKS[0], "speedup": 7.5, "method": "search"}) + "\n")
    out = tmp_path / "eval"
    assert evaluate.main([str(trained / "policy.pt"), "--server", server, "--benchmarks", *BENCHMARKS,
                          "--random-episodes", "2", "--out", str(out), "--no-progress",
                          "--baseline", f"search={search}"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    greedy = [e for b in result["per_benchmark"] for e in b["episodes"] if e["policy"] == "policy"]
    assert len(greedy) == len(BENCHMARKS)
    greedy_mean = float(np.mean([e["final_reward"] for e in greedy]))
    print(f"greedy {greedy_mean:.3f}: " + ", ".join(f"{e['benchmark'].split('/')[-1]} {e['speedup']}"
                                                     for e in greedy))
    assert greedy_mean > random_mean + GREEDY_MARGIN, (greedy_mean, random_mean)
    # the tables: policy, random (2 episodes each) and the search column, which has the matmul only
    assert result["columns"] == ["policy", "random", "search"]
    assert sum(1 for b in result["per_benchmark"] for e in b["episodes"] if e["policy"] == "random") == 6
    assert result["families"]["matmul"]["search"] == pytest.approx(7.5)
    assert result["families"]["elementwise"]["search"] != result["families"]["elementwise"]["search"]  # NaN
    md = (out / "evaluation.md").read_text()
    assert "| matmul | 1 |" in md and "| search |" in md
    assert (out / "evaluation.png").stat().st_size > 0
    assert (trained / "learning_curve.png").stat().st_size > 0


def test_logs_and_summary(trained: Path):
    import csv

    with open(trained / "updates.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == UPDATES
    episodes = _jsonl(trained / "episodes.jsonl")
    assert [e["episode"] for e in episodes] == list(range(1, len(episodes) + 1))
    assert int(rows[-1]["episodes"]) == len(episodes)
    assert {e["benchmark"] for e in episodes} == set(BENCHMARKS)
    assert all(e["correct"] for e in episodes if e["speedup"] is not None)
    summary = json.loads((trained / "summary.json").read_text())
    inv = summary["this_invocation"]
    assert inv["episodes"] == len(episodes) and inv["evaluations"] == len(episodes)
    assert 0 <= inv["client_cache_hit_rate"] <= 1
    assert inv["server_evaluations_total"] >= inv["evaluations"] - inv["evaluations"] * inv["client_cache_hit_rate"]
    assert abs(sum(summary["time_share"].values()) - 1.0) < 1e-6


def _tiny(server: str, out: Path, *more: str, benchmarks: bool = True) -> int:
    from mlir_rl import train

    return train.main(["--server", server, *(["--benchmarks", BENCHMARKS[0]] if benchmarks else []), "--num-envs", "2",
                       "--steps-per-update", "4", "--epochs", "1", "--minibatches", "1", "--hidden", "16",
                       "--no-progress", "--out", str(out), *more])


def test_checkpoint_and_resume(server: str, tmp_path: Path):
    import torch

    out = tmp_path / "run"
    assert _tiny(server, out, "--updates", "2", "--checkpoint-every", "1") == 0
    state = torch.load(out / "checkpoint.pt")
    assert state["counters"]["updates"] == 2
    episodes_before = state["counters"]["episodes"]
    adam_steps = [s["step"] for s in state["optimizer"]["state"].values()]
    assert all(int(s) == 2 for s in adam_steps)  # one minibatch, one epoch: one optimizer step per update
    # what a run that crashed after its checkpoint would have left in the logs: cut back on --resume
    with open(out / "updates.jsonl", "a") as f:
        f.write(json.dumps({"update": 3, "episodes": 10**6}) + "\n")
    with open(out / "episodes.jsonl", "a") as f:
        f.write(json.dumps({"episode": 10**6, "update": 2}) + "\n")
    assert _tiny(server, out, "--updates", "3", "--resume", benchmarks=False) == 0  # the run's own benchmarks
    state = torch.load(out / "checkpoint.pt")
    assert state["counters"]["updates"] == 3
    assert state["counters"]["episodes"] >= episodes_before
    assert all(int(s["step"]) == 3 for s in state["optimizer"]["state"].values())  # the optimizer was restored
    rows = _jsonl(out / "updates.jsonl")
    assert [r["update"] for r in rows] == [1, 2, 3]
    episodes = _jsonl(out / "episodes.jsonl")
    assert [e["episode"] for e in episodes] == list(range(1, len(episodes) + 1))
    assert {e["benchmark"] for e in episodes} == {BENCHMARKS[0]}
    config = json.loads((out / "config.json").read_text())
    assert config["resumed_from_update"] == 2 and config["args"]["benchmarks"] == [BENCHMARKS[0]]
    assert state["extra"]["wall_s"] > 0
    # nothing to resume from
    assert _tiny(server, tmp_path / "empty", "--updates", "1", "--resume") == 2


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(CLIENT_DIR))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO_ROOT)


def test_entry_points_help():
    train = _run("mlir_rl.train", "--help")
    assert train.returncode == 0, train.stderr
    for flag in ("--benchmarks", "--resume", "--checkpoint-every", "--minutes", "--random-baseline"):
        assert flag in train.stdout
    evaluate = _run("mlir_rl.evaluate", "--help")
    assert evaluate.returncode == 0, evaluate.stderr
    for flag in ("--random-episodes", "--baseline", "--benchmarks"):
        assert flag in evaluate.stdout
    assert "['models', 'lqcd']" in " ".join(evaluate.stdout.split())  # the eval split by default
    bad = _run("mlir_rl.train", "--updates", "x")
    assert bad.returncode == 2 and "invalid int value" in bad.stderr


def test_console_scripts_are_declared():
    import importlib
    import tomllib

    scripts = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in (("mlir-rl-train", "mlir_rl.train:main"), ("mlir-rl-evaluate", "mlir_rl.evaluate:main")):
        assert scripts[name] == target
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))


def test_evaluate_refuses_generator_families(server: str, tmp_path: Path):
    from mlir_rl import evaluate
    from mlir_rl.agent import ActorCritic, export_policy

    policy = tmp_path / "p.pt"
    export_policy(str(policy), ActorCritic(op_dim=4, ctx_dim=4, num_types=8, max_loops=12, num_tile_choices=8,
                                           num_interchange=12, hidden=8))
    assert evaluate.main([str(policy), "--server", server, "--benchmarks", "generator://matmul", "--out",
                          str(tmp_path / "e"), "--no-progress"]) == 2
