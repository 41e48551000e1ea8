"""Several mlir-rl servers behind one environment: :class:`ServerPool`.

``servers`` (of :func:`mlir_rl.make_vec`, :func:`mlir_rl.make`) is either

- a list of ``host:port`` addresses, or
- ``"dns:///name:port"`` (gRPC's target syntax): every address the name resolves to is a server of its own, and the
  name is resolved again every ``resolve_interval`` seconds (and at once when a server fails), so replicas that come
  and go are followed: a Swarm service's ``tasks.<service>`` name, a Kubernetes headless Service, a host name with
  several A/AAAA records. The name is resolved with the system resolver (``socket.getaddrinfo``: ``/etc/hosts``,
  DNS); ``resolver=`` replaces it (a callable ``(host, port) -> ["ip:port", ...]``).

A session lives on one server: its state is there, and so is the measurement of its candidates, so it stays
there (pinning) for its whole episode. Each new episode goes to the usable server holding the fewest of this
client's sessions (the current one when it is among the fewest), so sessions spread evenly and a replica that
joins (or comes back) gets the next episodes. A server whose call fails UNAVAILABLE and that does not answer its
health check (``grpc.health.v1``, no token needed) is unusable: its sessions are rebuilt on the others by replaying
their recorded actions (episodes are deterministic given the benchmark, seed and actions), and it is checked again
every ``retry_interval`` seconds when a session is being placed; once SERVING it takes sessions again. A draining
server (SIGTERM) refuses new sessions with UNAVAILABLE and answers NOT_SERVING, so it is treated the same way.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import grpc

from .errors import InvalidArgumentError, UnavailableError

__all__ = ["ServerPool", "parse_servers", "health_check", "system_resolver", "DEFAULT_PORT"]

logger = logging.getLogger("mlir_rl")

DEFAULT_PORT = 50051

Resolver = Callable[[str, int], Sequence[str]]


def _split_host_port(target: str) -> Tuple[str, int]:
    if target.startswith("["):  # [v6]:port
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:
        host, port = target, ""
    if not host:
        raise InvalidArgumentError(f"no host name in {target!r}")
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise InvalidArgumentError(f"bad port in {target!r}") from None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def system_resolver(host: str, port: int) -> List[str]:
    """Every TCP address of ``host`` (``socket.getaddrinfo``: /etc/hosts, then DNS), as ``ip:port``, in the order
    the resolver gives, without duplicates."""
    out: List[str] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = _address(sockaddr[0], port)
        if address not in out:
            out.append(address)
    return out


def parse_servers(servers: Union[str, Sequence[str]]) -> Tuple[Optional[List[str]], Optional[Tuple[str, int]]]:
    """``(addresses, None)`` for a list (or a comma-separated string) of ``host:port``, ``(None, (host, port))``
    for ``dns:///host:port``."""
    if isinstance(servers, str):
        text = servers.strip()
        if text.startswith("dns:"):
            rest = text[len("dns:"):]
            if rest.startswith("//"):
                authority, _, rest = rest[2:].partition("/")
                if authority:
                    raise InvalidArgumentError(
                        f"{servers!r}: a DNS server in the target (dns://SERVER/name) is not supported; use "
                        f"dns:///name:port (the system resolver) or resolver=")
            return None, _split_host_port(rest)
        servers = [s for s in (part.strip() for part in text.split(",")) if s]
    addresses = [str(s) for s in servers]
    if not addresses or any(not a for a in addresses):
        raise InvalidArgumentError(f"servers must be a non-empty list of host:port or 'dns:///name:port', got "
                                   f"{servers!r}")
    return list(dict.fromkeys(addresses)), None


# grpc.health.v1.Health/Check, without generated code: HealthCheckRequest{service=""} is empty, and the reply's
# field 1 (varint) is the status (1 = SERVING).
def _parse_health(data: bytes) -> int:
    i, status = 0, 0
    while i < len(data):
        key = data[i]
        i += 1
        if key == 0x08:
            value, shift = 0, 0
            while True:
                b = data[i]
                i += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            status = value
        else:  # unknown field: stop (the reply has no other field)
            break
    return status


def health_check(channel: grpc.Channel, timeout: float = 2.0) -> bool:
    """True when the server's gRPC health service answers SERVING (the health service needs no token; a draining
    server answers NOT_SERVING)."""
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    try:
        return _parse_health(check(b"", timeout=timeout)) == 1
    except grpc.RpcError:
        return False


class _Server:
    __slots__ = ("address", "conn", "sessions", "usable", "retry_at", "listed", "index", "failed_checks")

    def __init__(self, address: str, index: int):
        self.address = address
        self.conn: Any = None  # Connection, made on first use
        self.sessions = 0  # environments of this client placed here
        self.usable = True
        self.retry_at = 0.0  # when an unusable server is checked again
        self.listed = True  # still among the addresses (a DNS answer may drop it)
        self.index = index
        self.failed_checks = 0


class ServerPool:
    """Servers of one client: connections, which are usable, and how many of the client's sessions each holds.

    Shared by the sub-environments of a vector env (or an env and its forks); thread-safe. ``connect(address)``
    makes the :class:`~mlir_rl.env.Connection` of an address (credentials from the environment, as usual).
    """

    def __init__(self, servers: Union[str, Sequence[str]], connect: Callable[[str], Any], *,
                 resolver: Optional[Resolver] = None, resolve_interval: float = 10.0, retry_interval: float = 2.0,
                 probe_timeout: float = 5.0, wait_for_server: float = 60.0):
        self.spec = servers if isinstance(servers, str) else list(servers)
        self._static, self._name = parse_servers(servers)
        self._connect = connect
        self.resolver_given = resolver  # (pickled environments make a pool of their own with it)
        self._resolver = resolver or system_resolver
        self.resolve_interval = float(resolve_interval)
        self.retry_interval = float(retry_interval)
        self.probe_timeout = float(probe_timeout)
        self.wait_for_server = float(wait_for_server)
        self._lock = threading.RLock()
        self._servers: Dict[str, _Server] = {}
        self._next_resolve = 0.0
        self._users = 1
        self.failovers = 0  # servers found unusable
        if self._static is not None:
            for a in self._static:
                self._add(a)
        else:
            self._resolve(required=True)

    # -- membership ----------------------------------------------------------------------------------------------

    def _add(self, address: str) -> _Server:
        server = self._servers.get(address)
        if server is None:
            server = self._servers[address] = _Server(address, len(self._servers))
        server.listed = True
        return server

    def _resolve(self, required: bool = False) -> None:
        """Looks the name up again (DNS form only): new addresses join; addresses no longer listed take no new
        sessions (their sessions stay until their server fails)."""
        if self._name is None:
            return
        host, port = self._name
        self._next_resolve = time.monotonic() + self.resolve_interval
        try:
            addresses = list(self._resolver(host, port))
        except (OSError, UnicodeError) as e:
            if required:
                raise UnavailableError(f"cannot resolve {host!r}: {e}") from None
            logger.warning("cannot resolve %s: %s (keeping %d known servers)", host, e, len(self._servers))
            return
        if not addresses:
            if required:
                raise UnavailableError(f"{host!r} resolves to no address")
            logger.warning("%s resolves to no address (keeping %d known servers)", host, len(self._servers))
            return
        joined = [a for a in addresses if a not in self._servers or not self._servers[a].listed]
        for server in self._servers.values():
            server.listed = False
        for a in addresses:
            self._add(a)
        if joined and not required:
            logger.info("%s: new server(s) %s", host, ", ".join(joined))

    def maybe_resolve(self) -> None:
        if self._name is not None and time.monotonic() >= self._next_resolve:
            with self._lock:
                self._resolve()

    @property
    def addresses(self) -> List[str]:
        """The servers known, listed first (in the order they were first seen)."""
        with self._lock:
            return [s.address for s in sorted(self._servers.values(), key=lambda s: (not s.listed, s.index))]

    def sessions(self) -> Dict[str, int]:
        """This client's sessions (environments) per server."""
        with self._lock:
            return {s.address: s.sessions for s in self._servers.values()}

    def usable(self) -> Dict[str, bool]:
        with self._lock:
            return {s.address: s.usable and s.listed for s in self._servers.values()}

    # -- connections and placement -------------------------------------------------------------------------------

    def connection(self, address: str) -> Any:
        """The pool's connection to ``address`` (not acquired)."""
        with self._lock:
            server = self._servers.get(address) or self._add(address)
            if server.conn is None or server.conn.closed:
                server.conn = self._connect(address)
            return server.conn

    def _check(self, server: _Server) -> bool:
        """An unusable server, checked again when its time has come: usable once it answers SERVING."""
        now = time.monotonic()
        if now < server.retry_at:
            return False
        ok = health_check(self.connection(server.address).channel, timeout=min(2.0, self.probe_timeout))
        if ok:
            logger.info("server %s answers again: it takes new sessions", server.address)
            server.usable = True
            server.failed_checks = 0
        else:
            # Checked again later, less and less often (a check of a black-holed address waits for its timeout).
            server.failed_checks += 1
            server.retry_at = time.monotonic() + min(self.retry_interval * 2 ** min(server.failed_checks - 1, 4),
                                                     30.0)
        return ok

    def place(self, current: Optional[str] = None, exclude: Sequence[str] = ()) -> str:
        """The server for a new session: the usable one with the fewest sessions (``current`` when it is among
        them). The caller moves its count with :meth:`move`. Waits up to ``wait_for_server`` seconds for one to be
        usable, then raises :class:`UnavailableError`."""
        deadline = time.monotonic() + self.wait_for_server
        self.maybe_resolve()
        while True:
            with self._lock:
                candidates = [s for s in self._servers.values() if s.listed and s.address not in exclude]
                ready = [s for s in candidates if s.usable]
                for s in candidates:
                    if not s.usable and self._check(s):
                        ready.append(s)
                if ready:
                    cur = self._servers.get(current) if current else None
                    # The current server counts without this session (it is the one being placed).
                    def load(s: _Server) -> Tuple[int, int, int]:
                        return (s.sessions - (1 if s is cur else 0), 0 if s is cur else 1, s.index)
                    return min(ready, key=load).address
                names = ", ".join(s.address for s in candidates) or "none"
            if time.monotonic() >= deadline:
                raise UnavailableError(f"no mlir-rl server is reachable (servers: {names})")
            time.sleep(min(self.retry_interval, max(0.05, deadline - time.monotonic())))
            with self._lock:
                self._resolve()
                for s in self._servers.values():
                    s.retry_at = min(s.retry_at, time.monotonic())

    def move(self, old: Optional[str], new: Optional[str]) -> None:
        """Counts a session leaving ``old`` and joining ``new`` (either may be None)."""
        if old == new:
            return
        with self._lock:
            if old is not None and old in self._servers:
                self._servers[old].sessions -= 1
            if new is not None:
                (self._servers.get(new) or self._add(new)).sessions += 1

    def mark_unusable(self, address: str, reason: Any = "") -> None:
        """No new sessions on ``address`` until its health check answers SERVING again."""
        with self._lock:
            server = self._servers.get(address)
            if server is None or not server.usable:
                return
            server.usable = False
            server.retry_at = time.monotonic() + self.retry_interval
            self.failovers += 1
            self._next_resolve = 0.0  # a replaced replica may have a new address: look again at the next placement
        logger.warning("server %s is unusable (%s): its sessions move to the other servers", address, reason)

    def probe(self, address: str) -> bool:
        """After a failed call: is ``address`` alive (health SERVING within ``probe_timeout``)? If not, it is
        marked unusable."""
        ok = health_check(self.connection(address).channel, timeout=self.probe_timeout)
        if not ok:
            self.mark_unusable(address, "no answer to its health check")
        return ok

    # -- lifetime ------------------------------------------------------------------------------------------------

    def acquire(self) -> "ServerPool":
        with self._lock:
            self._users += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            conns = [s.conn for s in self._servers.values() if s.conn is not None]
            for s in self._servers.values():
                s.conn = None
        for c in conns:
            c.release()

    def __repr__(self) -> str:
        return f"ServerPool({self.spec!r}, sessions={self.sessions()})"
