"""Fixtures of the Python end-to-end tests.

Run from the repository root with Debian's interpreter:  /usr/bin/python3 -m pytest tests/e2e

``server`` starts the real server binary (``build/bin/mlir-rl-server``, or ``$MLIR_RL_SERVER_BIN``) once per test
session on a free port. Without the binary the tests that need it are skipped, unless ``MLIR_RL_REQUIRE_SERVER=1``
makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import pytest

# Servers the tests start keep evaluations in memory only (the server's default persists them under ~/.cache/mlir-rl:
# a test expecting a fresh measurement must not find one from an earlier run). Tests of persistence pass --cache_dir.
os.environ["MLIR_RL_CACHE_DIR"] = ""

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO_ROOT / "clients" / "python"
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))


def _ensure_stubs() -> None:
    """Generates mlir_rl/v1/env_pb2*.py (as the build does) when they are missing, so the tests run without a build."""
    out = CLIENT_DIR / "mlir_rl" / "v1"
    if (out / "env_pb2.py").exists() and (out / "env_pb2_grpc.py").exists():
        return
    protoc = shutil.which("protoc")
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    if protoc is None or not Path(plugin).exists():
        return  # importing mlir_rl then explains what is missing
    subprocess.run([protoc, "-I", "proto", f"--python_out={CLIENT_DIR}", f"--grpc_python_out={CLIENT_DIR}",
                    f"--plugin=protoc-gen-grpc_python={plugin}", "proto/mlir_rl/v1/env.proto"],
                   cwd=REPO_ROOT, check=True)


_ensure_stubs()

def pytest_configure(config):
    config.addinivalue_line("markers", "server_args(*flags): command-line flags of a test's private server")


SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 10.0


def server_binary() -> Path:
    return Path(os.environ.get("MLIR_RL_SERVER_BIN", REPO_ROOT / "build" / "bin" / "mlir-rl-server"))


class ServerProcess:
    """A server started with ``--port=<port> --port_file=<file>``; ``address`` once it listens."""

    def __init__(self, binary: Path, port: int = 0, extra_args: Optional[List[str]] = None):
        self.workdir = Path(tempfile.mkdtemp(prefix="mlir-rl-e2e-"))
        self.port_file = self.workdir / "port"
        self.log_path = self.workdir / "server.log"
        self._log = open(self.log_path, "wb")
        args = [str(binary), f"--port={port}", f"--port_file={self.port_file}"] + list(extra_args or [])
        self.proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.port = self._wait_for_port()
        self.address = f"127.0.0.1:{self.port}"

    def log_tail(self, n: int = 40) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._cleanup_files()
                raise RuntimeError(f"the server exited with status {self.proc.returncode} before listening:\n"
                                   f"{self.log_tail()}")
            try:
                text = self.port_file.read_text().strip()
            except OSError:
                text = ""
            if text:
                try:
                    return int(text)
                except ValueError:
                    pass  # still being written
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not write {self.port_file} within {SERVER_START_TIMEOUT:.0f} s:\n"
                           f"{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._cleanup_files()
        return self.proc.returncode

    def _cleanup_files(self) -> None:
        if not self._log.closed:
            self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_server(port: int = 0, extra_args: Optional[List[str]] = None) -> ServerProcess:
    """Starts a server (skips the test when the binary does not exist and the server is not required)."""
    binary = server_binary()
    if not binary.exists():
        message = f"server binary {binary} not found (build it or set MLIR_RL_SERVER_BIN)"
        if os.environ.get("MLIR_RL_REQUIRE_SERVER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return ServerProcess(binary, port=port, extra_args=extra_args)


@pytest.fixture(scope="session")
def server_process() -> ServerProcess:
    proc = start_server()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest) -> str:
    """``127.0.0.1:<port>`` of a server shared by the whole test session: ``$MLIR_RL_SERVER_ADDRESS`` when set (a
    test session started by another one, see :func:`run_pytest_under_gymnasium`), else a server started here."""
    address = os.environ.get("MLIR_RL_SERVER_ADDRESS")
    if address:
        return address
    return request.getfixturevalue("server_process").address


# ---------------------------------------------------------------------------------------------------------------
# Gymnasium: vendored versions beside the repository (not part of it; see ../shared/vendor/README.md)

VENDOR_PYTHON = REPO_ROOT.parent / "shared" / "vendor" / "python"
GYMNASIUM_VERSIONS = ("1.3.0", "0.29.1")


def gymnasium_pythonpath(version: str) -> str:
    """PYTHONPATH that imports the vendored Gymnasium ``version`` and the client; skips the test when the vendored
    sources, or the Debian packages Gymnasium needs, are absent."""
    gym_dir = VENDOR_PYTHON / f"gymnasium-{version}"
    notifications = VENDOR_PYTHON / "farama-notifications"
    if not (gym_dir / "gymnasium").is_dir() or not notifications.is_dir():
        pytest.skip(f"vendored Gymnasium {version} not found at {gym_dir} (and {notifications}): these checks need "
                    f"the third-party sources in ../shared/vendor/python beside the repository")
    for module, package in (("cloudpickle", "python3-cloudpickle"), ("typing_extensions", "python3-typing-extensions")):
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"Gymnasium needs the Debian package {package} (bash scripts/install-deps.sh)")
    return os.pathsep.join([str(gym_dir), str(notifications), str(CLIENT_DIR)])


def run_pytest_under_gymnasium(version: str, server: str, test_files: List[str],
                               timeout: float = 300.0) -> subprocess.CompletedProcess:
    """Runs ``test_files`` (paths relative to tests/e2e) in a new pytest process that imports the vendored
    Gymnasium ``version`` (one Gymnasium per process) against the server at ``server``. The tests there must
    not skip for want of gymnasium: ``MLIR_RL_REQUIRE_GYMNASIUM`` says so."""
    env = dict(os.environ, PYTHONPATH=gymnasium_pythonpath(version), MLIR_RL_SERVER_ADDRESS=server,
               MLIR_RL_REQUIRE_GYMNASIUM=version)
    here = Path(__file__).resolve().parent
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           *[str(here / f) for f in test_files]],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def import_gymnasium():
    """``gymnasium`` for tests that need it: skipped when it is not importable, unless this process was started by
    :func:`run_pytest_under_gymnasium` (then it must be importable, at the version asked for)."""
    required = os.environ.get("MLIR_RL_REQUIRE_GYMNASIUM")
    if not required:
        return pytest.importorskip("gymnasium", reason="gymnasium is not importable here; "
                                   "test_gymnasium_versions.py runs these tests under each vendored Gymnasium")
    import gymnasium

    assert gymnasium.__version__ == required, (gymnasium.__version__, required, gymnasium.__file__)
    return gymnasium


@pytest.fixture(scope="module")
def stub(server: str):
    """A raw gRPC stub (mlir_rl.v1.MlirRlEnv) on the shared server."""
    import grpc
    from mlir_rl.v1 import env_pb2_grpc

    channel = grpc.insecure_channel(server)
    yield env_pb2_grpc.MlirRlEnvStub(channel)
    channel.close()
