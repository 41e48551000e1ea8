#!/usr/bin/python3
"""Evaluation throughput and reward error, with and without racing (issue 17.1). Prints figures; asserts nothing.

    /usr/bin/python3 tests/perf/throughput.py [--minutes 4] [--envs 8] [--datasets nn-ops] [--careful 40]
    /usr/bin/python3 tests/perf/throughput.py --policy ppo --datasets eval --settings "default:" --careful 0

For each setting (``--race_factor=0``: every candidate timed to the 2 % spread target, as before; the server's
default racing), a fresh server (no evaluation cache on disk, 2 workers pinned one per core) serves ``--envs`` masked
random agents (FINAL reward, one thread each) for ``--minutes``. Figures: fresh evaluations per minute and per
core-minute, episodes per minute, the share of raced candidates, repetitions per evaluation, the share of the
agents' time spent waiting for evaluations.

``--policy ppo``: instead of random agents, ``mlir-rl-train`` (the PPO agent, ``--envs`` sessions stepped together,
its default settings, policy updates on the same 2 cores) trains against the fresh server for ``--minutes``; its
``summary.json`` gives the figures (no reward error: its candidates are measured the same way).

Reward error: ``--careful`` candidates measured in the runs (half from each) are measured again, one at a time, by
a careful server (``--race_factor=0 --timing_target_spread=0.005 --timing_max_repetitions=400
--timing_budget_s=6``); the error of a measurement is |log10(t / t_careful)| (the FINAL reward's error, in the
reward's units), reported per setting and split into raced and fully timed candidates.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

import numpy as np  # noqa: E402

import mlir_rl  # noqa: E402
from mlir_rl.v1 import env_pb2 as pb  # noqa: E402


def start_server(binary: str, args: List[str]) -> tuple:
    work = tempfile.mkdtemp(prefix="mlir-rl-throughput-")
    port_file = os.path.join(work, "port")
    log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen([binary, "--port=0", f"--port_file={port_file}", "--cache_dir=", *args],
                            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        if os.path.exists(port_file) and open(port_file).read().strip():
            return proc, f"127.0.0.1:{open(port_file).read().strip()}"
        if proc.poll() is not None:
            raise SystemExit(f"server exited: see {log.name}")
        time.sleep(0.05)
    raise SystemExit("server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def agent(address: str, benchmarks: List[str], seed: int, deadline: float, out: List[Dict[str, Any]],
          counts: Dict[str, Any], lock: threading.Lock) -> None:
    rng = np.random.default_rng(seed)
    waited = 0.0
    started = time.monotonic()
    with mlir_rl.make(benchmarks, server=address, masked_actions="reject", info_timings=True, timeout=600,
                      benchmark_order="random") as env:
        env.reset(seed=seed)
        episodes = 0
        while time.monotonic() < deadline:
            masks = env.head_masks()
            action = [int(rng.choice(np.flatnonzero(m))) if m.any() else 0 for m in masks]
            t0 = time.monotonic()
            _, _, terminated, truncated, info = env.step(action)
            ev = info.get("evaluation")
            if ev is not None:
                waited += time.monotonic() - t0
            if ev is not None and not ev.get("cached") and ev.get("failure"):
                with lock:
                    value = ev.get("failure_kind")
                    kind = (pb.FailureKind.Name(value).removeprefix("FAILURE_KIND_").lower()
                            if isinstance(value, int) and value in pb.FailureKind.values() else "failure")
                    counts["failures"][kind] = counts["failures"].get(kind, 0) + 1
            elif ev is not None and not ev.get("cached") and ev.get("median_ns", 0) > 0:
                with lock:
                    out.append({"benchmark": env.benchmark, "actions": [list(map(int, a)) for a in env.actions],
                                "median_ns": ev["median_ns"], "min_ns": ev.get("min_ns", 0.0),
                                "reference_ns": ev["reference_ns"],
                                "repetitions": ev.get("repetitions", 0), "raced": bool(ev.get("raced", False)),
                                "compile_ms": ev.get("lower_ms", 0.0) + ev.get("jit_ms", 0.0)})
            if terminated or truncated:
                episodes += 1
                env.reset()
        with lock:
            counts["episodes"] += episodes
            counts["waited_s"] += waited
            counts["agent_s"] += time.monotonic() - started


def run_setting(binary: str, name: str, server_args: List[str], args: argparse.Namespace,
                benchmarks: List[str]) -> Dict[str, Any]:
    proc, address = start_server(binary, server_args)
    if args.policy == "ppo":
        try:
            return ppo_setting(address, name, server_args, args, benchmarks)
        finally:
            stop(proc)
    try:
        records: List[Dict[str, Any]] = []
        counts: Dict[str, Any] = {"episodes": 0, "waited_s": 0.0, "agent_s": 0.0, "failures": {}}
        lock = threading.Lock()
        start = time.monotonic()
        deadline = start + args.minutes * 60
        threads = [threading.Thread(target=agent, args=(address, benchmarks, args.seed + i, deadline, records, counts,
                                                        lock)) for i in range(args.envs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        minutes = (time.monotonic() - start) / 60
    finally:
        stop(proc)
    cores = len(os.sched_getaffinity(0))
    n = len(records)
    raced = sum(r["raced"] for r in records)
    result = {"name": name, "args": server_args, "minutes": minutes, "evaluations": n,
              "evaluations_per_min": n / minutes, "evaluations_per_core_min": n / minutes / cores,
              "episodes_per_min": counts["episodes"] / minutes, "raced_share": raced / n if n else 0.0,
              "median_repetitions": statistics.median([r["repetitions"] for r in records]) if records else 0,
              "records": records}
    # Where a worker's time went (an estimate from each record: compile, then one checked run, one warm-up run and
    # the timed repetitions at the median time; failures are counted, not timed).
    compile_s = sum(r["compile_ms"] for r in records) / 1e3
    runs_s = sum(r["median_ns"] * (r["repetitions"] + 2) for r in records) / 1e9
    slow_s = sum(r["median_ns"] * (r["repetitions"] + 2) for r in records if r["median_ns"] > r["reference_ns"]) / 1e9
    failures = counts["failures"]
    waiting = counts["waited_s"] / max(1e-9, counts["agent_s"])
    result.update({"compile_s": compile_s, "runs_s": runs_s, "failures": failures, "waiting_share": waiting})
    print(f"{name:>12}: worker time estimate {compile_s + runs_s:.0f} s of {cores * minutes * 60:.0f} s: compile "
          f"{compile_s:.0f} s, runs {runs_s:.0f} s ({slow_s:.0f} s of them on candidates slower than the reference); "
          f"failures {failures}", flush=True)
    print(f"{name:>12}: {n} fresh evaluations in {minutes:.1f} min = {result['evaluations_per_min']:.1f}/min "
          f"({result['evaluations_per_core_min']:.1f} per core-minute, {cores} cores), "
          f"{result['episodes_per_min']:.1f} episodes/min, raced {100 * result['raced_share']:.1f} %, "
          f"median repetitions {result['median_repetitions']}, agents waiting for evaluations "
          f"{100 * waiting:.1f} % of their time", flush=True)
    return result


def ppo_setting(address: str, name: str, server_args: List[str], args: argparse.Namespace,
                benchmarks: List[str]) -> Dict[str, Any]:
    """mlir-rl-train against the server for --minutes; the figures from its summary.json."""
    import json
    out = tempfile.mkdtemp(prefix="mlir-rl-throughput-ppo-")
    cmd = [sys.executable, "-m", "mlir_rl.train", "--server", address, "--benchmarks", *benchmarks,
           "--minutes", str(args.minutes), "--num-envs", str(args.envs), "--seed", str(args.seed), "--no-progress",
           "--out", out]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "clients", "python"))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    run = summary["this_invocation"]
    cores = len(os.sched_getaffinity(0))
    minutes = run["wall_s"] / 60
    fresh = run["server_evaluations_total"] - run["server_cache_hits_total"]
    shares = summary["time_share"]
    waiting = shares.get("step_evaluating") or 0.0
    result = {"name": name, "args": server_args, "minutes": minutes, "evaluations": fresh,
              "evaluations_per_min": fresh / minutes, "evaluations_per_core_min": fresh / minutes / cores,
              "episodes_per_min": run["episodes_per_min"], "raced_share": float("nan"), "median_repetitions": 0,
              "records": [], "waiting_share": waiting, "ppo_updates": summary["updates"],
              "time_share": shares}
    print(f"{name:>12}: PPO, {summary['updates']} updates: {fresh:.0f} fresh evaluations in {minutes:.1f} min = "
          f"{result['evaluations_per_min']:.1f}/min ({result['evaluations_per_core_min']:.1f} per core-minute, "
          f"{cores} cores), {run['episodes_per_min']:.1f} episodes/min, cache hits "
          f"{100 * (run['server_cache_hit_rate'] or 0):.1f} % of the server's evaluations; agent time: "
          + ", ".join(f"{k} {100 * (v or 0):.1f} %" for k, v in shares.items()), flush=True)
    return result


def careful_times(binary: str, samples: List[Dict[str, Any]]) -> List[float]:
    proc, address = start_server(binary, ["--race_factor=0", "--timing_target_spread=0.005",
                                          "--timing_max_repetitions=400", "--timing_budget_s=6", "--workers=1"])
    times = []
    try:
        for s in samples:
            with mlir_rl.make(s["benchmark"], server=address, masked_actions="reject", info_timings=True,
                              timeout=600, evaluation_cache="bypass") as env:
                env.reset(options={"replay_actions": s["actions"][:-1]})
                _, _, _, _, info = env.step(s["actions"][-1])
                ev = info.get("evaluation") or {}
                times.append(float(ev.get("median_ns", 0.0)))
    finally:
        stop(proc)
    return times


def summarize(errors: List[float]) -> str:
    if not errors:
        return "n/a"
    errors = sorted(errors)
    p90 = errors[min(len(errors) - 1, int(0.9 * (len(errors) - 1) + 0.5))]
    return f"median {statistics.median(errors):.4f}, p90 {p90:.4f}, max {errors[-1]:.4f} (n={len(errors)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server-bin", default=os.environ.get("MLIR_RL_SERVER_BIN",
                                                          os.path.join(ROOT, "build", "bin", "mlir-rl-server")))
    p.add_argument("--minutes", type=float, default=4.0, help="per setting")
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--datasets", default="nn-ops",
                   help="what the agents draw benchmarks from: datasets or splits (train, eval), comma-separated")
    p.add_argument("--careful", type=int, default=40, help="candidates measured again carefully (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", choices=("random", "ppo"), default="random",
                   help="masked random agents (with the reward error), or the PPO agent (mlir-rl-train)")
    p.add_argument("--json", default="", help="write every setting's records (and careful times) here")
    p.add_argument("--settings", default="", help='"name[@server-binary]:--flag --flag;name:..." instead of racing off / on; the ratio is '
                   'printed for the last against the first')
    args = p.parse_args()
    benchmarks = args.datasets.split(",")
    settings = [("race off", ["--race_factor=0"]), ("race 1.25", ["--race_factor=1.25"])]
    if args.settings:
        settings = [(part.split(":", 1)[0], part.split(":", 1)[1].split()) for part in args.settings.split(";")]
    # "name@/path/to/mlir-rl-server" runs that setting on another build (e.g. the commit before a change).
    results = [run_setting(name.split("@", 1)[1] if "@" in name else args.server_bin, name.split("@", 1)[0], a, args,
                           benchmarks) for name, a in settings]
    off, on = results[0], results[-1]
    if len(results) > 1:
        print(f"evaluations per core-minute, {on['name']} / {off['name']}: {on['evaluations_per_core_min'] / off['evaluations_per_core_min']:.2f}x")
    if args.careful > 0 and args.policy == "random":
        rng = np.random.default_rng(args.seed)
        picked = []
        for r in results:
            k = min(len(r["records"]), args.careful // 2)
            idx = rng.choice(len(r["records"]), size=k, replace=False) if k else []
            picked += [(r["name"], r["records"][i]) for i in idx]
        careful = careful_times(args.server_bin, [s for _, s in picked])
        by: Dict[str, List[float]] = {}
        for (name, s), t in zip(picked, careful):
            s["careful_ns"] = t
            if t <= 0:
                continue
            err = abs(math.log10(s["median_ns"] / t))
            by.setdefault(name, []).append(err)
            by.setdefault(f"{name}, {'raced' if s['raced'] else 'timed to the spread target'}", []).append(err)
        print("reward error |log10(t / t_careful)| against a careful measurement (spread 0.5 %, <= 400 samples):")
        for name in sorted(by):
            print(f"  {name:>40}: {summarize(by[name])}")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
