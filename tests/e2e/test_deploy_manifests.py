"""Offline checks of the deployment files (no server, no cluster): docker/stack.yaml (Docker Swarm) and
docker/k8s/ (Kubernetes). What they promise: replicas reached through per-replica addresses (Swarm dnsrr, a
headless Service), health through the gRPC health service, whole cores per replica (Kubernetes: Guaranteed QoS with
integer CPUs), tokens from a secret that the image's user can read. `kubectl kustomize` (offline) renders the
Kubernetes files when kubectl is installed; schema validation needs an API server and is not done here
(scripts/docker-cluster-test.sh deploys the stack file on a real swarm)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # python3-yaml (llvm-19-tools depends on it)

REPO = Path(__file__).resolve().parents[2]


def k8s_docs():
    return [d for d in yaml.safe_load_all((REPO / "docker/k8s/mlir-rl.yaml").read_text()) if d]


def test_kubernetes_statefulset_is_guaranteed_with_whole_cores_and_grpc_probes():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_docs()}
    sts = docs[("StatefulSet", "mlir-rl")]
    svc = docs[("Service", "mlir-rl")]
    secret = docs[("Secret", "mlir-rl-tokens")]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # Guaranteed QoS: requests == limits for cpu and memory; CPUs an integer (exclusive cores, static CPU manager).
    res = c["resources"]
    assert res["requests"] == res["limits"]
    assert set(res["limits"]) == {"cpu", "memory"}
    assert str(res["limits"]["cpu"]).isdigit() and int(res["limits"]["cpu"]) >= 1
    # Native gRPC probes on the server's port.
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port, probe
    assert c["args"] == [f"--port={port}"]
    # Headless Service over the pods, listing ready replicas only.
    assert svc["spec"]["clusterIP"] == "None" and not svc["spec"].get("publishNotReadyAddresses", False)
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["port"] == port
    # Tokens: the Secret mounted where MLIR_RL_AUTH_TOKENS_FILE points (the entry point then listens on 0.0.0.0).
    env = {e["name"]: e["value"] for e in c["env"]}
    tokens_file = Path(env["MLIR_RL_AUTH_TOKENS_FILE"])
    vol = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret["metadata"]["name"])
    mount = next(m for m in c["volumeMounts"] if m["name"] == vol["name"])
    assert Path(mount["mountPath"]) == tokens_file.parent and tokens_file.name in secret["stringData"]
    # The image's user, and a grace period longer than the server's drain (20 s).
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["fsGroup"] == 10001
    assert pod["terminationGracePeriodSeconds"] > 20


def test_kubectl_kustomize_renders_the_manifests_offline():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(REPO / "docker/k8s")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout) if d)
    assert rendered == sorted((d["kind"], d["metadata"]["name"]) for d in k8s_docs())


def test_swarm_stack_uses_task_dns_health_whole_cores_and_a_secret():
    stack = yaml.safe_load((REPO / "docker/stack.yaml").read_text())
    s = stack["services"]["server"]
    assert s["deploy"]["endpoint_mode"] == "dnsrr"  # tasks.<service>: every replica, no VIP
    assert "ports" not in s
    assert "mlir-rl-cli" in " ".join(s["healthcheck"]["test"]) and "health" in " ".join(s["healthcheck"]["test"])
    limits, reservations = s["deploy"]["resources"]["limits"], s["deploy"]["resources"]["reservations"]
    assert limits["cpus"] == reservations["cpus"] == "${MLIR_RL_CPUS_PER_REPLICA:-1}"
    assert s["environment"]["MLIR_RL_CPUS_PER_REPLICA"] == "${MLIR_RL_CPUS_PER_REPLICA:-1}"
    assert s["environment"]["MLIR_RL_REPLICA_SLOT"] == "{{.Task.Slot}}"
    (secret,) = s["secrets"]
    assert s["environment"]["MLIR_RL_AUTH_TOKENS_FILE"] == f"/run/secrets/{secret['target']}"
    assert secret["uid"] == "10001" and secret["mode"] == 0o400
    assert stack["networks"]["mlir-rl"]["attachable"] is True
    assert int(s["stop_grace_period"].rstrip("s")) > 20


def test_entrypoint_pins_replica_slots_to_distinct_cores(tmp_path):
    """docker/entrypoint.sh with the server replaced by `echo`: slot S takes the S-th group of cores."""
    script = (REPO / "docker/entrypoint.sh").read_text().replace("exec $pin /opt/mlir-rl/bin/mlir-rl-server",
                                                                 "echo $pin server")
    ep = tmp_path / "entrypoint.sh"
    ep.write_text(script)

    def run(cpus: str, **env):
        r = subprocess.run(["taskset", "-c", cpus, "sh", str(ep), "--port=1"], capture_output=True, text=True,
                           env=dict(env, PATH="/usr/bin:/bin"), timeout=30)
        return r.returncode, r.stdout.strip()

    import os
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    assert run("0,1", MLIR_RL_REPLICA_SLOT="1")[1].startswith("taskset -c 0 server --address=127.0.0.1")
    assert run("0,1", MLIR_RL_REPLICA_SLOT="2")[1].startswith("taskset -c 1 server")
    assert run("0,1", MLIR_RL_REPLICA_SLOT="3")[1].startswith("taskset -c 0 server")  # wraps round
    assert run("0,1", MLIR_RL_REPLICA_SLOT="1", MLIR_RL_CPUS_PER_REPLICA="2")[1].startswith("taskset -c 0,1 server")
    assert run("1", MLIR_RL_REPLICA_SLOT="2")[1].startswith("taskset -c 1 server")
    assert run("0,1", MLIR_RL_REPLICA_SLOT="x")[0] == 2
    assert run("0,1", MLIR_RL_REPLICA_SLOT="1", MLIR_RL_CPUS_PER_REPLICA="3")[0] == 2
    rc, out = run("0,1", MLIR_RL_CPUSET="1", MLIR_RL_AUTH_TOKENS_FILE="/t")
    assert out.startswith("taskset -c 1 server --address=0.0.0.0 --auth_tokens_file=/t")
    assert run("0,1")[1].startswith("server --address=127.0.0.1")
