"""DNS within the deadline: one bounded ``getaddrinfo`` per new connection.

Why this module exists: ``socket.getaddrinfo`` has no timeout, and a hung resolver would
otherwise hold a fetch (and a polling thread) far past its deadline; and the SSRF guard
needs the list of addresses up front, to check all of them and then connect to exactly
those.  So the lookup runs here, in a helper thread the caller stops waiting for when the
connect timeout or the fetch deadline runs out, and its failures are raised as the
urllib3 exceptions urllib3 itself would raise (plus the host name, for the error text).

What must not happen: a lookup the caller waits on past the time left, or a second lookup
of the same name for the same connection (the DNS-rebinding window).  An IP literal is
never sent to a resolver: ``AI_NUMERICHOST`` makes its lookup purely local.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

__all__ = ["AddrInfo", "ResolveTimeout", "Unresolved", "resolve_within", "seconds_left"]

# One getaddrinfo() row: family, type, proto, canonname, sockaddr.
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[object, ...]]


class ResolveTimeout(ConnectTimeoutError):
    """The DNS lookup did not finish within the connect timeout or the fetch deadline."""

    def __init__(self, conn: HTTPConnection, message: str, hostname: str = "?") -> None:
        super().__init__(conn, message)
        self.hostname = hostname


class Unresolved(NameResolutionError):
    """The name does not resolve; keeps the name for the error description."""

    def __init__(self, hostname: str, conn: HTTPConnection, reason: socket.gaierror) -> None:
        super().__init__(hostname, conn, reason)
        self.hostname = hostname


def seconds_left(conn: HTTPConnection, deadline_at: float | None) -> float | None:
    """The connect timeout capped by the fetch deadline; None when neither bounds it."""
    timeout = conn.timeout
    limit = float(timeout) if isinstance(timeout, int | float) else None
    if deadline_at is not None:
        remaining = deadline_at - time.monotonic()
        limit = remaining if limit is None else min(limit, remaining)
    return limit


def resolve_within(conn: HTTPConnection, host: str,
                   deadline_at: float | None) -> list[AddrInfo]:
    """``getaddrinfo`` bounded by the time left: a hung resolver cannot outlive the deadline.

    The lookup runs in a daemon thread that is abandoned (it ends when the system
    resolver gives up) if it does not answer in time.  IP literals skip the thread.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a literal: AI_NUMERICHOST guarantees no DNS traffic and no blocking
        return _map_resolve_errors(conn, host, lambda: socket.getaddrinfo(
            host, conn.port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST))

    family = allowed_gai_family()  # like urllib3: no AAAA answers without IPv6 support
    limit = seconds_left(conn, deadline_at)
    if limit is not None and limit <= 0:
        raise ResolveTimeout(conn, f"no time left to resolve {host}", host)
    outcome: list[object] = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, conn.port, family, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the waiting thread below
            outcome.append(exc)

    thread = threading.Thread(target=lookup, name=f"aggregator-resolve {host}", daemon=True)
    thread.start()
    thread.join(limit)
    if not outcome:
        raise ResolveTimeout(conn, f"DNS lookup for {host} timed out after {limit:.3g}s",
                             host)
    result = outcome[0]

    def answer() -> list[AddrInfo]:
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[return-value]

    return _map_resolve_errors(conn, host, answer)


def _map_resolve_errors(conn: HTTPConnection, host: str,
                        call: Callable[[], list[AddrInfo]]) -> list[AddrInfo]:
    """Run the lookup ``call``, raising the errors urllib3 itself would raise."""
    try:
        infos = call()
    except socket.gaierror as exc:
        raise Unresolved(host, conn, exc) from exc
    except UnicodeError as exc:
        raise urllib3.exceptions.LocationParseError(f"{host!r}: {exc}") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"Failed to resolve {host}: {exc}") from exc
    if not infos:
        error = socket.gaierror(socket.EAI_NONAME, "no addresses")
        raise Unresolved(host, conn, error)
    return list(infos)
