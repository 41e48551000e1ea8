"""Who may call the server, and what it tells operators (issue 13): bearer tokens, TLS with client certificates made
at test time, the refusal to serve a network without credentials, the evaluation workers' sandbox, and the
Prometheus metrics endpoint. Real server processes, real TLS over loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

import mlir_rl
from conftest import server_binary, start_server
from mlir_rl.v1 import env_pb2 as pb
from mlir_rl.v1 import env_pb2_grpc as rpc
from test_server import SMALL, code_and_message

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(channel) -> bytes:
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    return check(b"", timeout=10)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text("# name token\n" + "".join(f"{name} {token}\n" for name, token in TOKENS.items()))
    proc = start_server(extra_args=[f"--auth_tokens_file={path}", "--max_sessions_per_client=2"])
    yield proc
    proc.stop()


def test_calls_without_a_valid_token_are_unauthenticated(token_server):
    with grpc.insecure_channel(token_server.address) as channel:
        stub = rpc.MlirRlEnvStub(channel)
        code, msg = code_and_message(stub.GetVersion, pb.GetVersionRequest(), timeout=10)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in msg
        code, msg = code_and_message(stub.Reset, pb.ResetRequest(benchmark=SMALL), timeout=10,
                                     metadata=(("authorization", "Bearer not-a-token-at-all-00000"),))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "not one this server accepts" in msg
        code, msg = code_and_message(stub.GetVersion, pb.GetVersionRequest(), timeout=10,
                                     metadata=(("authorization", TOKENS["alice"]),))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in msg
        # The health service stays open for orchestrators' probes.
        assert health(channel) == b"\x08\x01"
        # A valid token is served; its name is the client's identity (quotas are per token).
        alice = (("authorization", f"Bearer {TOKENS['alice']}"),)
        bob = (("authorization", f"Bearer {TOKENS['bob']}"),)
        for _ in range(2):
            stub.Reset(pb.ResetRequest(benchmark=SMALL), timeout=60, metadata=alice)
        code, msg = code_and_message(stub.Reset, pb.ResetRequest(benchmark=SMALL), timeout=60, metadata=alice)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "client 'alice'" in msg, msg
        assert stub.Reset(pb.ResetRequest(benchmark=SMALL), timeout=60, metadata=bob).session_id


def test_the_python_client_sends_the_token_from_the_environment(token_server, monkeypatch):
    monkeypatch.setenv("MLIR_RL_TOKEN", TOKENS["bob"])
    assert mlir_rl.version(server=token_server.address)["protocol_version"] == "v1"
    monkeypatch.setenv("MLIR_RL_TOKEN", "wrong-token-0123456789")
    with pytest.raises(mlir_rl.MlirRlError, match="not one this server accepts"):
        mlir_rl.version(server=token_server.address)


def test_tokens_file_errors_are_precise(tmp_path):
    short = tmp_path / "short"
    short.write_text("carol shorty\n")
    out = subprocess.run([str(server_binary()), "--port=0", f"--auth_tokens_file={short}"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "shorter than 16 characters" in out.stdout + out.stderr


def test_a_network_address_without_credentials_is_refused():
    out = subprocess.run([str(server_binary()), "--address=0.0.0.0", "--port=0"], capture_output=True, text=True,
                         timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "refusing to serve 0.0.0.0 without authentication" in text, text


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate (CN trainer-1), made now."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=mlir-rl test CA",
            cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, subject, ext in (("server", "/CN=localhost", ["-extfile", "server.ext"]),
                               ("client", "/CN=trainer-1", [])):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", *ext, cwd=d)
    return d


def tls_channel(address: str, pki: Path, client_cert: bool):
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(), (pki / "client.key").read_bytes() if client_cert else None,
        (pki / "client.pem").read_bytes() if client_cert else None)
    return grpc.secure_channel(address, credentials)


def test_tls_with_client_certificates(certificates):
    pki = certificates
    proc = start_server(extra_args=[f"--tls_cert={pki / 'server.pem'}", f"--tls_key={pki / 'server.key'}",
                                    f"--tls_client_ca={pki / 'ca.pem'}", "--max_sessions_per_client=1"])
    try:
        # Plaintext to a TLS server fails; TLS without a client certificate fails the handshake.
        with grpc.insecure_channel(proc.address) as plain:
            code, _ = code_and_message(rpc.MlirRlEnvStub(plain).GetVersion, pb.GetVersionRequest(), timeout=5)
            assert code == grpc.StatusCode.UNAVAILABLE
        with tls_channel(proc.address, pki, client_cert=False) as anonymous:
            code, _ = code_and_message(rpc.MlirRlEnvStub(anonymous).GetVersion, pb.GetVersionRequest(), timeout=5)
            assert code == grpc.StatusCode.UNAVAILABLE
        with tls_channel(proc.address, pki, client_cert=True) as channel:
            stub = rpc.MlirRlEnvStub(channel)
            assert stub.GetVersion(pb.GetVersionRequest(), timeout=10).protocol_version == "v1"
            stub.Reset(pb.ResetRequest(benchmark=SMALL), timeout=60)
            # The certificate's name is the client's identity.
            code, msg = code_and_message(stub.Reset, pb.ResetRequest(benchmark=SMALL), timeout=60)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "trainer-1" in msg, msg
        # The Python client: MLIR_RL_TLS_CA / _CERT / _KEY.
        env = dict(os.environ, MLIR_RL_TLS_CA=str(pki / "ca.pem"), MLIR_RL_TLS_CERT=str(pki / "client.pem"),
                   MLIR_RL_TLS_KEY=str(pki / "client.key"))
        out = subprocess.run(["/usr/bin/python3", "-c", f"import mlir_rl; print(mlir_rl.version("
                              f"server={proc.address!r})['protocol_version'])"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.stdout.strip() == "v1", out.stderr
    finally:
        proc.stop()


def test_workers_run_sandboxed():
    runner = server_binary().parent / "mlir-rl-runner"
    out = subprocess.run([str(runner), "--sandbox_selftest", f"--parent_pid={os.getpid()}"], capture_output=True,
                         text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stdout + out.stderr
    assert lines[0].startswith("sandbox: ") and "seccomp allow-list" in lines[0], lines[0]
    attempts = dict(line.split(": ", 1) for line in lines[1:])
    for what in ("socket(AF_INET)", "socket(AF_UNIX)", "create a file in /tmp", "open /dev/null for writing", "fork",
                 "execve", "signal the parent", "ptrace the parent", "setuid(0)", "unlink"):
        assert attempts[what].startswith("refused"), (what, attempts[what])
    assert attempts["read /proc/self/status (must stay allowed)"] == "ALLOWED"
    if os.geteuid() == 0:
        assert "own unprivileged user" in lines[0] and "no network (own namespace)" in lines[0], lines[0]


def test_metrics_endpoint_serves_prometheus_text():
    port = free_port()
    proc = start_server(extra_args=[f"--metrics_port={port}"])
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = rpc.MlirRlEnvStub(channel)
            sid = stub.Reset(pb.ResetRequest(benchmark=SMALL), timeout=60).session_id
            stub.Step(pb.StepRequest(session_id=sid, actions=[pb.Action(values=[0] * 14)]), timeout=120)
            reply = stub.GetMetrics(pb.GetMetricsRequest(), timeout=10)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for needle in ("# TYPE mlir_rl_sessions gauge", "mlir_rl_sessions 1", "# TYPE mlir_rl_call_seconds histogram",
                       'mlir_rl_calls_total{method="Reset",code="OK"} 1', "mlir_rl_evaluations_total 1",
                       'mlir_rl_workers{state="busy"} 0', "mlir_rl_resident_bytes"):
            assert needle in text, needle
        assert 'mlir_rl_calls_total{method="Step",code="OK"}' in reply.prometheus_text
        assert reply.values["mlir_rl_sessions"] == 1
        assert reply.values['mlir_rl_call_seconds_count{method="Reset"}'] >= 1
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        assert err.value.code == 404
    finally:
        proc.stop()
