"""The local server of clients given no server address (mlir_rl.local_server): finding the executable, start-up
errors, sharing, stopping with the last environment, at interpreter exit, and after the client is SIGKILLed.

Processes are checked in /proc: a process counts as gone when its pid no longer exists, belongs to another process
(start time), or is a zombie (nothing may reap orphans in a container)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

import mlir_rl
from mlir_rl import local_server

from conftest import CLIENT_DIR, server_binary

MATMUL = "benchmark://nn-ops/matmul_64x64x64_f32"
GONE_WITHIN = 10.0  # seconds for a process to disappear after its owner is gone


# ---------------------------------------------------------------------------------------------------------------
# /proc helpers


def proc_stat(pid: int) -> Optional[Tuple[str, int, int]]:
    """(state, ppid, start time) of ``pid``, or None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def all_stats() -> Dict[int, Tuple[str, int, int]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = proc_stat(int(entry))
            if s is not None:
                out[int(entry)] = s
    return out


def descendants(pid: int) -> List[int]:
    stats = all_stats()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (_, ppid, _) in stats.items() if ppid == parent]
        found += children
        frontier += children
    return found


def identity(pid: int) -> Tuple[int, int]:
    s = proc_stat(pid)
    assert s is not None, f"process {pid} does not exist"
    return pid, s[2]


def alive(ident: Tuple[int, int]) -> bool:
    s = proc_stat(ident[0])
    return s is not None and s[2] == ident[1] and s[0] not in ("Z", "X")


def exe_name(pid: int) -> str:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:  # e.g. a sandboxed worker's exe link is not readable: its command name says the same
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""


def local_servers_of_this_process() -> List[int]:
    """Servers started by mlir_rl.local_server under this process (not conftest's, whose port file is elsewhere)."""
    out = []
    for p in descendants(os.getpid()):
        try:
            argv = Path(f"/proc/{p}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if exe_name(p) == "mlir-rl-server" and any(a.startswith("--port_file=") and "/mlir-rl-server-" in a
                                                      for a in argv):
            out.append(p)
    return out


def wait_until_gone(idents: List[Tuple[int, int]], timeout: float = GONE_WITHIN) -> List[Tuple[int, int]]:
    deadline = time.monotonic() + timeout
    while True:
        left = [i for i in idents if alive(i)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def server_bin(monkeypatch) -> Path:
    """The real server executable, for the local server to find through $MLIR_RL_SERVER_BIN; no MLIR_RL_SERVER."""
    binary = server_binary()
    if not binary.exists():
        message = f"server binary {binary} not found (build it or set MLIR_RL_SERVER_BIN)"
        if os.environ.get("MLIR_RL_REQUIRE_SERVER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("MLIR_RL_SERVER_BIN", str(binary.resolve()))
    monkeypatch.delenv("MLIR_RL_SERVER", raising=False)
    monkeypatch.delenv("MLIR_RL_SERVER_ARGS", raising=False)
    monkeypatch.setenv("MLIR_RL_CACHE_DIR", "")  # memory only (unset, the server would persist under ~/.cache)
    return binary.resolve()


@pytest.fixture(autouse=True)
def no_shared_server_left():
    """Every test leaves the process without a shared local server (all its environments closed)."""
    yield
    left = local_server._shared
    if left is not None:
        left.stop()
        local_server._shared = None
        pytest.fail(f"the test left the shared local server running: {left}")


def fake_server(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mlir-rl-server"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run_episode(env) -> float:
    """NO_TRANSFORMATION until the episode ends (the terminal step evaluates the schedule in a worker)."""
    env.reset(seed=0)
    action = np.zeros(len(env.nvec), dtype=np.int64)
    total = 0.0
    for _ in range(50):
        _, reward, terminated, truncated, _ = env.step(action)
        total += reward
        if terminated or truncated:
            return total
    raise AssertionError("the episode did not end")


# ---------------------------------------------------------------------------------------------------------------
# finding the executable, start-up errors (no real server needed)


def test_not_found_names_every_place_looked_at(tmp_path):
    # A build directory with nothing in it hides the checkout's own build (when the tests run from a built checkout).
    empty_build = tmp_path / "no-build"
    environ = {"PATH": str(tmp_path), "MLIR_RL_BUILD_DIR": str(empty_build)}
    with pytest.raises(local_server.ServerNotFoundError) as info:
        local_server.find_server_binary(environ)
    message = str(info.value)
    assert "$MLIR_RL_SERVER_BIN (not set)" in message
    assert str(local_server._PACKAGE_DIR / "bin" / "mlir-rl-server") in message
    if local_server._checkout_root() is not None:  # running from the repository
        assert str(empty_build / "bin" / "mlir-rl-server") in message
    assert f"PATH={tmp_path}" in message
    assert "MLIR_RL_SERVER=host:port" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, mlir_rl.MlirRlError)


def test_found_on_path_and_explicit_binary_wins(tmp_path):
    on_path = fake_server(tmp_path, "exit 0")
    if all(not p.exists() for p, _ in local_server._search_places({})):
        assert local_server.find_server_binary({"PATH": str(tmp_path)}) == on_path
    other = tmp_path / "other"
    other.mkdir()
    explicit = fake_server(other, "exit 0")
    assert local_server.find_server_binary({"PATH": str(tmp_path), "MLIR_RL_SERVER_BIN": str(explicit)}) == explicit
    # A wrong $MLIR_RL_SERVER_BIN is an error, not a reason to look elsewhere.
    missing = tmp_path / "nothing-here"
    with pytest.raises(local_server.ServerNotFoundError, match=f"MLIR_RL_SERVER_BIN={missing} does not exist"):
        local_server.find_server_binary({"PATH": str(tmp_path), "MLIR_RL_SERVER_BIN": str(missing)})
    not_executable = tmp_path / "plain"
    not_executable.write_text("")
    with pytest.raises(local_server.ServerNotFoundError, match="is not an executable file"):
        local_server.find_server_binary({"MLIR_RL_SERVER_BIN": str(not_executable)})


def test_make_without_any_server_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.delenv("MLIR_RL_SERVER", raising=False)
    monkeypatch.setenv("MLIR_RL_SERVER_BIN", str(tmp_path / "no-server"))
    with pytest.raises(local_server.ServerNotFoundError, match="no-server does not exist"):
        mlir_rl.make(MATMUL)
    with pytest.raises(local_server.ServerNotFoundError):
        mlir_rl.list_benchmarks()


def test_server_exiting_early_shows_its_output(tmp_path):
    binary = fake_server(tmp_path, 'echo "starting with $*"; echo "fatal: no benchmarks here" >&2; exit 3')
    with pytest.raises(local_server.ServerStartError) as info:
        local_server.LocalServer(binary, ["--extra_flag=1"])
    message = str(info.value)
    assert "exited with status 3 before listening" in message
    assert "fatal: no benchmarks here" in message
    assert "--port=0" in message and "--extra_flag=1" in message  # the command line, and the output echoing it
    assert not list(tmp_path.glob("mlir-rl-server-*"))


def test_server_not_listening_in_time_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    binary = fake_server(tmp_path, f'echo $$ > {pid_file}; echo "still loading"; exec sleep 60')
    start = time.monotonic()
    with pytest.raises(local_server.ServerStartError) as info:
        local_server.LocalServer(binary, start_timeout=1.0)
    assert time.monotonic() - start < 5
    assert "did not listen within 1 s" in str(info.value) and "still loading" in str(info.value)
    pid = int(pid_file.read_text())
    assert proc_stat(pid) is None  # stopped and reaped


# ---------------------------------------------------------------------------------------------------------------
# the shared local server, in this process


def shared_pid() -> int:
    assert local_server._shared is not None, "no shared local server"
    return local_server._shared.pid


def test_make_without_server_starts_a_shared_local_server_and_stops_it_with_the_last_env(server_bin):
    start = time.monotonic()
    env = mlir_rl.make(MATMUL)
    started_in = time.monotonic() - start
    assert started_in < 10, f"make() with a local server took {started_in:.1f} s"
    pid = shared_pid()
    assert proc_stat(pid)[1] == os.getpid(), "the local server is not a child of this process"
    assert Path(os.readlink(f"/proc/{pid}/exe")) == server_bin
    assert isinstance(env, mlir_rl.MlirRlEnv)
    assert env.server == local_server._shared.address
    log_dir = local_server._shared.log_path.parent
    assert log_dir.is_dir()
    assert run_episode(env) == pytest.approx(run_episode(env))  # twice: the second evaluation is cached

    # Everything else without an address shares it: no second server process.
    assert MATMUL in [b["uri"] for b in mlir_rl.list_benchmarks()]
    assert mlir_rl.version()["protocol_version"] == "v1"
    assert "matmul" in mlir_rl.generator_families()
    envs = mlir_rl.make_vec(2, MATMUL)
    assert envs.envs[0].server == env.server
    envs.reset(seed=0)
    fork = env.fork()
    assert local_servers_of_this_process() == [pid]
    family = [identity(pid)] + [identity(p) for p in descendants(pid)]
    assert any(exe_name(p) == "mlir-rl-runner" for p, _ in family), "no evaluation worker ran"

    envs.close()
    env.close()
    assert alive(family[0]), "stopped while a fork still uses it"
    fork.observe()
    fork.close()  # the last user
    assert not alive(family[0]), "the server still runs after its last environment closed"
    assert wait_until_gone(family) == [], "processes of the local server survived it"
    assert not log_dir.exists()
    assert local_server._shared is None

    # The next make() starts a new one.
    with mlir_rl.make(MATMUL) as again:
        again.reset(seed=0)
        assert shared_pid() != pid
        second = identity(shared_pid())
    assert not alive(second)


def test_a_lease_keeps_the_shared_server_between_environments(server_bin):
    with local_server.acquire() as lease:
        pid = lease.server.pid
        with mlir_rl.make(MATMUL) as env:
            assert env.server == lease.address
        assert alive(identity(pid)) and local_server._shared is lease.server
        with mlir_rl.make(MATMUL) as env:
            assert env.server == lease.address
        ident = identity(pid)
    assert lease.released and not alive(ident)


def test_a_dead_local_server_is_replaced_and_reported(server_bin, caplog):
    env = mlir_rl.make(MATMUL)
    env.reset(seed=0)
    dead = local_server._shared
    os.kill(dead.pid, signal.SIGKILL)
    dead._proc.wait(timeout=10)
    with caplog.at_level("WARNING", logger="mlir_rl"), mlir_rl.make(MATMUL) as other:
        other.reset(seed=0)
        assert local_server._shared is not dead and local_server._shared.running
    assert any("exited with signal SIGKILL; starting another" in r.getMessage() for r in caplog.records)
    assert local_server._shared is None  # the new one stopped with its environment
    env.close()  # the dead one's last user: its files go
    assert not dead.log_path.parent.exists()


def test_an_env_closed_by_the_garbage_collector_inside_acquire_does_not_deadlock(server_bin):
    env = mlir_rl.make(MATMUL)
    ident = identity(shared_pid())

    def close_under_the_lock():
        with local_server._shared_lock:  # as when a collection during acquire() runs an env's __del__
            env.close()

    t = threading.Thread(target=close_under_the_lock, daemon=True)
    t.start()
    t.join(15)
    assert not t.is_alive(), "closing the last environment deadlocked on the shared-server lock"
    assert not alive(ident)


def test_failed_make_releases_the_server(server_bin):
    with pytest.raises(mlir_rl.InvalidArgumentError):
        mlir_rl.make(MATMUL, reward_mode="sometimes")
    assert local_server._shared is None


def test_server_started_from_a_thread_outlives_the_thread(server_bin):
    made = []
    t = threading.Thread(target=lambda: made.append(mlir_rl.make(MATMUL)))
    t.start()
    t.join()
    env = made[0]
    try:
        time.sleep(0.5)  # PR_SET_PDEATHSIG fires when the thread that forked the child ends
        ident = identity(shared_pid())
        assert alive(ident)
        env.reset(seed=0)
    finally:
        env.close()
    assert not alive(ident)


def test_mlir_rl_server_variable_and_explicit_address(server_bin, server, monkeypatch):
    monkeypatch.setenv("MLIR_RL_SERVER", server)
    with mlir_rl.make(MATMUL) as env:
        assert env.server == server
        assert type(env) is mlir_rl.MlirRlEnv
        env.reset(seed=0)
    assert mlir_rl.version()["protocol_version"] == "v1"
    with mlir_rl.make_vec(2, MATMUL) as envs:
        assert envs.envs[0].server == server
    assert local_server._shared is None
    # An explicit address wins over the variable.
    monkeypatch.setenv("MLIR_RL_SERVER", "127.0.0.1:1")
    with mlir_rl.make(MATMUL, server=server) as env:
        env.reset(seed=0)


def test_flags_from_the_environment(server_bin, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLIR_RL_CACHE_DIR", str(cache))
    monkeypatch.setenv("MLIR_RL_SERVER_ARGS", "--max_sessions=1 --log_level=debug")
    with mlir_rl.make(MATMUL) as env:
        env.reset(seed=0)
        argv = Path(f"/proc/{shared_pid()}/cmdline").read_text().split("\0")
        assert f"--cache_dir={cache}" in argv and "--max_sessions=1" in argv and "--log_level=debug" in argv
        assert cache.is_dir()
        with mlir_rl.make(MATMUL) as second, pytest.raises(mlir_rl.ResourceExhaustedError):
            second.reset(seed=0)


def test_local_server_flag_errors_show_the_server_output(server_bin):
    with pytest.raises(local_server.ServerStartError) as info:
        local_server.LocalServer(args=["--no_such_flag=1"])
    message = str(info.value)
    assert "exited with status" in message and "Its output ends with:" in message
    assert "no_such_flag" in message.split("Its output ends with:")[1]


# ---------------------------------------------------------------------------------------------------------------
# the client process ends: normally, or killed


CLIENT = textwrap.dedent("""\
    import json, os, sys, time
    import numpy as np
    import mlir_rl
    from mlir_rl import local_server
    env = mlir_rl.make({matmul!r})
    env.reset(seed=0)
    done = False
    while not done:  # to the end: the terminal step starts evaluation workers
        _, _, terminated, truncated, _ = env.step(np.zeros(len(env.nvec), dtype=np.int64))
        done = terminated or truncated
    print(json.dumps({{"server": local_server._shared.pid, "log_dir": str(local_server._shared.log_path.parent)}}),
          flush=True)
    if sys.argv[1] == "wait":
        time.sleep(120)
    """).format(matmul=MATMUL)


def start_client(mode: str, tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = dict(os.environ, PYTHONPATH=str(CLIENT_DIR))
    return subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)


def read_report(client: subprocess.Popen) -> dict:
    line = client.stdout.readline()
    if not line:
        client.kill()
        raise AssertionError(f"the client printed nothing; stderr:\n{client.stderr.read()}")
    return json.loads(line)


def server_family(report: dict, client_pid: int) -> List[Tuple[int, int]]:
    pid = report["server"]
    assert proc_stat(pid)[1] == client_pid, "the local server is not a child of the client"
    # Workers are started and replaced by the pool's spawner thread: one may be between processes for a moment (seen
    # once in a full-suite run), so look for a while before concluding that none runs.
    deadline = time.monotonic() + 10
    while True:
        family = [identity(pid)] + [identity(p) for p in descendants(pid)]
        if any(exe_name(p) == "mlir-rl-runner" for p, _ in family) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert any(exe_name(p) == "mlir-rl-runner" for p, _ in family), "no evaluation worker ran"
    return family


def test_local_server_stops_when_the_interpreter_exits(server_bin, tmp_path):
    client = start_client("exit", tmp_path)
    try:
        report = read_report(client)
        family = server_family(report, client.pid)
        _, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
    finally:
        if client.poll() is None:
            client.kill()
    assert wait_until_gone(family, timeout=1.0) == [], "processes of the local server survived the client's exit"
    assert not Path(report["log_dir"]).exists()


def test_no_server_process_survives_a_sigkilled_client(server_bin, tmp_path):
    client = start_client("wait", tmp_path)
    try:
        report = read_report(client)
        family = server_family(report, client.pid)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
    shutil.rmtree(report["log_dir"], ignore_errors=True)  # nobody is left to remove it
    left = wait_until_gone(family)
    assert left == [], f"still running {GONE_WITHIN:g} s after the client was SIGKILLed: " \
                       f"{[(p, exe_name(p)) for p, _ in left]}"
