"""``mlir-rl-train`` (console script ``mlir_rl.train:main``): trains a PPO agent (:mod:`mlir_rl.agent`).

    mlir-rl-train --benchmarks nn-ops generator://matmul --minutes 30 --out runs/ppo
    mlir-rl-train --out runs/ppo --resume --minutes 30     # goes on from runs/ppo/checkpoint.pt

Episodes run on ``--num-envs`` sessions of one server (``--server``, ``$MLIR_RL_SERVER``, else a local server for
the run), stepped with one ``StepMany`` call per step. Rewards: the server's FINAL mode (log10 speedup at the end of
an episode; -5 for a transformation that fails, -20 for a candidate that breaks). Written to ``--out``:

- ``config.json``: the command line, PPO settings, server version;
- ``updates.csv`` (and ``updates.jsonl``, the same rows): one row per update (episodes, mean return, geomean and
  best speedup, evaluations per second, cache hits, losses, the split of wall time);
- ``episodes.jsonl``: one line per episode (benchmark, return, final reward, speedup, correct, cached, steps);
- ``checkpoint.pt`` every ``--checkpoint-every`` updates and at the end (``--resume`` goes on from it; the logs are
  cut back to it), ``policy.pt`` beside it (the policy alone, float16: what ``mlir-rl-evaluate`` needs),
  ``learning_curve.png`` (with the masked random policy's mean return when
  ``--random-baseline N`` ran N random episodes first), ``summary.json`` (throughput and totals).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional

DEFAULT_BENCHMARKS = ["nn-ops", "generator://"]

UPDATE_FIELDS = [
    "update", "episodes", "transitions", "wall_s", "episodes_in_update", "mean_return", "mean_final_reward",
    "geomean_speedup", "best_speedup", "correct_fraction", "evaluations", "measured_evaluations",
    "cache_hit_rate", "episodes_per_min", "evaluations_per_s", "policy_loss", "value_loss", "entropy", "approx_kl",
    "clip_fraction", "explained_variance", "t_policy_s", "t_step_evaluating_s", "t_step_other_s", "t_reset_s",
    "t_update_s",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlir-rl-train", description="Train a PPO agent (MLIR RL's policy structure) on mlir-rl benchmarks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--benchmarks", nargs="+", default=None, metavar="SPEC",
                   help="what episodes start on: URIs, datasets (nn-ops), splits (train), generator families "
                        "(generator://matmul, generator:// for all); default: " + " ".join(DEFAULT_BENCHMARKS) +
                        " (the train split and every family), or with --resume the run's own")
    p.add_argument("--benchmark-order", choices=("random", "cycle"), default="random")
    p.add_argument("--server", default=None,
                   help="host:port of a running server; default $MLIR_RL_SERVER, else a local server for this run")
    p.add_argument("--server-args", default=None,
                   help="flags of the local server (added to $MLIR_RL_SERVER_ARGS), e.g. '--workers=1'")
    p.add_argument("--out", default="runs/mlir-rl-train", help="directory of logs, checkpoints and figures")
    p.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint.pt")
    stop = p.add_argument_group("when to stop (the first reached; counts include a resumed run's)")
    stop.add_argument("--updates", type=int, default=None, help="PPO updates (default 100 when nothing is given)")
    stop.add_argument("--episodes", type=int, default=None)
    stop.add_argument("--minutes", type=float, default=None, help="wall minutes of this invocation")
    p.add_argument("--checkpoint-every", type=int, default=10, metavar="N", help="updates between checkpoints")
    p.add_argument("--random-baseline", type=int, default=0, metavar="N",
                   help="first run N masked random episodes on the same benchmarks (the curve's baseline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=int, default=16, help="server sessions stepped together")
    p.add_argument("--steps-per-update", type=int, default=32, help="steps of each session per update")
    ppo = p.add_argument_group("PPO (defaults: MLIR RL's)")
    ppo.add_argument("--lr", type=float, default=1e-3)
    ppo.add_argument("--clip", type=float, default=0.2)
    ppo.add_argument("--gamma", type=float, default=1.0)
    ppo.add_argument("--gae-lambda", type=float, default=0.95)
    ppo.add_argument("--epochs", type=int, default=4)
    ppo.add_argument("--minibatches", type=int, default=4)
    ppo.add_argument("--ent-coef", type=float, default=0.01)
    ppo.add_argument("--vf-coef", type=float, default=0.5)
    ppo.add_argument("--max-grad-norm", type=float, default=0.5)
    ppo.add_argument("--hidden", type=int, default=512, help="width of the encoders and heads")
    env = p.add_argument_group("session options")
    env.add_argument("--reward-mode", choices=("final", "immediate"), default="final")
    env.add_argument("--timeout", type=float, default=600.0, help="seconds per RPC")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (a line per update instead)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="PyTorch / OpenBLAS threads (1 leaves the cores to the server's evaluation workers)")
    return p


def _setup_threads(n: int) -> None:
    # OpenBLAS reads its variable when loaded, i.e. when torch is first imported.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, str(n))


def server_metrics(envs: Any) -> Dict[str, float]:
    """The server's counters (GetMetrics), or {} when the server does not offer them."""
    from .errors import MlirRlError
    from .v1 import env_pb2

    try:
        reply = envs._conn.call("GetMetrics", env_pb2.GetMetricsRequest(), idempotent=True)
    except MlirRlError:
        return {}
    return dict(reply.values)


def cache_counters(metrics: Dict[str, float]) -> Dict[str, float]:
    return {"evaluations_total": metrics.get("mlir_rl_evaluations_total", float("nan")),
            "evaluation_cache_hits_total": metrics.get("mlir_rl_evaluation_cache_hits_total", float("nan"))}


def _read_jsonl(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _truncate_logs(out: str, updates: int, episodes: int) -> List[Dict[str, Any]]:
    """Cuts the logs back to a checkpoint (what a crashed run wrote after it is redone); returns the update rows."""
    rows = [r for r in _read_jsonl(os.path.join(out, "updates.jsonl")) if r["update"] <= updates]
    eps = [e for e in _read_jsonl(os.path.join(out, "episodes.jsonl")) if e["episode"] <= episodes]
    with open(os.path.join(out, "updates.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(out, "episodes.jsonl"), "w") as f:
        for e in eps:
            f.write(json.dumps(e) + "\n")
    with open(os.path.join(out, "updates.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=UPDATE_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return rows


def random_baseline(envs: Any, episodes: int, seed: int) -> List[Dict[str, Any]]:
    """``episodes`` episodes of the masked random policy on ``envs`` (seeded); their records."""
    import numpy as np

    from .agent import encode, random_actions

    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    ret = np.zeros(envs.num_envs)
    out: List[Dict[str, Any]] = []
    while len(out) < episodes:
        obs, rewards, terminated, truncated, _ = envs.step(random_actions(encode(obs), rng))
        ret += rewards
        done = terminated | truncated
        if done.any():
            for i in np.flatnonzero(done):
                ev = envs.envs[i].last_evaluation or {}
                out.append({"benchmark": envs.envs[i].benchmark, "return": float(ret[i]),
                            "final_reward": float(rewards[i]),
                            "speedup": float(ev["speedup"]) if ev.get("correct") else None})
                ret[i] = 0.0
            obs, _ = envs.reset(options={"reset_mask": done})
    return out[:episodes]


def _progress(enabled: bool, total: Optional[int], initial: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="update", dynamic_ncols=True, file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.updates is None and args.episodes is None and args.minutes is None:
        args.updates = 100
    _setup_threads(args.torch_threads)
    import numpy as np
    import torch

    import mlir_rl
    from mlir_rl import local_server
    from .agent import ActorCritic, PPOConfig, PPOTrainer, export_policy, geomean, load_checkpoint, save_checkpoint
    from .agent.plots import have_matplotlib, learning_curve

    torch.set_num_threads(args.torch_threads)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    if args.resume and not os.path.exists(ckpt_path):
        print(f"mlir-rl-train: --resume: no checkpoint at {ckpt_path}", file=sys.stderr)
        return 2
    if args.server_args:
        os.environ[local_server.ENV_SERVER_ARGS] = " ".join(
            filter(None, [os.environ.get(local_server.ENV_SERVER_ARGS, ""), args.server_args]))

    config = PPOConfig(lr=args.lr, clip=args.clip, gamma=args.gamma, gae_lambda=args.gae_lambda, epochs=args.epochs,
                       minibatches=args.minibatches, ent_coef=args.ent_coef, vf_coef=args.vf_coef,
                       max_grad_norm=args.max_grad_norm, num_steps=args.steps_per_update, hidden=args.hidden)
    state = load_checkpoint(ckpt_path) if args.resume else None
    if state is not None:
        config = PPOConfig(**state["ppo_config"])  # the run's own settings win over this command line's
        if args.benchmarks is None:
            args.benchmarks = state.get("extra", {}).get("benchmarks")
    if args.benchmarks is None:
        args.benchmarks = list(DEFAULT_BENCHMARKS)
    envs = mlir_rl.make_vec(args.num_envs, args.benchmarks, server=args.server, autoreset_mode="disabled",
                            benchmark_order=args.benchmark_order, reward_mode=args.reward_mode, timeout=args.timeout)
    try:
        policy = ActorCritic(**state["policy_config"]) if state is not None else None
        trainer = PPOTrainer(envs, config, policy=policy, seed=args.seed)
        rows: List[Dict[str, Any]] = []
        baseline: Optional[float] = None
        previous_wall = 0.0
        best = 0.0
        if state is not None:
            trainer.load_state_dict(state)
            extra = state.get("extra", {})
            previous_wall = float(extra.get("wall_s", 0.0))
            best = float(extra.get("best_speedup", 0.0))
            baseline = extra.get("random_baseline")
            rows = _truncate_logs(args.out, trainer.updates, trainer.episodes)
        else:
            for name in ("updates.jsonl", "episodes.jsonl", "updates.csv"):
                if os.path.exists(os.path.join(args.out, name)):
                    os.remove(os.path.join(args.out, name))
            with open(os.path.join(args.out, "updates.csv"), "w", newline="") as f:
                csv.DictWriter(f, fieldnames=UPDATE_FIELDS).writeheader()
        version = envs.envs[0].version()
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump({"argv": sys.argv[1:] if argv is None else list(argv), "args": vars(args),
                       "ppo": config.__dict__, "policy": trainer.policy.config, "server": version,
                       "resumed_from_update": trainer.updates if state is not None else None}, f, indent=2)
        if args.random_baseline > 0 and state is None:
            recs = random_baseline(envs, args.random_baseline, args.seed + 77)
            baseline = float(np.mean([r["return"] for r in recs]))
            with open(os.path.join(args.out, "random_baseline.jsonl"), "w") as f:
                for r in recs:
                    f.write(json.dumps(r) + "\n")
            print(f"mlir-rl-train: masked random policy, {len(recs)} episodes: mean return {baseline:.3f}",
                  file=sys.stderr)
        metrics0 = cache_counters(server_metrics(envs))
        counters0 = (trainer.episodes, trainer.evaluations, trainer.cached_evaluations)
        t_start = time.monotonic()
        deadline = None if args.minutes is None else t_start + 60 * args.minutes
        bar = _progress(not args.no_progress, args.updates, trainer.updates)
        recent: List[float] = []

        def done() -> bool:
            return ((args.updates is not None and trainer.updates >= args.updates)
                    or (args.episodes is not None and trainer.episodes >= args.episodes)
                    or (deadline is not None and time.monotonic() >= deadline))

        def write_checkpoint() -> None:
            save_checkpoint(ckpt_path, trainer, {"wall_s": previous_wall + time.monotonic() - t_start,
                                                 "best_speedup": best, "random_baseline": baseline,
                                                 "benchmarks": args.benchmarks})
            export_policy(os.path.join(args.out, "policy.pt"), trainer.policy,
                          extra={"updates": trainer.updates, "episodes": trainer.episodes,
                                 "benchmarks": args.benchmarks})
            if have_matplotlib():
                learning_curve(rows, os.path.join(args.out, "learning_curve.png"),
                               title=f"mlir-rl PPO: {' '.join(args.benchmarks)}", random_baseline=baseline)

        while not done():
            evals_before, cached_before = trainer.evaluations, trainer.cached_evaluations
            t_update = time.monotonic()
            records = trainer.collect()
            losses = trainer.update()
            for r in records:
                if r["speedup"] is not None:
                    best = max(best, r["speedup"])
                recent.append(r["return"])
            recent = recent[-200:]
            wall = previous_wall + time.monotonic() - t_start
            evals = trainer.evaluations - evals_before
            timing = trainer.timing
            row: Dict[str, Any] = {
                "update": trainer.updates, "episodes": trainer.episodes, "transitions": trainer.transitions,
                "wall_s": round(wall, 3), "episodes_in_update": len(records),
                "mean_return": float(np.mean([r["return"] for r in records])) if records else float("nan"),
                "mean_final_reward": float(np.mean([r["final_reward"] for r in records])) if records
                else float("nan"),
                "geomean_speedup": geomean([r["speedup"] for r in records]),
                "best_speedup": best,
                "correct_fraction": float(np.mean([bool(r["correct"]) for r in records])) if records else float("nan"),
                "evaluations": evals, "measured_evaluations": evals - (trainer.cached_evaluations - cached_before),
                "cache_hit_rate": (trainer.cached_evaluations - cached_before) / evals if evals else float("nan"),
                "episodes_per_min": 60.0 * len(records) / max(1e-9, time.monotonic() - t_update),
                "evaluations_per_s": evals / max(1e-9, time.monotonic() - t_update),
                "t_policy_s": timing.policy, "t_step_evaluating_s": timing.step_evaluating,
                "t_step_other_s": timing.step_other, "t_reset_s": timing.reset, "t_update_s": timing.update,
            }
            row.update(losses)
            rows.append(row)
            with open(os.path.join(args.out, "updates.csv"), "a", newline="") as f:
                csv.DictWriter(f, fieldnames=UPDATE_FIELDS, extrasaction="ignore").writerow(row)
            with open(os.path.join(args.out, "updates.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
            with open(os.path.join(args.out, "episodes.jsonl"), "a") as f:
                for r in records:
                    f.write(json.dumps(r) + "\n")
            postfix = {"episodes": trainer.episodes, "mean_return": f"{np.mean(recent):.3f}" if recent else "-",
                       "best_speedup": f"{best:.2f}", "evals/s": f"{row['evaluations_per_s']:.2f}"}
            if bar is not None:
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            else:
                print(f"update {trainer.updates}: " + ", ".join(f"{k} {v}" for k, v in postfix.items()),
                      file=sys.stderr, flush=True)
            if trainer.updates % max(1, args.checkpoint_every) == 0:
                write_checkpoint()
        if bar is not None:
            bar.close()
        write_checkpoint()
        metrics1 = cache_counters(server_metrics(envs))
        wall_this = time.monotonic() - t_start
        episodes = trainer.episodes - counters0[0]
        evaluations = trainer.evaluations - counters0[1]
        cached = trainer.cached_evaluations - counters0[2]
        timing = trainer.timing
        total = timing.total()
        server_evals = metrics1["evaluations_total"] - metrics0["evaluations_total"]
        server_hits = metrics1["evaluation_cache_hits_total"] - metrics0["evaluation_cache_hits_total"]
        summary = {
            "updates": trainer.updates, "episodes": trainer.episodes, "transitions": trainer.transitions,
            "wall_s_total": previous_wall + wall_this, "this_invocation": {
                "wall_s": wall_this, "episodes": episodes, "evaluations": evaluations,
                "episodes_per_min": 60 * episodes / max(1e-9, wall_this),
                "evaluations_per_min": 60 * evaluations / max(1e-9, wall_this),
                "measured_evaluations_per_min": 60 * (evaluations - cached) / max(1e-9, wall_this),
                "client_cache_hit_rate": cached / evaluations if evaluations else None,
                "server_evaluations_total": server_evals, "server_cache_hits_total": server_hits,
                "server_cache_hit_rate": server_hits / server_evals if server_evals else None,
            },
            "time_share": {k: (v / total if total else None) for k, v in timing.__dict__.items()},
            "time_s": dict(timing.__dict__), "best_speedup": best, "random_baseline_mean_return": baseline,
            "last_20_updates_mean_return": float(np.nanmean([r["mean_return"] for r in rows[-20:]])) if rows else None,
            "server": version, "benchmarks": args.benchmarks,
        }
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps({k: summary[k] for k in ("updates", "episodes", "best_speedup",
                                                  "last_20_updates_mean_return")}), file=sys.stderr)
    finally:
        envs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
