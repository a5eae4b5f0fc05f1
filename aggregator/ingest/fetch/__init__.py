"""Fetch stage: one source's URL → ``FetchResult`` (or ``FetchError``).

Why this module exists: portals are slow, broken, hostile or all three, and the rest of
the pipeline must only ever see bytes or a typed error.  So this module owns every
network concern in one place — conditional GET, hand-followed redirects, an SSRF guard,
a hard wall-clock deadline, a decompressed-size limit — and it is the ONLY module of the
project that imports ``requests``.

What it must NOT do: decode text, sniff encodings or parse documents (the parse stage
does), look at the store, retry, sleep or log-and-continue.  It never lets a requests,
urllib3 or socket exception escape: everything becomes ``FetchError(source_id=...)``
with a short human reason and the original kept as ``__cause__``.

How the deadline is enforced: per-operation socket timeouts never trip on a server that
drips one byte per second, and a blocking read of a big chunk waits until the chunk
fills.  Sessions built by ``make_session`` therefore use connection classes that report
every socket they open (or reuse) to the running fetch's ``_Watchdog``, which keeps a
duplicate of each descriptor; when the deadline passes, a ``threading.Timer`` calls
``shutdown()`` on them, which unblocks any read in progress (``close()`` from another
thread does not, and closing a buffered response from another thread would wait on the
reader's lock).  The time is also checked between chunks, and a body that "ends" after
the watchdog fired is reported as the deadline, never as a short success.

How the SSRF guard is enforced: the address checked is the address connected to.  The
watched connection classes resolve the host once (in a helper thread, so a hanging resolver
is bounded by the deadline too), refuse the whole host if ANY of its addresses is loopback,
private, link-local, multicast, reserved, unspecified or otherwise non-global, and then
connect to those very addresses — urllib3 never resolves the name itself, so a DNS-rebinding
server gets no second answer.  The peer of every new socket is checked again after the
connect, and a pooled keep-alive connection is checked against the current fetch's policy
before it is reused.  TLS still verifies the certificate against (and sends SNI for) the
URL's hostname: only the TCP destination changes.  Every fetch goes through these classes,
also with a caller's plain ``requests.Session`` (a fetch-owned adapter is used instead of
its own), and a session with proxies is refused, since the guard cannot see past a proxy.

How the size limit is enforced: the body is read raw (``decode_content=False``) in
64 KiB chunks and decompressed here with ``zlib``'s ``max_length``, so a small gzip bomb
never expands beyond one chunk past the limit in memory, whatever urllib3 version is
installed.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import http
import http.client
import ipaddress
import math
import socket
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from aggregator.errors import FetchError
from aggregator.records import FetchOptions, FetchResult, Source, Validators

__all__ = ["ACCEPT", "fetch", "make_session"]

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)
_ACCEPT_ENCODING = "gzip, deflate"  # exactly what ``_Decoder`` can undo
_CHUNK = 64 * 1024
_ALLOWED_SCHEMES = frozenset({"http", "https"})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_NO_VALIDATORS = Validators()

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# One getaddrinfo() row: family, type, proto, canonname, sockaddr.
_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[object, ...]]


# --------------------------------------------------------------------------- public API


# What callers hold between fetches (connection pooling) without importing requests.
HttpSession = requests.Session


def make_session(options: FetchOptions) -> requests.Session:
    """A session for ``fetch``: no environment leaks, feed-friendly headers, watched sockets.

    One session per thread is the intended use (``requests.Session`` is not thread-safe);
    it keeps connections alive between polls of the same host.
    """
    session = requests.Session()
    session.trust_env = False  # no .netrc credentials, no *_PROXY / REQUESTS_CA_BUNDLE
    session.headers.update({
        "User-Agent": options.user_agent,
        "Accept": ACCEPT,
        "Accept-Encoding": _ACCEPT_ENCODING,
    })
    session.max_redirects = options.max_redirects  # informative only: fetch follows by hand
    adapter = _WatchedAdapter(max_retries=0,
                              allow_private_networks=options.allow_private_networks)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch(source: Source, options: FetchOptions, validators: Validators = _NO_VALIDATORS,
          session: requests.Session | None = None) -> FetchResult:
    """GET ``source.url`` conditionally, within ``options``' limits.

    Returns a 2xx result with the decompressed body, or a 304 result with empty content
    and the (possibly old) validators.  Raises ``FetchError`` for everything else.

    ``session`` may be any ``requests.Session`` (its cookies, ``verify`` and ``cert`` are
    used), but connections are always made by this module's watched adapter, so the
    deadline and the SSRF guard of ``options`` hold whoever built the session.
    """
    started = time.monotonic()
    owned = session is None
    active = make_session(options) if session is None else session
    watchdog = _Watchdog(options.deadline)
    guard = _Guard(source_id=source.id, allow_private=options.allow_private_networks,
                   deadline_at=started + options.deadline, watchdog=watchdog)
    adapters = _Adapters(options)
    token = _CURRENT_GUARD.set(guard)
    watchdog.start()
    try:
        return _fetch(source, options, validators, active, adapters, guard, watchdog, started)
    except _DeadlineExceeded:
        raise
    except FetchError as exc:
        if exc.status is None and _past_deadline(watchdog, started, options):
            raise _deadline_error(source, options) from exc
        raise
    except Exception as exc:  # the stage contract: nothing but FetchError escapes
        if _past_deadline(watchdog, started, options):
            raise _deadline_error(source, options) from exc
        raise FetchError(_describe(exc), source_id=source.id) from exc
    finally:
        watchdog.finish()
        _CURRENT_GUARD.reset(token)
        adapters.close()
        if owned:
            active.close()


# --------------------------------------------------------------------------- the fetch


def _fetch(source: Source, options: FetchOptions, validators: Validators,
           session: requests.Session, adapters: _Adapters, guard: _Guard,
           watchdog: _Watchdog, started: float) -> FetchResult:
    deadline_at = started + options.deadline
    conditional: dict[str, str] = {}
    if validators.etag:
        conditional["If-None-Match"] = validators.etag
    if validators.last_modified:
        conditional["If-Modified-Since"] = validators.last_modified

    url = source.url
    seen: set[str] = set()
    hops = 0
    # Where an unbroken chain of permanent redirects (301/308) from source.url leads.
    moved_to: str | None = None
    permanent_so_far = True
    while True:
        try:
            prepared = session.prepare_request(requests.Request("GET", url, headers=conditional))
        except (requests.RequestException, ValueError) as exc:
            raise FetchError(f"invalid URL {url!r}: {exc}", source_id=source.id) from exc
        url = prepared.url or url
        if url in seen:
            raise FetchError(f"redirect loop: {url} was already visited", source_id=source.id)
        seen.add(url)
        _check_url(url, source_id=source.id)  # the addresses are checked when connecting

        remaining = deadline_at - time.monotonic()
        if remaining <= 0:
            raise _deadline_error(source, options)
        response = _send(session, adapters.for_url(session, url, source.id), prepared,
                         (min(options.connect_timeout, remaining),
                          min(options.read_timeout, remaining)))
        sock = _response_socket(response)
        _check_response_peer(response, sock, guard, urlsplit(url).hostname or url)
        watchdog.track(sock)
        try:
            if response.is_redirect:
                location = session.get_redirect_target(response) or ""
                hops += 1
                if hops > options.max_redirects:
                    raise FetchError(
                        f"too many redirects: more than {options.max_redirects} "
                        f"(last hop {url} → {location})", source_id=source.id)
                try:
                    url = urljoin(url, location)
                except ValueError as exc:
                    raise FetchError(f"invalid redirect Location {location!r}: {exc}",
                                     source_id=source.id) from exc
                permanent_so_far = permanent_so_far and response.status_code in (301, 308)
                if permanent_so_far:
                    moved_to = url
                continue
            result = _finish(source, options, validators, response, url, watchdog, started,
                             deadline_at)
            return replace(result, permanent_redirect=moved_to) if moved_to else result
        finally:
            response.close()  # never drain: a redirect or error body may be endless


def _send(session: requests.Session, adapter: _WatchedAdapter,
          prepared: requests.PreparedRequest, timeout: tuple[float, float]) -> requests.Response:
    # Not ``session.send``: with allow_redirects=False it still reads a redirect response's
    # whole body into memory (to compute ``Response.next``), with no size limit.  No
    # proxies: ``_Adapters.for_url`` refused a session that has any.
    response = adapter.send(prepared, stream=True, timeout=timeout, verify=session.verify,
                            cert=session.cert, proxies={})
    extract_cookies_to_jar(session.cookies, prepared, response.raw)
    return response


def _finish(source: Source, options: FetchOptions, validators: Validators,
            response: requests.Response, url: str, watchdog: _Watchdog, started: float,
            deadline_at: float) -> FetchResult:
    status = response.status_code
    headers = dict(response.headers.items())
    etag = response.headers.get("ETag")
    last_modified = response.headers.get("Last-Modified")

    if status == 304:
        if watchdog.finish():
            raise _deadline_error(source, options)
        return FetchResult(
            source_id=source.id, url=url, status=304, content=b"", headers=headers,
            etag=etag or validators.etag,
            last_modified=last_modified or validators.last_modified,
            elapsed=time.monotonic() - started)

    if not 200 <= status < 300:
        reason = response.reason or _standard_phrase(status)
        retry_after = (_parse_retry_after(response.headers.get("Retry-After"))
                       if status in _RETRY_AFTER_STATUSES else None)
        raise FetchError(f"HTTP {status} {reason}".rstrip(), source_id=source.id,
                         status=status, retry_after=retry_after)

    limit = source.max_bytes or options.max_bytes
    content = _read_body(source, options, response, limit, deadline_at)
    if watchdog.finish():  # the body may have "ended" because the watchdog shut it
        raise _deadline_error(source, options)
    return FetchResult(source_id=source.id, url=url, status=status, content=content,
                       headers=headers, etag=etag, last_modified=last_modified,
                       elapsed=time.monotonic() - started)


def _read_body(source: Source, options: FetchOptions, response: requests.Response,
               limit: int, deadline_at: float) -> bytes:
    declared = _content_length(response.headers.get("Content-Length"))
    if declared is not None and declared > limit:
        raise FetchError(f"Content-Length {declared} exceeds the {limit}-byte limit",
                         source_id=source.id)
    encoding = response.headers.get("Content-Encoding", "")
    try:
        decoder = _Decoder(encoding)
    except _DecodeError as exc:
        raise FetchError(str(exc), source_id=source.id) from exc

    parts: list[bytes] = []
    total = 0

    def keep(pieces: Iterator[bytes]) -> None:
        nonlocal total
        for piece in pieces:
            total += len(piece)
            if total > limit:
                raise FetchError(f"body exceeds the {limit}-byte limit "
                                 f"(after decompression)", source_id=source.id)
            parts.append(piece)

    try:
        for chunk in response.raw.stream(_CHUNK, decode_content=False):
            keep(decoder.feed(chunk))
            if time.monotonic() > deadline_at:
                raise _deadline_error(source, options)
        keep(decoder.finish())
    except _DecodeError as exc:
        raise FetchError(f"cannot decode the {encoding} body: {exc}",
                         source_id=source.id) from exc
    return b"".join(parts)


def _past_deadline(watchdog: _Watchdog, started: float, options: FetchOptions) -> bool:
    # Socket timeouts are capped at the time remaining, so a timeout can beat the timer
    # by a hair; either way the deadline is the reason the fetch failed.
    return watchdog.expired or time.monotonic() - started >= options.deadline


class _DeadlineExceeded(FetchError):
    """The wall-clock deadline passed (callers see a plain ``FetchError``)."""


def _deadline_error(source: Source, options: FetchOptions) -> FetchError:
    return _DeadlineExceeded(f"exceeded the {options.deadline:g}s deadline", source_id=source.id)


# --------------------------------------------------------------------------- SSRF guard


def _check_url(url: str, *, source_id: str) -> None:
    """Refuse, before any connection, a URL that is not http(s) or has no usable host.

    Deliberately no DNS lookup here: a name resolved now could resolve differently when
    connecting (DNS rebinding).  The addresses are checked by ``_guarded_new_conn``, on
    the very addresses it connects to.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        shown = f"{scheme}:" if scheme else "scheme-less"
        raise FetchError(f"refusing {shown} URL {url!r}: only http and https are fetched",
                         source_id=source_id)
    try:
        host = parts.hostname
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError as exc:
        raise FetchError(f"invalid URL {url!r}: {exc}", source_id=source_id) from exc
    if not host:
        raise FetchError(f"invalid URL {url!r}: no host", source_id=source_id)


@dataclass(frozen=True, slots=True)
class _Guard:
    """The running fetch's policy, as the connection classes deep inside urllib3 see it.

    ``source_id`` names the source in refusals; ``deadline_at`` (monotonic) bounds the DNS
    lookup and the connect; ``watchdog`` receives every socket.  Outside ``fetch`` (a
    ``make_session`` session used directly) the adapter installs one with its own policy;
    with none at all, private networks are refused (fail closed).
    """

    source_id: str | None
    allow_private: bool
    deadline_at: float | None = None
    watchdog: _Watchdog | None = None


_CURRENT_GUARD: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar(
    "aggregator_fetch_guard", default=None)
_FAIL_CLOSED = _Guard(source_id=None, allow_private=False)


def _current_guard() -> _Guard:
    return _CURRENT_GUARD.get() or _FAIL_CLOSED


def _refusal(host: str, address: IPAddress, kind: str, guard: _Guard,
             how: str = "it resolves to") -> FetchError:
    shown = _embedded_ipv4(address) or address
    return FetchError(f"refusing {host}: {how} {kind} address {shown} "
                      f"(private networks are not allowed)", source_id=guard.source_id)


def _sockaddr_ip(sockaddr: tuple[object, ...]) -> IPAddress:
    text = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone (fe80::1%eth0)
    return ipaddress.ip_address(text)


def _forbidden_kind(address: IPAddress) -> str | None:
    """Why ``address`` must not be fetched from, or None when it is a public address."""
    address = _embedded_ipv4(address) or address
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-global", not address.is_global),  # e.g. 100.64.0.0/10 carrier-grade NAT
    )
    return next((kind for kind, hit in checks if hit), None)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or 6to4 IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address.sixtofour
    return None


# --------------------------------------------------------------------------- HTTP details


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        # "1234, 1234" (a duplicated header joined by urllib3) still means 1234
        lengths = {int(part.strip()) for part in value.split(",")}
    except ValueError:
        return None
    return max(lengths) if lengths else None


def _standard_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


# --------------------------------------------------------------------------- decoding


class _DecodeError(Exception):
    """The Content-Encoding is unsupported or the compressed stream is broken."""


class _Decoder:
    """Undo one gzip/deflate Content-Encoding incrementally, ``_CHUNK`` bytes at a time.

    Every yielded piece is at most ``_CHUNK`` bytes, so the caller can stop at its limit
    without a decompression bomb ever being expanded in memory.
    """

    def __init__(self, header: str) -> None:
        codings = [c.strip().lower() for c in header.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise _DecodeError(f"unsupported stacked Content-Encoding {header!r}")
        if codings and codings[0] not in ("gzip", "x-gzip", "deflate"):
            raise _DecodeError(f"unsupported Content-Encoding {header!r}")
        self._kind = codings[0] if codings else None
        self._obj: zlib._Decompress | None = None
        self._head = b""  # deflate: bytes held until the zlib header can be sniffed
        self._members = 0  # complete gzip members seen
        self._skip = False  # ignore trailing garbage after a complete stream, like urllib3

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._kind is None:
            if data:
                yield data
            return
        if self._skip or not data:
            return
        if self._obj is None:
            self._head += data
            if self._kind == "deflate" and len(self._head) < 2:
                return
            data, self._head = self._head, b""
            self._obj = zlib.decompressobj(self._wbits(data))
        yield from self._inflate(data)

    def finish(self) -> Iterator[bytes]:
        if self._kind is None or self._skip:
            return
        if self._obj is None:
            if not self._head:
                return  # an empty body stays empty
            data, self._head = self._head, b""
            self._obj = zlib.decompressobj(self._wbits(data))
            yield from self._inflate(data)
        if not self._obj.eof and not self._skip:
            raise _DecodeError("the compressed stream is truncated")

    def _wbits(self, head: bytes) -> int:
        if self._kind != "deflate" or head[:2] == b"\x1f\x8b":
            return 16 + zlib.MAX_WBITS  # gzip (also when mislabelled as deflate)
        cmf, flg = head[0], head[1]
        if cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0:
            return zlib.MAX_WBITS  # zlib-wrapped deflate, as RFC 9110 says
        return -zlib.MAX_WBITS  # raw deflate, as many servers send

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        assert self._obj is not None
        while True:
            obj = self._obj
            if obj.eof:
                if not data:
                    return
                if self._kind == "deflate":
                    self._skip = True
                    return
                obj = self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)  # next gzip member
            try:
                out = obj.decompress(data, _CHUNK)
            except zlib.error as exc:
                if self._members:
                    self._skip = True  # garbage after a complete member (e.g. zero padding)
                    return
                raise _DecodeError(str(exc)) from exc
            if out:
                yield out
            if obj.eof:
                self._members += 1
                data = obj.unused_data
            else:
                data = obj.unconsumed_tail
                if not data and len(out) < _CHUNK:
                    return  # all input consumed and no output pending


# --------------------------------------------------------------------------- errors


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


def _describe(exc: BaseException) -> str:
    """A short human reason for a network-level failure."""
    chain = list(_causes(exc))

    def find(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    slow_dns = find(_ResolveTimeout)
    if slow_dns is not None:
        return f"DNS lookup for {getattr(slow_dns, 'hostname', '?')} timed out"
    if find(ConnectionRefusedError):
        return "connection refused"
    tls = find(ssl.SSLError)
    if tls is not None:
        verdict = getattr(tls, "verify_message", None)  # e.g. "Hostname mismatch, ..."
        reason = getattr(tls, "reason", None) or tls
        return f"TLS error: {reason} ({verdict})" if verdict else f"TLS error: {reason}"
    if find(requests.exceptions.SSLError, urllib3.exceptions.SSLError):
        return f"TLS error: {exc}"
    if find(socket.gaierror, urllib3.exceptions.NameResolutionError):
        unresolved = find(_Unresolved)
        gai = find(socket.gaierror)
        name = f" for {unresolved.hostname}" if isinstance(unresolved, _Unresolved) else ""
        detail = getattr(gai, "strerror", None)
        return f"DNS lookup failed{name}: {detail}" if detail else f"DNS lookup failed{name}"
    if find(ConnectionResetError):
        return "connection reset by peer"
    if find(requests.exceptions.ConnectTimeout) or (
            find(urllib3.exceptions.ConnectTimeoutError)
            and not find(urllib3.exceptions.NewConnectionError)):
        return "timed out while connecting"
    if find(requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError,
            TimeoutError):
        return "timed out waiting for the server"
    if find(urllib3.exceptions.NewConnectionError):
        os_error = find(OSError)
        detail = getattr(os_error, "strerror", None) if os_error is not None else None
        return f"connection failed: {detail or exc}"
    if find(urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError,
            http.client.HTTPException):
        return f"connection broken: {_short(exc)}"
    if find(requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema, urllib3.exceptions.LocationParseError):
        return f"invalid URL: {_short(exc)}"
    return f"{type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- watchdog


class _Watchdog:
    """Shuts down every socket of one fetch when its deadline passes.

    It holds ``dup()``s of the sockets, so a shutdown reaches the connection whatever
    object (plain or TLS) currently wraps the descriptor; the dups are closed when the
    fetch finishes.  All shutdowns and closes happen under one lock, so a late timer can
    never touch a descriptor after it was closed (and possibly reused).
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._dups: list[socket.socket] = []
        self._state = "running"  # → "expired" (timer fired) or "finished" (fetch ended)
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    @property
    def expired(self) -> bool:
        return self._state == "expired"

    def start(self) -> None:
        self._timer.start()

    def track(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        try:
            fd = sock.fileno()
            if fd < 0:
                return
            dup = socket.fromfd(fd, sock.family, sock.type)
        except OSError:
            return
        with self._lock:
            if self._state == "running":
                self._dups.append(dup)
                return
            if self._state == "expired":
                _shutdown(dup)
            dup.close()

    def finish(self) -> bool:
        """Stop watching; True when the deadline had already passed."""
        self._timer.cancel()
        with self._lock:
            if self._state == "running":
                self._state = "finished"
            for dup in self._dups:
                dup.close()
            self._dups.clear()
            return self._state == "expired"

    def _expire(self) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._state = "expired"
            for dup in self._dups:
                _shutdown(dup)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already gone
        sock.shutdown(socket.SHUT_RDWR)


def _track_current(sock: socket.socket | None) -> None:
    guard = _CURRENT_GUARD.get()
    if guard is not None and guard.watchdog is not None:
        guard.watchdog.track(sock)


def _response_socket(response: requests.Response) -> socket.socket | None:
    # Covers sessions not made by make_session (body phase only); ours are tracked earlier.
    raw = response.raw
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


# urllib3 hooks.  The connection classes make every new TCP connection themselves (one DNS
# lookup, every address checked, connect to exactly those addresses, peer re-checked) and
# report each socket to the running fetch's watchdog as soon as it exists (new connections:
# right after TCP connect, before TLS and headers; pooled keep-alive connections: when taken
# from the pool, after their peer was re-checked against the current policy).
#
# They rely on urllib3 internals (``_new_conn``, ``_get_conn``, ``_dns_host``, ``timeout``,
# ``socket_options``, ``source_address``).  If a urllib3 release stopped calling them, the
# tests of the rebinding fix would fail; at run time ``_check_response_peer`` still refuses
# a response that came from a forbidden address, and the per-chunk time check plus the
# response-socket tracking still bound the body.


class _ResolveTimeout(ConnectTimeoutError):
    """The DNS lookup did not finish within the connect timeout or the fetch deadline."""

    def __init__(self, conn: HTTPConnection, message: str, hostname: str = "?") -> None:
        super().__init__(conn, message)
        self.hostname = hostname


class _Unresolved(NameResolutionError):
    """The name does not resolve; keeps the name for ``_describe``."""

    def __init__(self, hostname: str, conn: HTTPConnection, reason: socket.gaierror) -> None:
        super().__init__(hostname, conn, reason)
        self.hostname = hostname


def _guarded_new_conn(conn: HTTPConnection) -> socket.socket:
    """Resolve ``conn.host`` once, refuse forbidden addresses, connect to the checked ones.

    Must not: let urllib3 or ``socket.create_connection`` resolve the name again (that is
    the DNS-rebinding window), connect anywhere before every address was checked, or
    touch ``conn.host`` (TLS verifies the certificate and sends SNI for that name).
    """
    guard = _current_guard()
    lookup_host = conn._dns_host.strip("[]")  # keeps an FQDN's trailing dot for the lookup
    infos = _resolve_within(conn, lookup_host, guard)
    if not guard.allow_private:
        for *_, sockaddr in infos:
            address = _sockaddr_ip(sockaddr)
            kind = _forbidden_kind(address)
            if kind is not None:
                raise _refusal(conn.host, address, kind, guard)
    sock, sockaddr = _connect_checked(conn, infos, guard)
    try:
        _check_peer(conn, sock, sockaddr, guard)
    except BaseException:
        sock.close()
        raise
    sys.audit("http.client.connect", conn, conn.host, conn.port)
    _track_current(sock)
    return sock


def _seconds_left(conn: HTTPConnection, guard: _Guard) -> float | None:
    """The connect timeout capped by the fetch deadline; None when neither bounds it."""
    timeout = conn.timeout
    limit = float(timeout) if isinstance(timeout, int | float) else None
    if guard.deadline_at is not None:
        remaining = guard.deadline_at - time.monotonic()
        limit = remaining if limit is None else min(limit, remaining)
    return limit


def _resolve_within(conn: HTTPConnection, host: str, guard: _Guard) -> list[_AddrInfo]:
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
    limit = _seconds_left(conn, guard)
    if limit is not None and limit <= 0:
        raise _ResolveTimeout(conn, f"no time left to resolve {host}", host)
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
        raise _ResolveTimeout(conn, f"DNS lookup for {host} timed out after {limit:.3g}s",
                              host)
    result = outcome[0]

    def answer() -> list[_AddrInfo]:
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[return-value]

    return _map_resolve_errors(conn, host, answer)


def _map_resolve_errors(conn: HTTPConnection, host: str,
                        call: Callable[[], list[_AddrInfo]]) -> list[_AddrInfo]:
    """Run the lookup ``call``, raising the errors urllib3 itself would raise."""
    try:
        infos = call()
    except socket.gaierror as exc:
        raise _Unresolved(host, conn, exc) from exc
    except UnicodeError as exc:
        raise urllib3.exceptions.LocationParseError(f"{host!r}: {exc}") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"Failed to resolve {host}: {exc}") from exc
    if not infos:
        error = socket.gaierror(socket.EAI_NONAME, "no addresses")
        raise _Unresolved(host, conn, error)
    return list(infos)


def _connect_checked(conn: HTTPConnection, infos: list[_AddrInfo],
                     guard: _Guard) -> tuple[socket.socket, tuple[object, ...]]:
    """Connect to the first reachable address of ``infos``: numeric sockaddrs, no lookup.

    Must not resolve anything: ``infos`` are the addresses that were checked.  Like
    urllib3, a failed or timed-out address moves on to the next one, all within the
    connect timeout and the deadline.
    """
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        limit = _seconds_left(conn, guard)
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
                guard: _Guard) -> None:
    """Belt and braces: the socket's peer must be the checked address, and allowed."""
    if guard.allow_private:
        return
    try:
        peer = _sockaddr_ip(sock.getpeername())
    except (OSError, ValueError) as exc:
        raise NewConnectionError(conn, f"cannot confirm the peer of {conn.host}: {exc}") from exc
    expected = _sockaddr_ip(sockaddr)
    if peer != expected:
        raise FetchError(f"refusing {conn.host}: connected to {peer}, not to the checked "
                         f"address {expected}", source_id=guard.source_id)
    kind = _forbidden_kind(peer)
    if kind is not None:
        raise _refusal(conn.host, peer, kind, guard, how="the connection reached")


def _vet_pooled(conn: HTTPConnection | None) -> None:
    """A kept-alive connection may predate this fetch's policy: re-check its peer.

    A connection opened by an ``allow_private_networks`` fetch must not carry a guarded
    fetch to a private address; it is closed, so urllib3 reconnects through
    ``_guarded_new_conn``, which checks a fresh lookup.
    """
    sock = getattr(conn, "sock", None)
    if conn is None or sock is None:
        return
    if not _current_guard().allow_private:
        try:
            kind = _forbidden_kind(_sockaddr_ip(sock.getpeername()))
        except (OSError, ValueError):
            kind = "unknown"
        if kind is not None:
            conn.close()
            return
    _track_current(sock)


def _check_response_peer(response: requests.Response, sock: socket.socket | None,
                         guard: _Guard, host: str) -> None:
    """Last line: refuse a response from a forbidden address, whatever urllib3 did."""
    if guard.allow_private or sock is None:
        return
    try:
        peer = _sockaddr_ip(sock.getpeername())
    except (OSError, ValueError):
        return  # already closed: nothing more can be read from it
    kind = _forbidden_kind(peer)
    if kind is not None:
        response.close()
        raise _refusal(host, peer, kind, guard, how="the response came from")


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self)  # TLS wraps it afterwards, for self.host


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _get_conn(self, timeout: float | None = None) -> HTTPConnection:
        conn = super()._get_conn(timeout)
        _vet_pooled(conn)
        return conn


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> HTTPConnection:
        conn = super()._get_conn(timeout)
        _vet_pooled(conn)
        return conn


class _WatchedAdapter(HTTPAdapter):
    """The only adapter ``fetch`` sends through: guarded, watched connections, no proxies.

    Used directly (``make_session(...).get(...)``), it applies the SSRF policy it was
    built with; inside ``fetch`` the fetch's own options win.
    """

    _allow_private = False  # also after unpickling, which skips __init__

    def __init__(self, *args: object, allow_private_networks: bool = False,
                 **kwargs: object) -> None:
        self._allow_private = allow_private_networks
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = {  # type: ignore[attr-defined]
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: object = None, verify: bool | str = True, cert: object = None,
             proxies: object = None) -> requests.Response:
        if proxies and select_proxy(request.url or "", proxies):  # type: ignore[arg-type]
            raise FetchError(_NO_PROXIES)
        token = None
        if _CURRENT_GUARD.get() is None:
            token = _CURRENT_GUARD.set(_Guard(source_id=None,
                                              allow_private=self._allow_private))
        try:
            return super().send(request, stream=stream, timeout=timeout,  # type: ignore[arg-type]
                                verify=verify, cert=cert, proxies=None)
        finally:
            if token is not None:
                _CURRENT_GUARD.reset(token)


_NO_PROXIES = ("refusing to fetch through a proxy: the SSRF guard must see the address "
               "it connects to")


class _Adapters:
    """Picks the adapter for each request of one fetch.

    A session built by ``make_session`` carries a ``_WatchedAdapter`` (and its connection
    pool).  Any other session — a plain ``requests.Session``, or one with custom adapters
    mounted — is served by a fetch-owned ``_WatchedAdapter`` instead, closed at the end of
    the fetch: its own adapters would connect without the guard and the watchdog.
    """

    def __init__(self, options: FetchOptions) -> None:
        self._options = options
        self._spare: _WatchedAdapter | None = None

    def for_url(self, session: requests.Session, url: str, source_id: str) -> _WatchedAdapter:
        if any(session.proxies.values()):
            raise FetchError(_NO_PROXIES, source_id=source_id)
        try:
            adapter = session.get_adapter(url)
        except requests.exceptions.InvalidSchema:
            adapter = None
        if isinstance(adapter, _WatchedAdapter):
            return adapter
        if self._spare is None:
            self._spare = _WatchedAdapter(
                max_retries=0, allow_private_networks=self._options.allow_private_networks)
        return self._spare

    def close(self) -> None:
        if self._spare is not None:
            self._spare.close()
