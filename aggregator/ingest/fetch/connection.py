"""Guarded, watched connections: the only way a fetch reaches the network.

Why this module exists: the SSRF guard is only as good as the address it checks, and the
address checked must be the address connected to.  So the connection classes here make
every new TCP connection themselves — one bounded DNS lookup (``resolve``), every address
checked (``guard``), a connect to exactly those numeric addresses, the peer checked again
— and report each socket to the running fetch's watchdog as soon as it exists (new
connections: right after the TCP connect, before TLS and headers; pooled keep-alive
connections: when taken from the pool, after their peer was re-checked against the
current fetch's policy).  TLS still verifies the certificate against (and sends SNI for)
the URL's hostname: only the TCP destination changes.

The running fetch's policy reaches these classes, deep inside urllib3, through the
``CURRENT_POLICY`` context variable; with none set (an ``HttpSession`` used directly) the
session installs its own, and with none at all private networks are refused.  The pools
(``WatchedHTTPPool``, ``WatchedHTTPSPool``) are what ``session.HttpSession`` builds.

What must not happen: urllib3 or ``socket.create_connection`` resolving the name again
(the DNS-rebinding window), a connect before every address was checked, a pooled
connection opened under a laxer policy carrying a guarded fetch, or any request through a
proxy (the guard cannot see past one: the sessions have none, and read no environment).

These classes rely on urllib3 internals (``_new_conn``, ``_get_conn``, ``_dns_host``,
``timeout``, ``socket_options``, ``source_address``).  If a urllib3 release stopped calling
them, the tests of the rebinding fix would fail; at run time ``check_response_peer`` still
refuses a response that came from a forbidden address, and the per-chunk time check plus
the response-socket tracking still bound the body.
"""

from __future__ import annotations

import contextvars
import socket
import sys
from dataclasses import dataclass

from urllib3 import BaseHTTPResponse
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from aggregator.errors import FetchError
from aggregator.ingest.fetch import guard
from aggregator.ingest.fetch.resolve import AddrInfo, resolve_within, seconds_left
from aggregator.ingest.fetch.watchdog import Watchdog

__all__ = ["CURRENT_POLICY", "Policy", "WatchedHTTPPool", "WatchedHTTPSPool",
           "check_response_peer", "response_socket"]


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True, slots=True)
class Policy:
    """The running fetch's policy, as the connection classes deep inside urllib3 see it.

    ``source_id`` names the source in refusals; ``deadline_at`` (monotonic) bounds the DNS
    lookup and the connect; ``watchdog`` receives every socket.  Outside ``fetch`` (a
    ``make_session`` session used directly) the session installs one with its own policy;
    with none at all, private networks are refused (fail closed).
    """

    source_id: str | None
    allow_private: bool
    deadline_at: float | None = None
    watchdog: Watchdog | None = None


CURRENT_POLICY: contextvars.ContextVar[Policy | None] = contextvars.ContextVar(
    "aggregator_fetch_guard", default=None)
_FAIL_CLOSED = Policy(source_id=None, allow_private=False)


def _current_policy() -> Policy:
    return CURRENT_POLICY.get() or _FAIL_CLOSED


def _track_current(sock: socket.socket | None) -> None:
    policy = CURRENT_POLICY.get()
    if policy is not None and policy.watchdog is not None:
        policy.watchdog.track(sock)


# --------------------------------------------------------------------------- new connections


def _guarded_new_conn(conn: HTTPConnection) -> socket.socket:
    """Resolve ``conn.host`` once, refuse forbidden addresses, connect to the checked ones.

    Must not: let urllib3 or ``socket.create_connection`` resolve the name again (that is
    the DNS-rebinding window), connect anywhere before every address was checked, or
    touch ``conn.host`` (TLS verifies the certificate and sends SNI for that name).
    """
    policy = _current_policy()
    lookup_host = conn._dns_host.strip("[]")  # keeps an FQDN's trailing dot for the lookup
    infos = resolve_within(conn, lookup_host, policy.deadline_at)
    if not policy.allow_private:
        for *_, sockaddr in infos:
            address = guard.sockaddr_ip(sockaddr)
            kind = guard.forbidden_kind(address)
            if kind is not None:
                raise guard.refusal(conn.host, address, kind, policy.source_id)
    sock, sockaddr = _connect_checked(conn, infos, policy)
    try:
        _check_peer(conn, sock, sockaddr, policy)
    except BaseException:
        sock.close()
        raise
    sys.audit("http.client.connect", conn, conn.host, conn.port)
    _track_current(sock)
    return sock


def _connect_checked(conn: HTTPConnection, infos: list[AddrInfo],
                     policy: Policy) -> tuple[socket.socket, tuple[object, ...]]:
    """Connect to the first reachable address of ``infos``: numeric sockaddrs, no lookup.

    Must not resolve anything: ``infos`` are the addresses that were checked.  Like
    urllib3, a failed or timed-out address moves on to the next one, all within the
    connect timeout and the deadline.
    """
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        limit = seconds_left(conn, policy.deadline_at)
        if limit is not None and limit <= 0:
            error = TimeoutError(f"no time left to connect to {conn.host}")
            break
        sock = socket.socket(family, kind, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if limit is not None:
                sock.settimeout(limit)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock, sockaddr
    assert error is not None  # infos is never empty
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


def _check_peer(conn: HTTPConnection, sock: socket.socket, sockaddr: tuple[object, ...],
                policy: Policy) -> None:
    """Belt and braces: the socket's peer must be the checked address, and allowed."""
    if policy.allow_private:
        return
    try:
        peer = guard.sockaddr_ip(sock.getpeername())
    except (OSError, ValueError) as exc:
        raise NewConnectionError(conn, f"cannot confirm the peer of {conn.host}: {exc}") from exc
    expected = guard.sockaddr_ip(sockaddr)
    if peer != expected:
        raise FetchError(f"refusing {conn.host}: connected to {peer}, not to the checked "
                         f"address {expected}", source_id=policy.source_id)
    kind = guard.forbidden_kind(peer)
    if kind is not None:
        raise guard.refusal(conn.host, peer, kind, policy.source_id,
                            how="the connection reached")


# --------------------------------------------------------------------------- reused connections


def _vet_pooled(conn: HTTPConnection | None) -> None:
    """A kept-alive connection may predate this fetch's policy: re-check its peer.

    A connection opened by an ``allow_private_networks`` fetch must not carry a guarded
    fetch to a private address; it is closed, so urllib3 reconnects through
    ``_guarded_new_conn``, which checks a fresh lookup.
    """
    sock = getattr(conn, "sock", None)
    if conn is None or sock is None:
        return
    if not _current_policy().allow_private:
        try:
            kind = guard.forbidden_kind(guard.sockaddr_ip(sock.getpeername()))
        except (OSError, ValueError):
            kind = "unknown"
        if kind is not None:
            conn.close()
            return
    _track_current(sock)


def response_socket(response: BaseHTTPResponse) -> socket.socket | None:
    """The socket a response is read from, if it can be found (None once released)."""
    sock = getattr(response.connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def check_response_peer(response: BaseHTTPResponse, sock: socket.socket | None,
                        policy: Policy, host: str) -> None:
    """Last line: refuse a response from a forbidden address, whatever urllib3 did."""
    if policy.allow_private or sock is None:
        return
    try:
        peer = guard.sockaddr_ip(sock.getpeername())
    except (OSError, ValueError):
        return  # already closed: nothing more can be read from it
    kind = guard.forbidden_kind(peer)
    if kind is not None:
        response.close()
        raise guard.refusal(host, peer, kind, policy.source_id, how="the response came from")


# --------------------------------------------------------------------------- urllib3 hooks


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self)  # TLS wraps it afterwards, for self.host


class WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _get_conn(self, timeout: float | None = None) -> HTTPConnection:
        conn = super()._get_conn(timeout)
        _vet_pooled(conn)
        return conn


class WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> HTTPConnection:
        conn = super()._get_conn(timeout)
        _vet_pooled(conn)
        return conn
