"""Failures as one-line reasons: what the operator reads in the log and on the status page.

Why this module exists: a failed fetch surfaces as a urllib3 exception wrapping a socket,
TLS or ``http.client`` error, and the useful part ("connection refused",
"DNS lookup for x timed out", "TLS error: ... (Hostname mismatch ...)") is somewhere in
that chain.  ``describe`` walks the whole chain and names the most specific cause; the
deadline gets its own error type, so the fetch can tell it from the failures the
watchdog's shutdown provoked.

What must not happen: a reason that grows with the input (quoted texts are cut at 200
characters), or a reason that hides the deadline behind the socket error it caused.  The original
exception is never lost: callers raise ``FetchError(describe(exc)) from exc``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator

import urllib3

from aggregator.errors import FetchError
from aggregator.ingest.fetch.resolve import ResolveTimeout, Unresolved

__all__ = ["DeadlineExceeded", "deadline_error", "describe"]


class DeadlineExceeded(FetchError):
    """The wall-clock deadline passed (callers see a plain ``FetchError``)."""


def deadline_error(source_id: str, deadline: float) -> FetchError:
    return DeadlineExceeded(f"exceeded the {deadline:g}s deadline", source_id=source_id)


def describe(exc: BaseException) -> str:
    """A short human reason for a network-level failure."""
    chain = list(_causes(exc))

    def find(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    slow_dns = find(ResolveTimeout)
    if slow_dns is not None:
        return f"DNS lookup for {getattr(slow_dns, 'hostname', '?')} timed out"
    if find(ConnectionRefusedError):
        return "connection refused"
    tls = find(ssl.SSLError)
    if tls is not None:
        verdict = getattr(tls, "verify_message", None)  # e.g. "Hostname mismatch, ..."
        reason = getattr(tls, "reason", None) or tls
        return f"TLS error: {reason} ({verdict})" if verdict else f"TLS error: {reason}"
    if find(urllib3.exceptions.SSLError):
        return f"TLS error: {exc}"
    if find(socket.gaierror, urllib3.exceptions.NameResolutionError):
        unresolved = find(Unresolved)
        gai = find(socket.gaierror)
        name = f" for {unresolved.hostname}" if isinstance(unresolved, Unresolved) else ""
        detail = getattr(gai, "strerror", None)
        return f"DNS lookup failed{name}: {detail}" if detail else f"DNS lookup failed{name}"
    if find(ConnectionResetError):
        return "connection reset by peer"
    if (find(urllib3.exceptions.ConnectTimeoutError)
            and not find(urllib3.exceptions.NewConnectionError)):
        return "timed out while connecting"
    if find(urllib3.exceptions.ReadTimeoutError, TimeoutError):
        return "timed out waiting for the server"
    if find(urllib3.exceptions.NewConnectionError):
        os_error = find(OSError)
        detail = getattr(os_error, "strerror", None) if os_error is not None else None
        return f"connection failed: {detail or exc}"
    if find(urllib3.exceptions.ProtocolError, http.client.HTTPException):
        return f"connection broken: {_short(exc)}"
    if find(urllib3.exceptions.LocationValueError):  # also LocationParseError
        return f"invalid URL: {_short(exc)}"
    return f"{type(exc).__name__}: {_short(exc)}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything wrapped inside it (args, .reason, __cause__, __context__)."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 50:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [arg for arg in current.args if isinstance(arg, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            inner.append(reason)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                inner.append(linked)
        pending.extend(inner)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
