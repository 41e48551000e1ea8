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


def start_server(binary: Path):
    tmp = tempfile.mkdtemp(prefix="mlir-rl-perf-")
    port_file = Path(tmp) / "port"
    proc = subprocess.Popen([str(binary), "--port=0", f"--port_file={port_file}", "--log_level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"127.0.0.1:{port_file.read_text().strip()}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--server-bin", default=os.environ.get("MLIR_RL_SERVER_BIN",
                                                               str(ROOT / "build" / "bin" / "mlir-rl-server")))
    args = parser.parse_args()
    proc, address = start_server(Path(args.server_bin))
    try:
        env = mlir_rl.make("benchmark://nn-ops/matmul_64x64x64_f32", server=address)
        tiling = env.type_names.index("TILING")
        size32 = env.tile_sizes.index(32)
        action = np.zeros(len(env.action_space.nvec), dtype=np.int64)
        action[0] = tiling
        action[1:4] = size32
        resets, steps = [], []
        for _ in range(args.iterations):
            t = time.perf_counter()
            env.reset(seed=0)
            resets.append(time.perf_counter() - t)
            t = time.perf_counter()
            env.step(action)
            steps.append(time.perf_counter() - t)
        env.close()
        for name, values in (("Python reset", resets), ("Python step TILING (non-evaluating)", steps)):
            v = np.array(values) * 1e6
            print(f"{name:48s} n={len(v):<5d} p50 {np.percentile(v, 50):9.1f} us   p99 {np.percentile(v, 99):9.1f} us")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
