"""Shared harness of the tests/test_fetch*.py files: loopback servers, a tripwire, a resolver.

Most fetch tests use pytest-httpserver; the slow/hostile servers (drip, hang, keep-alive
then drip) are ``RawServer``s, raw threaded sockets on 127.0.0.1, because they need
byte-level control.  No test talks to a non-loopback address: the SSRF tests that name
other addresses either are refused before connecting (the ``loopback_only`` tripwire on
``socket.connect`` makes sure) or only classify literal addresses.  Host names are
``*.test`` names answered by ``FakeDNS``, a seam on ``socket.getaddrinfo`` that never lets
a lookup leave the machine.

The other modules import from here (tests/ is on ``sys.path``, as for served_site).  A
module that fetches must bind ``loopback_only`` in its namespace: pytest finds fixtures
by module attribute, and this one is autouse.  The tests below only check the harness.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aggregator.errors import FetchError
from aggregator.ingest.fetch import fetch
from aggregator.ingest.fetch import guard as guard_mod
from aggregator.records import FetchOptions, Source

OPTIONS = FetchOptions(
    allow_private_networks=True, connect_timeout=2.0, read_timeout=5.0, deadline=10.0
)
GUARDED = FetchOptions(
    allow_private_networks=False, connect_timeout=2.0, read_timeout=5.0, deadline=10.0
)


def source(url: str, **kwargs: object) -> Source:
    return Source(id="test-src", name="Test", url=url, categories=("c",), **kwargs)  # type: ignore[arg-type]


def options(**changes: object) -> FetchOptions:
    values = {
        "allow_private_networks": True,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "deadline": 10.0,
    }
    values.update(changes)
    return FetchOptions(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- raw servers

Handler = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """A threaded TCP server on 127.0.0.1 running ``handler(conn, stop)`` per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def url(self, path: str = "/feed") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(10)
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client went away
            self.handler(conn, self.stop)

    def read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        self.requests.append(data)
        return data

    def close(self) -> None:
        self.stop.set()
        for sock in (self.listener, *self._conns):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in (self.listener, *self._conns):
            sock.close()


@pytest.fixture
def raw_server() -> Iterator[
    Callable[[Callable[[RawServer, socket.socket, threading.Event], None]], RawServer]
]:
    servers: list[RawServer] = []

    def start(handler: Callable[[RawServer, socket.socket, threading.Event], None]) -> RawServer:
        holder: list[RawServer] = []
        server = RawServer(lambda conn, stop: handler(holder[0], conn, stop))
        holder.append(server)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def drip(
    conn: socket.socket, stop: threading.Event, data: bytes = b"x" * 35, interval: float = 0.2
) -> None:
    """Send one byte per ``interval`` until done, stopped or disconnected (server pacing).

    The drip lasts about 7 s, then the server hangs up: a fetch without a working
    deadline fails the ``elapsed < 5`` bounds instead of hanging the test run.
    """
    for byte in data:
        if stop.is_set():
            return
        conn.sendall(bytes([byte]))
        stop.wait(interval)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed_fetch(src: Source, opts: FetchOptions, **kwargs: object) -> tuple[FetchError, float]:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch(src, opts, **kwargs)  # type: ignore[arg-type]
    return info.value, time.monotonic() - started


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or bool(mapped and mapped.is_loopback)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Tripwire, not a mock: a connect to anything but loopback fails instead of leaving.

    The SSRF tests hand the fetch link-local, multicast and public-looking addresses; if
    the guard ever let one through, no packet leaves the machine and the test fails.
    """
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: tuple[str, int]) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(address)
            raise OSError(errno.ENETUNREACH, f"test tripwire: no traffic to {address}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"something tried to connect outside loopback: {attempts}"


class FakeDNS:
    """Our resolver seam: ``socket.getaddrinfo`` answers ``*.test`` names from a table.

    ``answers[name]`` lists successive answers (each a list of addresses; the last one
    repeats); ``hung[name]`` blocks the lookup until the test ends.  Any other ``.test``
    name fails like NXDOMAIN, so no lookup ever leaves the machine; other names
    (localhost, numeric spellings) go to the real resolver.
    """

    def __init__(self, real: Callable[..., list[Any]]) -> None:
        self.real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.hung: dict[str, threading.Event] = {}
        self.calls: list[str] = []

    def __call__(self, host: str | bytes | None, port: object, family: int = 0,
                 type: int = 0, proto: int = 0, flags: int = 0) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.rstrip(".").endswith(".test"):
            return self.real(host, port, family, type, proto, flags)
        self.calls.append(name)
        if name in self.hung:
            self.hung[name].wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        queue = self.answers.get(name)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        rows: list[Any] = []
        for text in addresses:
            if ipaddress.ip_address(text).version == 6:
                if family != socket.AF_INET:
                    rows.append((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                                 (text, port, 0, 0)))
            elif family != socket.AF_INET6:
                rows.append((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                             (text, port)))
        return rows


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDNS]:
    fake = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield fake
    for event in fake.hung.values():
        event.set()  # let abandoned lookup threads finish


def pretend_public(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    """Classify these loopback addresses as public portals (the servers stay on loopback).

    Replaces the guard's public classifier, ``guard.forbidden_kind``, for one test: the
    only way to let one loopback server through a guarded fetch while another stays
    refused (``allow_private_networks`` lets all of them through).
    """
    real = guard_mod.forbidden_kind
    monkeypatch.setattr(
        guard_mod, "forbidden_kind", lambda ip: None if str(ip) in addresses else real(ip)
    )


# --------------------------------------------------------------------------- the harness itself


def test_fake_dns_answers_in_turn_and_repeats_the_last(dns: FakeDNS) -> None:
    # The rebinding tests rely on this: a first answer, then another one for every
    # later lookup.
    dns.answers["turns.test"] = [["127.0.0.2"], ["127.0.0.1"]]

    answers = [socket.getaddrinfo("turns.test", 80, socket.AF_INET, socket.SOCK_STREAM)
               for _ in range(3)]

    assert [[row[4][0] for row in rows] for rows in answers] == [
        ["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]]
    assert dns.calls == ["turns.test"] * 3


def test_fake_dns_fails_unknown_test_names_like_nxdomain(dns: FakeDNS) -> None:
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("unlisted.test", 80)

    assert info.value.errno == socket.EAI_NONAME
    assert dns.calls == ["unlisted.test"]


def test_pretend_public_changes_only_the_named_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pretend_public(monkeypatch, "127.0.0.2")

    assert guard_mod.forbidden_kind(ipaddress.ip_address("127.0.0.2")) is None
    assert guard_mod.forbidden_kind(ipaddress.ip_address("127.0.0.1")) == "loopback"
