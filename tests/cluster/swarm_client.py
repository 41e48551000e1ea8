"""The client side of scripts/docker-cluster-test.sh: runs inside the network namespace of a container attached to
the stack's overlay network (nsenter), with /etc/resolv.conf pointing at Docker's embedded DNS, so
``dns:///tasks.<service>:50051`` resolves to every replica. Drives the Python vector env across the replicas and
manipulates them through the Docker CLI ($DOCKER_HOST); prints one JSON object of results and figures on the last
line of its output. Assertions raise (exit status 1).

Checks: sessions spread over every replica; one replica SIGKILLed mid-run (docker kill) loses no episode (they
complete on the others, by replay); Swarm's replacement rejoins (new episodes go to it once the name lists it);
a `docker stop` drains (health NOT_SERVING, exit status 0) and its episodes complete elsewhere. Figures: time to
healthy of the replacement, evaluations per minute with 1 and with 2 replicas (side by side, same run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))

import numpy as np  # noqa: E402

import mlir_rl  # noqa: E402
from mlir_rl import cluster  # noqa: E402

TILE = {1: 1, 2: 2, 4: 3, 8: 4, 16: 5, 32: 6, 64: 7}
TILINGS = [(8, 16, 1), (4, 16, 1), (8, 8, 1), (2, 16, 1), (16, 8, 1), (4, 8, 1), (1, 16, 1), (16, 16, 1)]
BENCHMARKS = ["benchmark://nn-ops/matmul_64x64x64_f32", "benchmark://nn-ops/matmul_128x128x128_f32"]


def log(msg: str) -> None:
    print(f"[swarm-client {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def docker(*args: str, timeout: float = 120) -> str:
    return subprocess.run(["/usr/bin/docker", *args], check=True, capture_output=True, text=True,
                          timeout=timeout).stdout.strip()


def task_container(service: str, ip: str) -> str:
    """The id of the running container of ``service`` whose address on the stack network is ``ip``."""
    for cid in docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").split():
        addrs = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", cid).split()
        if ip in addrs:
            return cid
    raise AssertionError(f"no container of {service} has address {ip}")


def action(env, kind: str, sizes=()) -> np.ndarray:
    a = np.zeros(len(env.nvec), dtype=np.int64)
    a[0] = env.type_names.index(kind)
    for k, s in enumerate(sizes):
        a[1 + k] = TILE[s]
    return a


class Runner:
    """Episodes of two steps per sub-environment (a tiling, then VECTORIZATION, or NO_TRANSFORMATION where
    masked): every episode ends with an evaluation. Counts finished episodes and checks each one."""

    def __init__(self, envs):
        self.envs = envs
        self.phase = [0] * envs.num_envs
        self.episode = [0] * envs.num_envs
        self.finished = 0
        self.evaluations = 0
        self.servers_used: Dict[str, int] = {}

    def step(self) -> None:
        actions = []
        for i, env in enumerate(self.envs.envs):
            if self.phase[i] == 0:
                actions.append(action(env, "TILING", TILINGS[(i + self.episode[i]) % len(TILINGS)]))
            elif self.phase[i] == 1:
                vec = env.type_names.index("VECTORIZATION")
                actions.append(action(env, "VECTORIZATION" if env.head_masks()[0][vec] else "NO_TRANSFORMATION"))
            else:
                actions.append(np.zeros(len(env.nvec), dtype=np.int64))
        _, _, terminated, truncated, infos = self.envs.step(np.stack(actions))
        for i, env in enumerate(self.envs.envs):
            if self.phase[i] == 2:
                self.phase[i], self.episode[i] = 0, self.episode[i] + 1
            elif terminated[i] or truncated[i]:
                assert self.phase[i] == 1 and terminated[i], (i, self.phase[i])
                assert infos["evaluation"]["correct"][i], (i, infos)
                assert len(env.actions) == 2, env.actions
                self.finished += 1
                self.evaluations += 1
                self.servers_used[env.server] = self.servers_used.get(env.server, 0) + 1
                self.phase[i] = 2
            else:
                assert self.phase[i] == 0, (i, self.phase[i])
                self.phase[i] = 1

    def run_episodes(self, rounds: int) -> None:
        for _ in range(3 * rounds):
            self.step()

    def episodes_done(self) -> List[int]:
        return [e + (1 if p == 2 else 0) for e, p in zip(self.episode, self.phase)]


def wait_for_replicas(host: str, port: int, count: int, timeout: float) -> List[str]:
    deadline = time.monotonic() + timeout
    addrs: List[str] = []
    while time.monotonic() < deadline:
        try:
            addrs = cluster.system_resolver(host, port)
        except OSError:
            addrs = []
        if len(addrs) >= count:
            return addrs
        time.sleep(0.5)
    raise AssertionError(f"{host} lists {addrs} after {timeout:.0f} s, not {count} replicas")


def evaluations_per_minute(servers: List[str], envs_per_server: int, seconds: float) -> float:
    """Evaluating episodes (cache bypassed, so every candidate is measured) for ``seconds`` on ``servers``."""
    with mlir_rl.make_vec(envs_per_server * len(servers), BENCHMARKS, servers=servers,
                          evaluation_cache="bypass") as envs:
        envs.reset(seed=0)
        runner = Runner(envs)
        runner.run_episodes(1)  # warm-up: references measured, JIT caches warm
        start_evals, start = runner.evaluations, time.monotonic()
        while time.monotonic() - start < seconds:
            runner.step()
        return (runner.evaluations - start_evals) * 60.0 / (time.monotonic() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", required=True)  # the Swarm service, e.g. mlirrl_server
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--measure-seconds", type=float, default=40.0)
    args = parser.parse_args()
    host = f"tasks.{args.service}"
    target = f"dns:///{host}:{args.port}"
    out: Dict = {"checks": []}

    addrs = wait_for_replicas(host, args.port, args.replicas, 120)
    log(f"{host} lists {addrs}")

    # 1. Spread and failover: 2 sessions per replica; SIGKILL one replica mid-episode.
    n = 2 * args.replicas
    with mlir_rl.make_vec(n, BENCHMARKS[0], servers=target, resolve_interval=2.0, retry_interval=1.0) as envs:
        envs.reset(seed=0)
        counts = envs.pool.sessions()
        assert sorted(counts.values()) == [2] * args.replicas, counts
        out["checks"].append(f"spread: {n} sessions over {args.replicas} replicas, {counts}")
        runner = Runner(envs)
        runner.run_episodes(1)
        runner.step()  # second episode's tiling done everywhere: episodes are mid-way
        victim = envs.envs[0].server
        victim_ip = victim.rsplit(":", 1)[0]
        on_victim = [i for i, e in enumerate(envs.envs) if e.server == victim]
        cid = task_container(args.service, victim_ip)
        log(f"docker kill {cid[:12]} ({victim}, sessions of envs {on_victim})")
        killed_at = time.monotonic()
        docker("kill", cid)
        target_episodes = 4
        while min(runner.episodes_done()) < target_episodes:
            runner.step()
        failover_s = time.monotonic() - killed_at
        migrations = sum(e.migrations for e in envs.envs)
        assert migrations == len(on_victim), [e.migrations for e in envs.envs]
        expected = n * target_episodes
        assert runner.finished >= expected, (runner.finished, expected)
        out["episodes_completed"] = runner.finished
        out["episodes_lost"] = 0  # every sub-environment finished every episode it started (asserted per step)
        out["sessions_moved"] = migrations
        out["episodes_after_kill_s"] = round(failover_s, 1)
        out["checks"].append(f"kill: {len(on_victim)} sessions of {victim} rebuilt elsewhere; {runner.finished} "
                             f"episodes completed, 0 lost")

        # 2. Swarm replaces the replica (new task, new address); once healthy the name lists it and new episodes
        # go there.
        deadline = killed_at + 180
        new_addr = None
        while time.monotonic() < deadline:
            listed = cluster.system_resolver(host, args.port)
            fresh = [a for a in listed if a not in addrs and a != victim]
            if len(listed) >= args.replicas and fresh:
                new_addr = fresh[0]
                break
            time.sleep(0.5)
        assert new_addr, f"no replacement replica listed within 180 s: {cluster.system_resolver(host, args.port)}"
        out["replacement_listed_after_s"] = round(time.monotonic() - killed_at, 1)
        log(f"replacement {new_addr} listed {out['replacement_listed_after_s']} s after the kill")
        time.sleep(2.5)  # the pool's resolve interval
        before = runner.servers_used.get(new_addr, 0)
        runner.run_episodes(2)
        assert envs.pool.sessions().get(new_addr, 0) >= 1, envs.pool.sessions()
        assert runner.servers_used.get(new_addr, 0) > before, runner.servers_used
        out["checks"].append(f"rejoin: replacement {new_addr} took {runner.servers_used[new_addr]} episodes")
        addrs = cluster.system_resolver(host, args.port)

    # 3. A stop drains: SIGTERM, NOT_SERVING, exit 0; its sessions complete elsewhere.
    with mlir_rl.make_vec(n, BENCHMARKS[0], servers=target, resolve_interval=2.0, retry_interval=1.0) as envs:
        envs.reset(seed=1)
        runner = Runner(envs)
        runner.step()
        victim = envs.envs[0].server
        victim_ip = victim.rsplit(":", 1)[0]
        cid = task_container(args.service, victim_ip)
        log(f"docker stop {cid[:12]} ({victim})")
        stopper = threading.Thread(target=docker, args=("stop", "-t", "30", cid), kwargs={"timeout": 60})
        stopper.start()
        serving = True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and serving:
            import grpc  # the health check needs a channel of its own
            with grpc.insecure_channel(victim) as channel:
                serving = cluster.health_check(channel, timeout=1.0)
            time.sleep(0.1)
        runner.run_episodes(2)
        stopper.join(timeout=60)
        status = docker("inspect", "-f", "{{.State.ExitCode}}", cid)
        logs = subprocess.run(["/usr/bin/docker", "logs", cid], capture_output=True, text=True, timeout=60)
        assert not serving or status == "0", "the stopping replica still answered SERVING"
        assert status == "0", f"exit status {status}"
        assert "draining" in logs.stdout + logs.stderr, (logs.stdout + logs.stderr)[-2000:]
        assert all(e.server != victim for e in envs.envs)
        out["checks"].append(f"stop: {victim} drained (NOT_SERVING seen: {not serving}), exit 0; "
                             f"{runner.finished} episodes completed elsewhere")

    # 4. Evaluations per minute, 1 replica vs 2, side by side (same run, same benchmarks, cache bypassed).
    addrs = wait_for_replicas(host, args.port, args.replicas, 180)
    time.sleep(3)
    one = evaluations_per_minute(addrs[:1], 2, args.measure_seconds)
    two = evaluations_per_minute(addrs[:2], 2, args.measure_seconds)
    out["evaluations_per_minute"] = {"1 replica": round(one, 1), "2 replicas": round(two, 1)}
    log(f"evaluations per minute: 1 replica {one:.1f}, 2 replicas {two:.1f}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
