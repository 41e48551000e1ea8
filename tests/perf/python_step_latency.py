"""Step latency from the Python client (figures only): starts the real server on a free loopback port and times
Reset and non-evaluating Steps through mlir_rl's Gymnasium-style env.

Run: PYTHONPATH=clients/python /usr/bin/python3 tests/perf/python_step_latency.py [--iterations N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))

import numpy as np  # noqa: E402

import mlir_rl  # noqa: E402


def start_server(binary: Path, extra_args=()):
    tmp = tempfile.mkdtemp(prefix="mlir-rl-perf-")
    port_file = Path(tmp) / "port"
    proc = subprocess.Popen([str(binary), "--port=0", f"--port_file={port_file}", "--log_level=warn", *extra_args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"127.0.0.1:{port_file.read_text().strip()}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def measure(binary: Path, iterations: int, extra_args, label: str) -> None:
    proc, address = start_server(binary, extra_args)
    try:
        env = mlir_rl.make("benchmark://nn-ops/matmul_64x64x64_f32", server=address)
        tiling = np.zeros(len(env.action_space.nvec), dtype=np.int64)
        tiling[0] = env.type_names.index("TILING")
        tiling[1:4] = env.tile_sizes.index(32)
        pointer = np.zeros(len(env.action_space.nvec), dtype=np.int64)
        pointer[0] = env.type_names.index("INTERCHANGE")
        pointer[-1] = 2  # the first level pointer of an interchange: no transformation yet
        resets, steps, pointers = [], [], []
        for _ in range(iterations):
            t = time.perf_counter()
            env.reset(seed=0)
            resets.append(time.perf_counter() - t)
            t = time.perf_counter()
            env.step(tiling)
            steps.append(time.perf_counter() - t)
            t = time.perf_counter()
            env.step(pointer)
            pointers.append(time.perf_counter() - t)
        env.close()
        print(f"\n== Python client (mlir_rl), matmul 64^3, {label}")
        for name, values in (("Python reset", resets), ("Python step TILING (non-evaluating)", steps),
                             ("Python step INTERCHANGE level pointer", pointers)):
            v = np.array(values) * 1e6
            print(f"{name:48s} n={len(v):<5d} p50 {np.percentile(v, 50):9.1f} us   p99 {np.percentile(v, 99):9.1f} us")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure_throughput(binary: Path, rounds: int, extra_args, label: str, sizes=(1, 4, 16)) -> None:
    """Non-evaluating steps per second: sub-environments stepped one at a time (one Step call each) against the
    vector environment (one StepMany call for all). Each round resets every session, then TILING and an INTERCHANGE
    level pointer on each."""
    proc, address = start_server(binary, extra_args)
    try:
        print(f"\n== Python client, non-evaluating steps per second, matmul 64^3, {label}")
        for n in sizes:
            with mlir_rl.make_vec(n, "benchmark://nn-ops/matmul_64x64x64_f32", server=address) as envs:
                e0 = envs.envs[0]
                tiling = np.zeros(len(e0.nvec), dtype=np.int64)
                tiling[0] = e0.type_names.index("TILING")
                tiling[1:4] = e0.tile_sizes.index(32)
                pointer = np.zeros(len(e0.nvec), dtype=np.int64)
                pointer[0] = e0.type_names.index("INTERCHANGE")
                pointer[-1] = 2
                one_at_a_time = vector = 0.0
                for r in range(rounds):
                    envs.reset(seed=r)
                    t = time.perf_counter()
                    envs.step(np.stack([tiling] * n))
                    envs.step(np.stack([pointer] * n))
                    vector += time.perf_counter() - t
                    for e in envs.envs:
                        e.reset(seed=r)
                    t = time.perf_counter()
                    for a in (tiling, pointer):
                        for e in envs.envs:
                            e.step(a)
                    one_at_a_time += time.perf_counter() - t
                steps = 2 * n * rounds
                print(f"{n:3d} sessions: one Step call each {steps / one_at_a_time:8.0f} steps/s   vector env (StepMany) "
                      f"{steps / vector:8.0f} steps/s   x{one_at_a_time / vector:.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--server-bin", default=os.environ.get("MLIR_RL_SERVER_BIN",
                                                               str(ROOT / "build" / "bin" / "mlir-rl-server")))
    args = parser.parse_args()
    binary = Path(args.server_bin)
    measure(binary, args.iterations, ["--transition_cache_mb=0"], "new states (transition cache off)")
    measure(binary, args.iterations, [], "states reached before (transition cache hits)")
    measure_throughput(binary, max(10, args.iterations // 10), ["--transition_cache_mb=0"],
                       "new states (transition cache off)")
    # The agent and the server's RPC threads on one core: no cross-core wake-up per call.
    if hasattr(os, "sched_setaffinity") and 0 in os.sched_getaffinity(0):
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})
        try:
            measure(binary, args.iterations, ["--transition_cache_mb=0", "--rpc_cpus=0"],
                    "new states, agent and server RPC threads on CPU 0")
            measure(binary, args.iterations, ["--rpc_cpus=0"], "states reached before, agent and server RPC threads on CPU 0")
        finally:
            os.sched_setaffinity(0, mask)
    return 0


if __name__ == "__main__":
    sys.exit(main())
