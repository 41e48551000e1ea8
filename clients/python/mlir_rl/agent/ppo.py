"""PPO with GAE over an :class:`~mlir_rl.MlirRlVectorEnv` (one ``StepMany`` call per step).

:class:`PPOTrainer` collects ``num_steps`` steps of every sub-environment with the current policy (sampling only
legal actions), computes advantages with GAE, and takes ``epochs`` passes of clipped-surrogate updates over
``minibatches`` minibatches. Defaults are MLIR RL's: lr 1e-3, clip 0.2, gamma 1, lambda 0.95, 4 epochs, entropy
0.01. Episodes are reset by the trainer (the vector env's autoreset is disabled), so the last evaluation of each
episode (speedup, correctness, cache hit) is read from its sub-environment before the next episode starts.

Each finished episode becomes a record (:class:`EpisodeRecord` as a dict) for the caller's logs; wall time is split
into the policy's forward passes, the ``StepMany`` calls that evaluated a schedule the server measured (not served
from its cache: "waiting for evaluations"), the other steps and resets, and the updates.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .features import Encoded, encode, feature_sizes
from .policy import ActorCritic, inputs_to_torch, masks_to_torch

__all__ = ["PPOConfig", "PPOTrainer", "Timing", "gae", "geomean", "save_checkpoint", "load_checkpoint", "load_policy",
           "export_policy"]


@dataclass
class PPOConfig:
    lr: float = 1e-3
    clip: float = 0.2
    gamma: float = 1.0
    gae_lambda: float = 0.95
    epochs: int = 4
    minibatches: int = 4
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    num_steps: int = 32      # steps per sub-environment per update
    hidden: int = 512
    normalize_advantages: bool = True


@dataclass
class Timing:
    """Seconds of wall time by activity since the trainer started."""

    policy: float = 0.0         # forward passes that choose actions
    step_evaluating: float = 0.0  # StepMany calls in which the server measured at least one schedule
    step_other: float = 0.0     # the other StepMany calls (no evaluation, or all served from the cache)
    reset: float = 0.0
    update: float = 0.0

    def total(self) -> float:
        return self.policy + self.step_evaluating + self.step_other + self.reset + self.update


@dataclass
class _Batch:
    op: List[np.ndarray] = field(default_factory=list)
    producer: List[np.ndarray] = field(default_factory=list)
    context: List[np.ndarray] = field(default_factory=list)
    m_type: List[np.ndarray] = field(default_factory=list)
    m_tiles: List[np.ndarray] = field(default_factory=list)
    m_peeled: List[np.ndarray] = field(default_factory=list)
    m_unroll: List[np.ndarray] = field(default_factory=list)
    m_inter: List[np.ndarray] = field(default_factory=list)
    actions: List[np.ndarray] = field(default_factory=list)
    logp: List[np.ndarray] = field(default_factory=list)
    values: List[np.ndarray] = field(default_factory=list)
    rewards: List[np.ndarray] = field(default_factory=list)
    dones: List[np.ndarray] = field(default_factory=list)

    def add(self, enc: Encoded, actions: np.ndarray, logp: np.ndarray, values: np.ndarray) -> None:
        self.op.append(enc.op)
        self.producer.append(enc.producer)
        self.context.append(enc.context)
        self.m_type.append(enc.masks.type)
        self.m_tiles.append(enc.masks.tiles)
        self.m_peeled.append(enc.masks.tiles_peeled)
        self.m_unroll.append(enc.masks.unroll)
        self.m_inter.append(enc.masks.interchange)
        self.actions.append(actions)
        self.logp.append(logp)
        self.values.append(values)


def gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float,
        lam: float) -> np.ndarray:
    """Generalized advantage estimates, ``[T, N]``: ``dones[t]`` says the episode ended with step ``t`` (no
    bootstrap across it); ``last_values`` are the values of the observations after the last step."""
    steps = rewards.shape[0]
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1], dtype=rewards.dtype)
    for t in reversed(range(steps)):
        next_values = last_values if t == steps - 1 else values[t + 1]
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * live - values[t]
        last = delta + gamma * lam * live * last
        adv[t] = last
    return adv


class PPOTrainer:
    """PPO on ``envs`` (an :class:`~mlir_rl.MlirRlVectorEnv` made with ``autoreset_mode="disabled"``).

    ``collect()`` returns the episodes that ended; ``update()`` the losses. ``state_dict()`` / ``load_state_dict()``
    hold the policy, the optimizer, the counters and the random generators (for checkpoints and ``--resume``).
    """

    def __init__(self, envs: Any, config: Optional[PPOConfig] = None, policy: Optional[ActorCritic] = None,
                 seed: int = 0):
        self.envs = envs
        self.config = config or PPOConfig()
        torch.manual_seed(seed)
        self.policy = policy if policy is not None else ActorCritic.for_env(envs, hidden=self.config.hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr, eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.updates = 0
        self.episodes = 0
        self.transitions = 0
        self.evaluations = 0
        self.cached_evaluations = 0
        self.timing = Timing()
        n = envs.num_envs
        self._ep_return = np.zeros(n)
        self._ep_steps = np.zeros(n, dtype=np.int64)
        self._obs: Optional[Dict[str, np.ndarray]] = None
        self._batch: Optional[_Batch] = None
        self._last_values: Optional[np.ndarray] = None

    # -- rollout -------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        t0 = time.perf_counter()
        self._obs, _ = self.envs.reset(seed=self.seed + 1000 * self.updates)
        self._ep_return[:] = 0
        self._ep_steps[:] = 0
        self.timing.reset += time.perf_counter() - t0

    def collect(self) -> List[Dict[str, Any]]:
        """``num_steps`` steps of every sub-environment; returns the records of the episodes that ended."""
        if self._obs is None:
            self._start()
        envs, cfg, timing = self.envs, self.config, self.timing
        batch = _Batch()
        records: List[Dict[str, Any]] = []
        for _ in range(cfg.num_steps):
            t0 = time.perf_counter()
            enc = encode(self._obs)
            actions, logp, values = self.policy.act(enc, generator=self.generator)
            t1 = time.perf_counter()
            timing.policy += t1 - t0
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            t2 = time.perf_counter()
            done = terminated | truncated
            measured = 0
            for i in np.flatnonzero(done):
                ev = envs.envs[i].last_evaluation
                if ev is not None and not ev.get("cached", False):
                    measured += 1
            if measured:
                timing.step_evaluating += t2 - t1
            else:
                timing.step_other += t2 - t1
            rewards = rewards.astype(np.float64)
            cut = truncated & ~terminated
            if cut.any():  # cut short, not finished: bootstrap with the value of where it stopped
                rewards[cut] += cfg.gamma * self.policy.value(encode({k: v[cut] for k, v in obs.items()}))
            batch.add(enc, actions, logp, values)
            batch.rewards.append(rewards)
            batch.dones.append(done.astype(np.float64))
            self._ep_return += rewards
            self._ep_steps += 1
            self.transitions += envs.num_envs
            if done.any():
                for i in np.flatnonzero(done):
                    records.append(self._finish_episode(int(i), float(rewards[i]), bool(truncated[i])))
                t3 = time.perf_counter()
                obs, _ = envs.reset(options={"reset_mask": done})
                timing.reset += time.perf_counter() - t3
            self._obs = obs
        t0 = time.perf_counter()
        self._last_values = self.policy.value(encode(self._obs))
        timing.policy += time.perf_counter() - t0
        self._batch = batch
        return records

    def _finish_episode(self, i: int, final_reward: float, truncated: bool) -> Dict[str, Any]:
        env = self.envs.envs[i]
        ev = env.last_evaluation
        self.episodes += 1
        record: Dict[str, Any] = {
            "episode": self.episodes, "update": self.updates, "env": i, "benchmark": env.benchmark,
            "return": float(self._ep_return[i]), "final_reward": final_reward, "steps": int(self._ep_steps[i]),
            "truncated": truncated, "speedup": None, "correct": None, "cached": None, "failure": "",
        }
        if ev is not None:
            self.evaluations += 1
            self.cached_evaluations += bool(ev.get("cached", False))
            record.update(speedup=float(ev["speedup"]) if ev.get("correct") else None, correct=bool(ev["correct"]),
                          cached=bool(ev.get("cached", False)), failure=ev.get("failure", ""),
                          median_ns=ev.get("median_ns"), reference_ns=ev.get("reference_ns"),
                          repetitions=ev.get("repetitions"), lower_ms=ev.get("lower_ms"), jit_ms=ev.get("jit_ms"))
        self._ep_return[i] = 0.0
        self._ep_steps[i] = 0
        return record

    # -- update --------------------------------------------------------------------------------------------------

    def update(self) -> Dict[str, float]:
        """PPO epochs over the last collected batch; returns mean losses and diagnostics."""
        if self._batch is None:
            raise RuntimeError("collect() first")
        t_start = time.perf_counter()
        cfg, b = self.config, self._batch
        rewards = np.stack(b.rewards)
        values = np.stack(b.values).astype(np.float64)
        dones = np.stack(b.dones)
        adv = gae(rewards, values, dones, self._last_values.astype(np.float64), cfg.gamma, cfg.gae_lambda)
        returns = adv + values

        def flat(xs: List[np.ndarray]) -> torch.Tensor:
            a = np.stack(xs)
            return torch.from_numpy(np.ascontiguousarray(a.reshape((-1,) + a.shape[2:])))

        x = {"op": flat(b.op), "producer": flat(b.producer), "context": flat(b.context)}
        masks = {"type": flat(b.m_type), "tiles": flat(b.m_tiles), "unroll": flat(b.m_unroll),
                 "interchange": flat(b.m_inter), "tiles_peeled": flat(b.m_peeled)}
        actions, old_logp = flat(b.actions), flat(b.logp).float()
        t_adv = torch.from_numpy(adv.reshape(-1)).float()
        t_ret = torch.from_numpy(returns.reshape(-1)).float()
        t_val = torch.from_numpy(values.reshape(-1)).float()
        n = actions.shape[0]
        mb_size = max(1, n // max(1, cfg.minibatches))
        stats: Dict[str, List[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl",
                                                         "clip_fraction")}
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n, mb_size):
                idx = perm[start:start + mb_size]
                dist, v = self.policy({k: t[idx] for k, t in x.items()}, {k: t[idx] for k, t in masks.items()})
                logp = dist.log_prob(actions[idx])
                log_ratio = logp - old_logp[idx]
                ratio = log_ratio.exp()
                a = t_adv[idx]
                if cfg.normalize_advantages and a.numel() > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
                v_loss = 0.5 * ((v - t_ret[idx]) ** 2).mean()
                entropy = dist.entropy().mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    stats["policy_loss"].append(float(pg_loss))
                    stats["value_loss"].append(float(v_loss))
                    stats["entropy"].append(float(entropy))
                    stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
                    stats["clip_fraction"].append(float(((ratio - 1).abs() > cfg.clip).float().mean()))
        var = float(t_ret.var())
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["explained_variance"] = float("nan") if var == 0 else 1.0 - float((t_ret - t_val).var()) / var
        self.updates += 1
        self._batch = None
        self.timing.update += time.perf_counter() - t_start
        return out

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        return {
            "policy": self.policy.state_dict(), "policy_config": dict(self.policy.config),
            "optimizer": self.optimizer.state_dict(), "ppo_config": asdict(self.config), "seed": self.seed,
            "counters": {"updates": self.updates, "episodes": self.episodes, "transitions": self.transitions,
                         "evaluations": self.evaluations, "cached_evaluations": self.cached_evaluations},
            "timing": asdict(self.timing), "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        for k, v in state["counters"].items():
            setattr(self, k, int(v))
        self.timing = Timing(**state["timing"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self._obs = None  # episodes in flight are not part of a checkpoint: the next collect() starts new ones


def save_checkpoint(path: str, trainer: PPOTrainer, extra: Optional[Dict[str, Any]] = None) -> None:
    """Writes the trainer's state (and ``extra``, e.g. the command line and the log's position) atomically."""
    import os

    state = trainer.state_dict()
    state["extra"] = dict(extra or {})
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu")


def export_policy(path: str, policy: ActorCritic, half: bool = True, extra: Optional[Dict[str, Any]] = None) -> None:
    """Writes the policy alone (no optimizer state), in float16 by default (a quarter of a checkpoint's size);
    :func:`load_policy` reads it back as float32."""
    weights = {k: (v.half() if half and v.is_floating_point() else v).clone() for k, v in policy.state_dict().items()}
    torch.save({"policy": weights, "policy_config": dict(policy.config), "extra": dict(extra or {})}, path)


def load_policy(path: str) -> ActorCritic:
    """The policy of a checkpoint or of an exported policy (``mlir-rl-train`` writes both), in evaluation mode."""
    state = load_checkpoint(path)
    policy = ActorCritic(**state["policy_config"])
    policy.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state["policy"].items()})
    policy.eval()
    return policy


def policy_mismatch(policy: ActorCritic, observation_space: Any) -> Optional[str]:
    """Why ``policy`` cannot act in an environment with ``observation_space`` (None when it can): its input and
    head sizes must be the server's; a policy trained before the server gained action types acts with its own types
    (``encode(obs, num_types)``)."""
    want = feature_sizes(observation_space, policy.config.get("num_types"))
    diffs = [f"{k} {policy.config.get(k)} (the server's: {v})" for k, v in want.items() if policy.config.get(k) != v]
    if not diffs:
        return None
    return ("the policy was trained for another action or observation space: " + ", ".join(diffs) +
            "; train a policy against this server (mlir-rl-train)")


def geomean(speedups: List[float]) -> float:
    xs = [s for s in speedups if s is not None and s > 0]
    return math.exp(sum(math.log(s) for s in xs) / len(xs)) if xs else float("nan")
