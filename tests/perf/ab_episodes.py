"""A/B of two server builds on random masked episodes: every observation tensor (masks included), every step outcome
and episode flag must be byte-identical; evaluations are compared on what does not depend on timing (correct,
failure kind). For refactorings that must not change behaviour (e.g. issue 15).

    /usr/bin/python3 tests/perf/ab_episodes.py --a OLD/mlir-rl-server --b build/bin/mlir-rl-server --episodes 200

Actions are drawn from A's masks (with seeded randomness); B must agree on everything. Options vary per episode
(interchange mode, max_loops, masked actions penalized now and then)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
from mlir_rl.v1 import env_pb2 as pb  # noqa: E402
from mlir_rl.v1 import env_pb2_grpc as rpc  # noqa: E402

BENCHMARKS = [
    "benchmark://nn-ops/matmul_64x64x64_f32", "benchmark://nn-ops/matmul_relu_128x128x128_f32",
    "benchmark://nn-ops/softmax_1x1000_f32", "benchmark://nn-ops/layernorm_128x768_f32",
    "generator://conv2d_nhwc/3", "generator://conv2d_nchw/4", "generator://pooling_max/5", "generator://relu/6",
    "generator://matmul/7", "generator://batch_matmul/8", "generator://depthwise_nhwc/9", "generator://matmul_relu/10", "generator://add/11",
    "benchmark://models/mobilenetv2_block14_depthwise", "benchmark://lqcd/baryon_2pt_matrix",
]


def start(binary: str, workdir: Path, name: str):
    port_file = workdir / f"{name}.port"
    proc = subprocess.Popen([binary, "--port=0", f"--port_file={port_file}", "--timing_budget_s=0.05",
                             "--log_interval_s=0", "--workers=1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(600):
        if port_file.exists() and port_file.read_text().strip():
            return proc, rpc.MlirRlEnvStub(grpc.insecure_channel(f"127.0.0.1:{port_file.read_text().strip()}"))
        time.sleep(0.05)
    raise RuntimeError(f"{binary} did not start")


def tensors(observation):
    return {t.name: (t.dtype, tuple(t.shape), t.data) for t in observation.tensors}


def outcome(o):
    e = o.evaluation
    return (tuple(o.action.values), o.description, o.applied, o.failure_reason,
            o.reward if not o.HasField("evaluation") else None,
            (e.correct, e.failure_kind, e.failure != "") if o.HasField("evaluation") else None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as d:
        pa, a = start(args.a, Path(d), "a")
        pb_, b = start(args.b, Path(d), "b")
        steps = mismatches = 0
        try:
            for episode in range(args.episodes):
                options = pb.SessionOptions(
                    interchange_mode=pb.INTERCHANGE_MODE_SWAPS if rng.random() < 0.3 else
                    pb.INTERCHANGE_MODE_LEVEL_POINTERS,
                    max_loops=int(rng.choice([12, 8])),
                    masked_actions=pb.MASKED_ACTIONS_PENALIZE)
                request = pb.ResetRequest(benchmark=BENCHMARKS[episode % len(BENCHMARKS)], seed=episode % 3,
                                          options=options)
                ra, rb = a.Reset(request, timeout=300), b.Reset(request, timeout=300)
                where = f"episode {episode} ({request.benchmark})"
                if tensors(ra.observation) != tensors(rb.observation) or ra.terminated != rb.terminated:
                    print(f"{where}: reset differs")
                    mismatches += 1
                    continue
                obs, done = ra.observation, ra.terminated or ra.truncated
                sa, sb = ra.session_id, rb.session_id
                while not done:
                    t = tensors(obs)
                    masks = {n: np.frombuffer(v[2], dtype=np.uint8).reshape(v[1]) for n, v in t.items()
                             if n.startswith("mask_")}
                    masked = rng.random() < 0.05  # now and then an action the mask refuses (penalized)
                    pick = (lambda m: int(rng.integers(len(m)))) if masked else \
                        (lambda m: int(rng.choice(np.flatnonzero(m))) if m.any() else 0)
                    values = [pick(masks["mask_type"])] + [pick(row) for row in masks["mask_tiles"]] + \
                        [pick(masks["mask_interchange"])]
                    step = pb.StepRequest(actions=[pb.Action(values=values)])
                    step.session_id = sa
                    ya = a.Step(step, timeout=600)
                    step.session_id = sb
                    yb = b.Step(step, timeout=600)
                    steps += 1
                    same = (tensors(ya.observation) == tensors(yb.observation) and
                            [outcome(o) for o in ya.outcomes] == [outcome(o) for o in yb.outcomes] and
                            (ya.terminated, ya.truncated) == (yb.terminated, yb.truncated) and
                            ya.info == yb.info)
                    if not same:
                        mismatches += 1
                        print(f"{where} step {steps}: differs\n  A: {[outcome(o) for o in ya.outcomes]}\n"
                              f"  B: {[outcome(o) for o in yb.outcomes]}")
                        for name in tensors(ya.observation):
                            if tensors(ya.observation)[name] != tensors(yb.observation).get(name):
                                print(f"  tensor {name} differs")
                        break
                    obs, done = ya.observation, ya.terminated or ya.truncated
        finally:
            pa.terminate()
            pb_.terminate()
    print(f"{args.episodes} episodes, {steps} steps: {mismatches} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
