"""The server used when no server address is given: a local ``mlir-rl-server`` shared by the process.

``mlir_rl.make``, ``make_vec``, ``list_benchmarks``, ``generator_families`` and ``version`` called without
``server=`` connect to ``$MLIR_RL_SERVER`` (``host:port``) when it is set. Otherwise they use a server of their own:
one ``mlir-rl-server`` per Python process, started on a free loopback port at first use (``--port=0
--port_file=...``), shared by every environment of the process, and stopped when the last of them is closed, or
when the process exits. It never outlives the process, even one killed with SIGKILL: the kernel kills it when the
process dies (``PR_SET_PDEATHSIG``), and the server's evaluation workers die with the server the same way.

The executable is the first that exists of:

1. ``$MLIR_RL_SERVER_BIN`` (when set, nothing else is tried);
2. ``mlir_rl/bin/mlir-rl-server`` (a wheel built with the binaries bundled);
3. ``<build>/bin/mlir-rl-server`` of the checkout a wheel was built from (recorded at build time);
4. ``<checkout>/build/bin/mlir-rl-server`` when the package is imported from the repository (``$MLIR_RL_BUILD_DIR``
   instead of ``build`` when set);
5. ``mlir-rl-server`` on ``PATH``.

It runs with ``--address=127.0.0.1 --port=0 --port_file=<temporary file>``, plus ``--cache_dir=$MLIR_RL_CACHE_DIR``
when that is set, plus ``$MLIR_RL_SERVER_ARGS`` (split like a shell command line). Its output goes to a log file in a
temporary directory (``LocalServer.log_path``), removed when the server stops.

Explicit use: ``with mlir_rl.local_server.acquire() as lease: ...`` keeps the shared server running across
environments that are closed and made again (``lease.address``); ``LocalServer()`` starts a private one.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .env import MlirRlEnv
from .errors import MlirRlError
from .vector import MlirRlVectorEnv

__all__ = [
    "LocalServer", "ServerLease", "ServerStartError", "ServerNotFoundError", "acquire", "find_server_binary",
    "resolve", "address", "open_env", "LocalServerEnv", "LocalServerVectorEnv",
]

logger = logging.getLogger("mlir_rl")

ENV_SERVER = "MLIR_RL_SERVER"
ENV_SERVER_BIN = "MLIR_RL_SERVER_BIN"
ENV_SERVER_ARGS = "MLIR_RL_SERVER_ARGS"
ENV_CACHE_DIR = "MLIR_RL_CACHE_DIR"
ENV_BUILD_DIR = "MLIR_RL_BUILD_DIR"
SERVER_NAME = "mlir-rl-server"

START_TIMEOUT = 60.0  # the server listens within ~50-100 ms here; a loaded machine may take longer
STOP_TIMEOUT = 10.0  # SIGTERM gives in-flight calls 5 s; SIGKILL after this
LOG_TAIL_LINES = 30

_PACKAGE_DIR = Path(__file__).resolve().parent


class ServerStartError(MlirRlError, RuntimeError):
    """The local server could not be started (it exited early, or did not listen in time)."""


class ServerNotFoundError(ServerStartError, FileNotFoundError):
    """No ``mlir-rl-server`` executable was found; the message says where the client looked."""


# ---------------------------------------------------------------------------------------------------------------
# Finding the executable


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _checkout_root() -> Optional[Path]:
    """The repository root when this package is imported from a checkout (clients/python/mlir_rl)."""
    root = _PACKAGE_DIR.parents[2]
    if (root / "proto" / "mlir_rl" / "v1" / "env.proto").is_file() and \
            (root / "clients" / "python" / "mlir_rl") == _PACKAGE_DIR:
        return root
    return None


def _recorded_bin_dirs() -> List[str]:
    """The build's bin/ a wheel was built from a checkout with (``mlir_rl/_build_info.py``, written by the build
    backend; absent in the source tree)."""
    try:
        from . import _build_info  # type: ignore[attr-defined]
    except ImportError:
        return []
    return list(getattr(_build_info, "SERVER_BIN_DIRS", []))


def _bundled_binary() -> Path:
    return _PACKAGE_DIR / "bin" / SERVER_NAME


def _search_places(environ: Mapping[str, str]) -> List[Tuple[Path, str]]:
    """Candidate paths after ``$MLIR_RL_SERVER_BIN`` and before ``PATH``, each with what it is."""
    places = [(_bundled_binary(), "bundled with the package")]
    places += [(Path(d) / SERVER_NAME, "the build this package was installed from") for d in _recorded_bin_dirs()]
    root = _checkout_root()
    if root is not None:
        build = Path(environ.get(ENV_BUILD_DIR) or "build")
        places.append(((root / build).resolve() / "bin" / SERVER_NAME, "this checkout's build"))
    return places


def find_server_binary(environ: Optional[Mapping[str, str]] = None) -> Path:
    """The ``mlir-rl-server`` executable the local server runs (see the module's documentation for the order).

    Raises :class:`ServerNotFoundError` naming every place looked at.
    """
    environ = os.environ if environ is None else environ
    explicit = environ.get(ENV_SERVER_BIN)
    if explicit:
        path = Path(explicit).expanduser()
        if _is_executable(path):
            return path
        problem = "does not exist" if not path.exists() else "is not an executable file"
        raise ServerNotFoundError(f"${ENV_SERVER_BIN}={explicit} {problem}")
    looked = [f"${ENV_SERVER_BIN} (not set)"]
    for path, what in _search_places(environ):
        if _is_executable(path):
            return path
        looked.append(f"{path} ({what})")
    search_path = environ.get("PATH", os.defpath)
    found = shutil.which(SERVER_NAME, path=search_path)
    if found:
        return Path(found)
    looked.append(f"PATH={search_path}")
    raise ServerNotFoundError(
        f"{SERVER_NAME} not found. Looked at:\n  " + "\n  ".join(looked) + "\n"
        f"Build it (bash scripts/build.sh), set ${ENV_SERVER_BIN} to its path, or use a running server: "
        f"server='host:port' or ${ENV_SERVER}=host:port.")


# ---------------------------------------------------------------------------------------------------------------
# Starting it so that it dies with this process


# Runs in a fresh interpreter between fork and the server's exec: asks the kernel to SIGKILL this process when its
# parent dies (kept across exec), checks that the parent did not die before that, then becomes the server. A small
# exec'd program rather than a preexec_fn: Python code between fork and exec in a process with gRPC's threads can
# deadlock, and without a preexec_fn subprocess may use vfork.
_EXEC_WITH_PDEATHSIG = """\
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
    sys.exit("mlir_rl: prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[1]):
    sys.exit("mlir_rl: the client process is gone; not starting the server")
os.execv(sys.argv[2], sys.argv[2:])
"""


class _Spawner:
    """Starts processes from one long-lived daemon thread.

    The kernel sends the parent-death signal when the *thread* that forked the child ends, not the process: a server
    started from a short-lived thread (a worker thread, a thread pool) would be killed with that thread. This thread
    ends only with the process.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._requests: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="mlir-rl-server-spawner", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            future, args, kwargs = self._requests.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(subprocess.Popen(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
        future: "concurrent.futures.Future[subprocess.Popen]" = concurrent.futures.Future()
        self._requests.put((future, args, kwargs))
        return future.result()


_spawner_lock = threading.Lock()
_spawner: Optional[_Spawner] = None


def _get_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():
            _spawner = _Spawner()
        return _spawner


def _describe_status(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


_running: "set[LocalServer]" = set()  # servers this process started and has not stopped (stopped at exit)
# Reentrant locks: an environment collected by the garbage collector closes itself (releasing its lease, maybe
# stopping a server) in whatever thread allocates at that moment, possibly one already holding the lock.
_running_lock = threading.RLock()


class LocalServer:
    """An ``mlir-rl-server`` process on a free loopback port, started by this process and never outliving it.

    Args:
        binary: the executable (default: :func:`find_server_binary`).
        args: more server flags, after the ones from the environment (``$MLIR_RL_CACHE_DIR``,
            ``$MLIR_RL_SERVER_ARGS``).
        start_timeout: seconds to wait for the server to listen.

    ``address`` is ``127.0.0.1:<port>``. ``stop()`` (or leaving a ``with`` block) stops it; so does the end of the
    process. Raises :class:`ServerStartError` (with the end of the server's log) when it exits before listening or
    does not listen in time, :class:`ServerNotFoundError` when there is no executable.
    """

    def __init__(self, binary: Optional[os.PathLike] = None, args: Sequence[str] = (), *,
                 start_timeout: float = START_TIMEOUT, environ: Optional[Mapping[str, str]] = None):
        environ = os.environ if environ is None else environ
        self.binary = Path(binary) if binary is not None else find_server_binary(environ)
        if not sys.executable:
            raise ServerStartError("cannot start a local server: sys.executable is not set (it runs a small "
                                   "Python program that ties the server's life to this process)")
        self._owner_pid = os.getpid()
        self._stop_lock = threading.RLock()
        self._stopped = False
        self._leases = 0  # for the shared server (acquire / ServerLease)
        self.port = 0
        self.address = ""
        self._dir = Path(tempfile.mkdtemp(prefix="mlir-rl-server-"))
        self.log_path = self._dir / "server.log"
        port_file = self._dir / "port"
        flags = ["--address=127.0.0.1", "--port=0", f"--port_file={port_file}"]
        if self.binary.resolve() == _bundled_binary().resolve() and (_PACKAGE_DIR / "benchmarks").is_dir():
            flags.append(f"--benchmarks_dir={_PACKAGE_DIR / 'benchmarks'}")
        if environ.get(ENV_CACHE_DIR):
            flags.append(f"--cache_dir={environ[ENV_CACHE_DIR]}")
        flags += shlex.split(environ.get(ENV_SERVER_ARGS, "")) + [str(a) for a in args]
        self.args: List[str] = flags
        try:
            with open(self.log_path, "wb") as log:
                self._proc = _get_spawner().popen(
                    [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), str(self.binary),
                     *flags],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
                    # Its own process group: a Ctrl-C in the terminal interrupts the agent, not its server.
                    start_new_session=True)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        with _running_lock:
            _running.add(self)
        try:
            self.port = self._wait_for_port(port_file, start_timeout)
        except BaseException:
            self.stop()
            raise
        self.address = f"127.0.0.1:{self.port}"
        logger.info("started %s (pid %d) on %s, log %s", self.binary, self.pid, self.address, self.log_path)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's output ("" once stopped)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str) -> ServerStartError:
        tail = self.log_tail()
        command = " ".join(shlex.quote(a) for a in [str(self.binary), *self.args])
        return ServerStartError(f"the local mlir-rl-server {what}.\nCommand: {command}\n"
                                + (f"Its output ends with:\n{tail}" if tail else "It printed nothing."))

    def _wait_for_port(self, port_file: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._failure(f"exited with {_describe_status(code)} before listening")
            try:
                text = port_file.read_text().strip()  # written whole (the server renames it into place)
            except FileNotFoundError:
                text = ""
            if text:
                return int(text)
            if time.monotonic() > deadline:
                raise self._failure(f"did not listen within {timeout:g} s")
            time.sleep(delay)
            delay = min(2 * delay, 0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stops the server (SIGTERM, then SIGKILL after ``timeout`` seconds) and removes its log. Idempotent.

        In a child made by ``os.fork()`` it does nothing: the server belongs to the parent."""
        if os.getpid() != self._owner_pid:
            return
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            with _running_lock:
                _running.discard(self)
            code = self._proc.poll()
            if code is not None and self.address:
                logger.warning("the local mlir-rl-server (pid %d, %s) had exited with %s; its output ended with:\n%s",
                               self.pid, self.address, _describe_status(code), self.log_tail())
            if code is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("the local mlir-rl-server (pid %d) ignored SIGTERM for %g s; killing it",
                                   self.pid, timeout)
                    self._proc.kill()
                    self._proc.wait()
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.stop()
        return False

    def __repr__(self) -> str:
        state = "running" if self.running and not self._stopped else "stopped"
        return f"LocalServer({self.address or '<starting>'}, pid {self.pid}, {state})"


def _stop_all_at_exit() -> None:
    with _running_lock:
        servers = list(_running)
    for server in servers:
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_stop_all_at_exit)


# ---------------------------------------------------------------------------------------------------------------
# The shared server


_shared_lock = threading.RLock()
_shared: Optional[LocalServer] = None


class ServerLease:
    """Keeps the process's shared local server running until :meth:`release` (idempotent) or the end of a ``with``
    block. ``address`` is the server's ``host:port``."""

    def __init__(self, server: LocalServer):
        self.server = server
        self.address = server.address
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Gives the server up; the last lease stops it."""
        global _shared
        with _shared_lock:
            if self._released:
                return
            self._released = True
            self.server._leases -= 1
            if self.server._leases > 0:
                return
            if _shared is self.server:
                _shared = None
        self.server.stop()

    def __enter__(self) -> "ServerLease":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.release()
        return False

    def __repr__(self) -> str:
        return f"ServerLease({self.address}, {'released' if self._released else 'held'})"


def acquire() -> ServerLease:
    """A lease on the process's shared local server, started if none is running."""
    global _shared
    with _shared_lock:
        server = _shared
        if server is not None:
            server._leases += 1  # first: a lease released meanwhile (by the garbage collector) cannot stop it
            if server.running:
                return ServerLease(server)
            logger.warning("the local mlir-rl-server (pid %d, %s) exited with %s; starting another. Its output ended "
                           "with:\n%s", server.pid, server.address, _describe_status(server.returncode or 0),
                           server.log_tail())
            _shared = None
            ServerLease(server).release()  # gives the claim back; the dead server's last lease cleans it up
        server = _shared = LocalServer()
        server._leases += 1
        return ServerLease(server)


def resolve(server: Optional[str]) -> Tuple[str, Optional[ServerLease]]:
    """The address to connect to, and the lease to release when done (``None`` unless the shared local server is
    used): ``server`` when given, else ``$MLIR_RL_SERVER`` when set, else the shared local server."""
    if server is not None:
        return server, None
    from_env = os.environ.get(ENV_SERVER, "").strip()
    if from_env:
        return from_env, None
    lease = acquire()
    return lease.address, lease


class _AddressContext:
    def __init__(self, server: Optional[str]):
        self._server = server
        self._lease: Optional[ServerLease] = None

    def __enter__(self) -> str:
        address, self._lease = resolve(self._server)
        return address

    def __exit__(self, *exc: Any) -> bool:
        if self._lease is not None:
            self._lease.release()
        return False


def address(server: Optional[str]) -> _AddressContext:
    """``with address(server) as addr:`` -- :func:`resolve` for one call; the lease is released at the end."""
    return _AddressContext(server)


# ---------------------------------------------------------------------------------------------------------------
# Environments that hold a lease


class _HoldsLease:
    """Releases ``_lease`` when the environment's connection is closed: by ``close()`` of the environment, or of the
    last of its forks (they share the connection and the lease)."""

    _lease: Optional[ServerLease] = None

    def __init__(self, *args: Any, lease: ServerLease, **kwargs: Any):
        self._lease = lease
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]
        finally:
            conn = getattr(self, "_conn", None)
            if self._lease is not None and (conn is None or conn.closed):
                self._lease.release()


class LocalServerEnv(_HoldsLease, MlirRlEnv):
    """An :class:`~mlir_rl.MlirRlEnv` on the shared local server, which it keeps running until it (and its forks)
    are closed."""


class LocalServerVectorEnv(_HoldsLease, MlirRlVectorEnv):
    """An :class:`~mlir_rl.MlirRlVectorEnv` on the shared local server, which it keeps running until closed."""


_LEASED: Dict[type, type] = {MlirRlEnv: LocalServerEnv, MlirRlVectorEnv: LocalServerVectorEnv}


def open_env(cls: type, server: Optional[str], *args: Any, **kwargs: Any) -> Any:
    """``cls(*args, server=..., **kwargs)`` on ``server``, ``$MLIR_RL_SERVER`` or the shared local server (then as
    the subclass that holds a lease on it)."""
    address_, lease = resolve(server)
    if lease is None:
        return cls(*args, server=address_, **kwargs)
    try:
        return _LEASED[cls](*args, server=address_, lease=lease, **kwargs)
    except BaseException:
        lease.release()
        raise


def _forget_after_fork() -> None:
    """In a child made by ``os.fork()``: the parent's servers and spawner thread are the parent's."""
    global _shared, _spawner, _shared_lock, _spawner_lock, _running_lock
    _shared, _spawner = None, None
    _shared_lock, _spawner_lock, _running_lock = threading.RLock(), threading.Lock(), threading.RLock()
    _running.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
