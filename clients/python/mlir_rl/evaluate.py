"""``mlir-rl-evaluate`` (console script ``mlir_rl.evaluate:main``): speedups of a trained policy.

    mlir-rl-evaluate runs/ppo/policy.pt --out runs/ppo/eval                 # eval split: models and lqcd
    mlir-rl-evaluate runs/ppo/policy.pt --benchmarks models-full            # whole networks (slow)
    mlir-rl-evaluate runs/ppo/policy.pt --baseline search=search.jsonl      # add a search column

For every benchmark, one episode of the policy with greedy decoding (the most likely legal value of each head) and
``--random-episodes`` episodes (1 by default, the same number) of the masked random policy, seeded; each schedule is
evaluated by the server against the untransformed benchmark (speedup 1). A schedule that fails (wrong result, crash,
time-out) counts as speedup 1 in the geomeans (a user would keep the untransformed code) and is listed.

Written to ``--out``: ``evaluation.json`` (every episode, per benchmark and per family), ``evaluation.md`` (Markdown
tables: geomean speedup per op family, then per benchmark), ``evaluation.png`` (geomean per family: policy vs
random, log scale). The family of a benchmark is its dataset for lqcd, else its first op family (``ListBenchmarks``:
conv, matmul, pooling, generic, elementwise).

Search baselines (a hook for ``mlir-rl-cli search``): ``--baseline NAME=FILE`` adds a column NAME from FILE, a JSON
list of records (or ``{"results": [...]}``) or JSON lines, each with ``benchmark`` (URI or name) and ``speedup``
(a record with ``"correct": false`` counts as 1); records of benchmarks not evaluated here are ignored, and a benchmark
without a record is left out of that column's geomeans (and shown as "-").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Dict, List, Optional, Sequence, Tuple

DEFAULT_BENCHMARKS = ["models", "lqcd"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlir-rl-evaluate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Speedup of a trained policy (greedy) against the untransformed benchmarks and the masked random "
                    "policy, per benchmark and per op family.")
    p.add_argument("policy", help="policy.pt or checkpoint.pt written by mlir-rl-train")
    p.add_argument("--benchmarks", nargs="+", default=DEFAULT_BENCHMARKS, metavar="SPEC",
                   help="URIs, datasets or splits (the eval split: models, lqcd, models-full)")
    p.add_argument("--server", default=None,
                   help="host:port of a running server; default $MLIR_RL_SERVER, else a local server for this run")
    p.add_argument("--server-args", default=None, help="flags of the local server, e.g. '--workers=1'")
    p.add_argument("--out", default="runs/mlir-rl-evaluate")
    p.add_argument("--random-episodes", type=int, default=1, help="masked random episodes per benchmark (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random policy")
    p.add_argument("--parallel", type=int, default=4, help="episodes in flight (sessions)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=FILE",
                   help="a column of search results (JSON / JSON lines records with benchmark and speedup)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per RPC (an episode's last step evaluates)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--torch-threads", type=int, default=1)
    return p


def family_of(info: Dict[str, Any]) -> str:
    if info.get("dataset") == "lqcd":
        return "lqcd"
    fams = info.get("op_families") or ["other"]
    return fams[0]


def geomean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def load_baseline(spec: str) -> Tuple[str, Dict[str, float]]:
    """``NAME=FILE`` (or ``FILE``: the name from the records' ``method`` field, else the file's stem) → (name,
    benchmark → speedup); both URIs and bare names of benchmarks are keys."""
    name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
        if isinstance(data, dict):  # {"results": [...]}, or a single record (JSON lines of one line)
            records = data.get("results", data.get("records", [data] if "benchmark" in data else []))
        else:
            records = data
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    out: Dict[str, float] = {}
    for r in records:
        uri = r.get("benchmark") or r.get("uri")
        if uri is None or r.get("speedup") is None:
            continue
        speedup = float(r["speedup"]) if r.get("correct", True) else 1.0
        out[uri] = speedup
        out[uri.split("://", 1)[-1]] = speedup
        if not name:
            name = r.get("method") or r.get("policy") or ""
    return name or os.path.splitext(os.path.basename(path))[0], out


def run_episode(make_env: Any, uri: str, choose: Any, seed: int) -> Dict[str, Any]:
    """One episode on ``uri``: ``choose(obs, env)`` gives each action. Returns its record."""
    t0 = time.monotonic()
    env = make_env()
    try:
        obs, info = env.reset(seed=0, options={"benchmark": uri})
        ret, steps, terminated, truncated = 0.0, 0, bool(info.get("terminated")), False
        reward = 0.0
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(choose(obs, env))
            ret += reward
            steps += 1
        ev = env.last_evaluation or {}
        return {"benchmark": uri, "seed": seed, "return": ret, "final_reward": reward, "steps": steps,
                "correct": bool(ev.get("correct", False)), "speedup": float(ev["speedup"]) if ev.get("correct")
                else None, "failure": ev.get("failure", "" if ev else "not evaluated"),
                "reference_ns": ev.get("reference_ns"), "median_ns": ev.get("median_ns"),
                "actions": env.actions, "wall_s": time.monotonic() - t0}
    finally:
        env.close()


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None or x != x else f"{x:.2f}"


def write_markdown(path: str, families: List[str], table: Dict[str, Dict[str, Any]], columns: List[str],
                   per_benchmark: List[Dict[str, Any]], title: str) -> None:
    lines = [f"# {title}", "", "Geometric-mean speedup over the untransformed benchmark (reference = 1.00); a failed "
             "schedule counts as 1.00.", ""]
    lines.append("| family | benchmarks | " + " | ".join(columns) + " | reference |")
    lines.append("|---|---|" + "---|" * len(columns) + "---|")
    for fam in families + ["all"]:
        row = table[fam]
        lines.append(f"| {fam} | {row['n']} | " + " | ".join(_fmt(row[c]) for c in columns) + " | 1.00 |")
    lines += ["", "| benchmark | family | " + " | ".join(columns) + " | failures |",
              "|---|---|" + "---|" * len(columns) + "---|"]
    for b in per_benchmark:
        lines.append(f"| {b['name']} | {b['family']} | " + " | ".join(_fmt(b['columns'].get(c)) for c in columns)
                     + f" | {b['failures'] or ''} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, str(args.torch_threads))
    import numpy as np
    import torch

    import mlir_rl
    from mlir_rl import local_server
    from mlir_rl.benchmarks import is_family, resolve_benchmarks

    from .agent import batch_of_one, encode, load_policy, policy_mismatch, random_actions
    from .agent.plots import family_speedups, have_matplotlib

    torch.set_num_threads(args.torch_threads)
    if args.server_args:
        os.environ[local_server.ENV_SERVER_ARGS] = " ".join(
            filter(None, [os.environ.get(local_server.ENV_SERVER_ARGS, ""), args.server_args]))
    baselines = [load_baseline(s) for s in args.baseline]
    policy = load_policy(args.policy)
    os.makedirs(args.out, exist_ok=True)
    lock = threading.Lock()

    with local_server.address(args.server) as address:
        catalog = {b["uri"]: b for b in mlir_rl.list_benchmarks(server=address)}
        families_list = mlir_rl.generator_families(server=address)
        sources = resolve_benchmarks(args.benchmarks, lambda: (
            [(u, b["dataset"], b["split"]) for u, b in catalog.items()], families_list))
        if any(is_family(s) or s.startswith("generator://") for s in sources):
            print("mlir-rl-evaluate: generator families have no fixed benchmarks; name URIs or datasets",
                  file=sys.stderr)
            return 2
        uris = list(dict.fromkeys(sources))
        version = mlir_rl.version(server=address)

        def make_env() -> Any:
            return mlir_rl.make(server=address, timeout=args.timeout)

        probe = make_env()
        try:
            problem = policy_mismatch(policy, probe.observation_space)
        finally:
            probe.close()
        if problem:
            print(f"mlir-rl-evaluate: {args.policy}: {problem}", file=sys.stderr)
            return 2

        def greedy(obs: Dict[str, np.ndarray], env: Any) -> np.ndarray:
            enc = encode(batch_of_one(obs), policy.config["num_types"])
            with lock:
                return policy.act(enc, greedy=True)[0][0]

        jobs: List[Tuple[str, str, int]] = [(u, "policy", 0) for u in uris]
        jobs += [(u, "random", k) for k in range(args.random_episodes) for u in uris]

        def run(job: Tuple[str, str, int]) -> Dict[str, Any]:
            uri, kind, k = job
            if kind == "policy":
                rec = run_episode(make_env, uri, greedy, 0)
            else:
                rng = np.random.default_rng([args.seed, k, uris.index(uri)])
                rec = run_episode(make_env, uri, lambda obs, env: random_actions(encode(batch_of_one(obs)), rng)[0],
                                  k)
            rec["policy"] = kind
            return rec

        records: List[Dict[str, Any]] = []
        bar = None
        if not args.no_progress:
            try:
                from tqdm import tqdm
                bar = tqdm(total=len(jobs), unit="episode", dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                bar = None
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            futures = [pool.submit(run, j) for j in jobs]
            for fut in as_completed(futures):
                rec = fut.result()
                records.append(rec)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{rec['policy']} {rec['benchmark'].split('/')[-1]}: "
                                        f"{_fmt(rec['speedup'])}x", refresh=False)
                else:
                    print(f"{rec['policy']:6s} {rec['benchmark']}: speedup {_fmt(rec['speedup'])}"
                          f"{' (' + rec['failure'][:60] + ')' if rec['failure'] else ''}", file=sys.stderr, flush=True)
        if bar is not None:
            bar.close()
        wall = time.monotonic() - t0

    columns = ["policy"] + (["random"] if args.random_episodes > 0 else []) + [name for name, _ in baselines]
    per_benchmark: List[Dict[str, Any]] = []
    for uri in uris:
        info = catalog.get(uri, {"dataset": "", "op_families": []})
        mine = [r for r in records if r["benchmark"] == uri]
        cols: Dict[str, Optional[float]] = {}
        for kind in ("policy", "random"):
            eps = [r for r in mine if r["policy"] == kind]
            if eps:
                cols[kind] = geomean([r["speedup"] if r["speedup"] is not None else 1.0 for r in eps])
        name = uri.split("://", 1)[-1]
        for bname, values in baselines:
            cols[bname] = values.get(uri, values.get(name))
        per_benchmark.append({"uri": uri, "name": name, "dataset": info.get("dataset"), "family": family_of(info),
                              "columns": cols, "failures": sum(1 for r in mine if r["speedup"] is None),
                              "episodes": mine})
    families = sorted({b["family"] for b in per_benchmark})
    table: Dict[str, Dict[str, Any]] = {}
    for fam in families + ["all"]:
        group = [b for b in per_benchmark if fam == "all" or b["family"] == fam]
        row: Dict[str, Any] = {"n": len(group)}
        for c in columns:
            row[c] = geomean([b["columns"][c] for b in group if b["columns"].get(c) is not None])
        for kind in ("policy", "random"):
            finals = [r["final_reward"] for b in group for r in b["episodes"] if r["policy"] == kind]
            row[f"{kind}_mean_final_reward"] = float(np.mean(finals)) if finals else None
        table[fam] = row
    shown = " ".join(args.benchmarks) if len(args.benchmarks) <= 4 else f"{len(uris)} benchmarks"
    title = f"mlir-rl-evaluate: {os.path.basename(args.policy)} on {shown}"
    write_markdown(os.path.join(args.out, "evaluation.md"), families, table, columns, per_benchmark, title)
    if have_matplotlib():
        family_speedups(families + ["all"], {c: [table[f][c] for f in families + ["all"]] for c in columns},
                        os.path.join(args.out, "evaluation.png"), title=title)
    with open(os.path.join(args.out, "evaluation.json"), "w") as f:
        json.dump({"policy": args.policy, "benchmarks": args.benchmarks, "columns": columns, "families": table,
                   "per_benchmark": per_benchmark, "wall_s": wall, "server": version,
                   "argv": sys.argv[1:] if argv is None else list(argv)}, f, indent=2)
    with open(os.path.join(args.out, "evaluation.md")) as f:
        print("".join(f.readlines()[:len(families) + 8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
