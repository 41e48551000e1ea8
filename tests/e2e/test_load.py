"""Load and faults (issue 13), bounded in time: 64 client processes taking 1,000 mixed calls each with workers
killed and stopped at random meanwhile; memory that stays flat once the sessions close; SIGTERM during load (the
server drains and exits 0) and SIGKILL (no worker outlives it). Scale with MLIR_RL_LOAD_CLIENTS / _STEPS."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest

from conftest import CLIENT_DIR, start_server
from mlir_rl.v1 import env_pb2 as pb
from mlir_rl.v1 import env_pb2_grpc as rpc
from test_server import _children

CLIENTS = int(os.environ.get("MLIR_RL_LOAD_CLIENTS", "64"))
STEPS = int(os.environ.get("MLIR_RL_LOAD_STEPS", "1000"))

# One client process: `steps` mixed calls (steps with masked random actions, observations, exports, forks) on small
# benchmarks of 1-4 ops. Clients of one group draw the same actions, so most evaluations are served by the server's cache (as
# when many trainers share a server) and the load is the calls, not compile time. Prints one JSON line.
CLIENT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {client_dir!r})
    import numpy as np
    import mlir_rl
    client, steps, address = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    benchmarks = ["benchmark://nn-ops/softmax_1x1000_f32", "benchmark://nn-ops/matmul_relu_128x128x128_f32",
                  "benchmark://nn-ops/layernorm_128x768_f32", "benchmark://nn-ops/matmul_64x64x64_f32"]
    rng = np.random.default_rng(client % 4)
    calls = episodes = evaluations = 0
    errors = []
    start = time.monotonic()
    with mlir_rl.make(benchmarks, server=address, benchmark_order="cycle", masked_actions="reject",
                      timeout=300) as env:
        env.reset(seed=0)
        while calls < steps:
            calls += 1
            r = rng.random()
            try:
                if r < 0.05:
                    env.observe()
                elif r < 0.07:
                    env.export_schedule()
                elif r < 0.08:
                    with env.fork() as copy:
                        copy.observe()
                else:
                    masks = env.head_masks()
                    action = [int(rng.choice(np.flatnonzero(m))) if m.any() else 0 for m in masks]
                    _, _, terminated, truncated, info = env.step(action)
                    evaluations += "evaluation" in info
                    if terminated or truncated:
                        episodes += 1
                        env.reset()
            except mlir_rl.MlirRlError as e:
                errors.append(f"{{type(e).__name__}}: {{e}}")
                env.reset()
    print(json.dumps({{"calls": calls, "episodes": episodes, "evaluations": evaluations, "errors": errors,
                      "seconds": time.monotonic() - start}}))
""")


def run_clients(address: str, clients: int, steps: int, timeout: float):
    script = CLIENT.format(client_dir=str(CLIENT_DIR))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), str(steps), address], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(clients)]
    results, failures = [], []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            failures.append("timed out")
            continue
        if p.returncode != 0 or not out.strip():
            failures.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
            continue
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results, failures


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def metrics(address: str):
    with grpc.insecure_channel(address) as channel:
        return rpc.MlirRlEnvStub(channel).GetMetrics(pb.GetMetricsRequest(), timeout=30).values


def test_64_clients_with_workers_killed_and_stopped_meanwhile():
    # A short timing budget: this measures the server's handling of load and faults, not kernels.
    proc = start_server(extra_args=["--log_interval_s=0", "--timing_budget_s=0.2"])
    stop = threading.Event()
    faults = {"killed": 0, "stopped": 0}

    def inject():
        rng = random.Random(0)
        while not stop.wait(rng.uniform(1.0, 3.0)):
            workers = _children(proc.proc.pid)
            if not workers:
                continue
            victim = rng.choice(workers)
            try:
                if rng.random() < 0.5:
                    os.kill(victim, signal.SIGKILL)
                    faults["killed"] += 1
                else:  # frozen for a while, then let go (as a debugger, or a host under memory pressure, would)
                    os.kill(victim, signal.SIGSTOP)
                    time.sleep(0.5)
                    os.kill(victim, signal.SIGCONT)
                    faults["stopped"] += 1
            except ProcessLookupError:
                pass

    try:
        injector = threading.Thread(target=inject, daemon=True)
        start = time.monotonic()
        injector.start()
        results, failures = run_clients(proc.address, CLIENTS, STEPS, timeout=900)
        stop.set()
        injector.join()
        elapsed = time.monotonic() - start
        calls = sum(r["calls"] for r in results)
        errors = [e for r in results for e in r["errors"]]
        print(f"\nload: {len(results)} clients x {STEPS} calls = {calls} calls in {elapsed:.1f} s "
              f"({calls / elapsed:.0f}/s), {sum(r['episodes'] for r in results)} episodes, "
              f"{sum(r['evaluations'] for r in results)} evaluations; faults: {faults}; errors: {len(errors)}")
        assert not failures, failures[:3]
        assert not errors, errors[:5]
        assert calls == CLIENTS * STEPS
        assert faults["killed"] + faults["stopped"] >= 1
        m = metrics(proc.address)
        assert m["mlir_rl_sessions"] == 0  # every client closed its sessions
        # Nothing the faults caused was cached as a candidate's failure.
        assert m['mlir_rl_evaluation_failures_total{kind="crashed"}'] == 0
    finally:
        stop.set()
        proc.stop()


def test_memory_stays_flat_once_sessions_close():
    proc = start_server(extra_args=["--log_interval_s=0"])
    try:
        clients, steps = min(CLIENTS, 16), min(STEPS, 300)
        for _ in range(2):  # warm-up: caches, reference times, the allocator's arenas
            results, failures = run_clients(proc.address, clients, steps, timeout=600)
            assert not failures and all(not r["errors"] for r in results)
        before = rss(proc.proc.pid)
        for _ in range(2):
            results, failures = run_clients(proc.address, clients, steps, timeout=600)
            assert not failures and all(not r["errors"] for r in results)
        after = rss(proc.proc.pid)
        m = metrics(proc.address)
        print(f"\nmemory: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB over {2 * clients * steps} more calls; "
              f"{int(m['mlir_rl_transition_cache_entries'])} transitions, "
              f"{int(m['mlir_rl_evaluation_cache_entries'])} evaluations cached")
        assert m["mlir_rl_sessions"] == 0
        assert after - before < 24 * 2**20, (before, after)
    finally:
        proc.stop()


def test_sigterm_during_load_drains_and_sigkill_leaves_no_worker():
    proc = start_server(extra_args=["--drain_grace_s=5", "--log_interval_s=0"])
    script = CLIENT.format(client_dir=str(CLIENT_DIR))
    clients = [subprocess.Popen([sys.executable, "-c", script, str(i), "100000", proc.address],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    try:
        time.sleep(8)  # under load
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(timeout=30)
        assert proc.proc.returncode == 0 and time.monotonic() - start < 12
        # The clients saw the server go away (UNAVAILABLE), never a malformed answer.
        for c in clients:
            c.wait(timeout=60)
            assert "InternalError" not in c.stderr.read()
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
        proc.stop()
    # SIGKILL: the workers die with the server (PR_SET_PDEATHSIG).
    proc = start_server()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = rpc.MlirRlEnvStub(channel)
            sid = stub.Reset(pb.ResetRequest(benchmark="benchmark://nn-ops/matmul_64x64x64_f32"), timeout=60)
            stub.Step(pb.StepRequest(session_id=sid.session_id, actions=[pb.Action(values=[0] * 14)]), timeout=120)
        workers = _children(proc.proc.pid)
        assert workers
        proc.proc.kill()
        proc.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{w}/status") and
                                                  "State:\tZ" not in open(f"/proc/{w}/status").read()
                                                  for w in workers):
            time.sleep(0.1)
        alive = [w for w in workers if os.path.exists(f"/proc/{w}/status") and
                 "State:\tZ" not in open(f"/proc/{w}/status").read()]
        assert not alive, alive
    finally:
        proc.stop()
