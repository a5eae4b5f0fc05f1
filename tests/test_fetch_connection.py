"""Tests for fetch.connection: the address connected to is the address checked.

DNS rebinding, the peer checked again after the connect, kept-alive connections
re-vetted for a stricter fetch, TLS verified (and SNI sent) for the URL's name while
connecting to the resolved address against certifi's bundle whatever the environment
says, and the session's own policy when a ``make_session`` session is used directly.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_fetch_harness as harness
from pytest_httpserver import HTTPServer
from test_fetch_harness import (
    GUARDED,
    OPTIONS,
    FakeDNS,
    RawServer,
    pretend_public,
    source,
)

from aggregator.errors import FetchError
from aggregator.ingest.fetch import HttpSession, fetch, make_session
from aggregator.ingest.fetch import guard as guard_mod

# The harness fixtures this module uses; ``loopback_only`` is autouse: no connect
# leaves loopback.  (Assigned, not imported, so parameters may shadow them.)
loopback_only = harness.loopback_only
raw_server = harness.raw_server
dns = harness.dns


TEST_CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBbTCCAROgAwIBAgIBATAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJhZ2dyZWdh
dG9yIHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMB0x
GzAZBgNVBAMMEmFnZ3JlZ2F0b3IgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABK08NaN77R8oFV2XMI9cL1ZxwEdnM+iOE+Wj9Oc3Cz1A/St8ta5GLg/j
q/Qr0vUNMlS/ca6hSDm3WADj8wq46a2jQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYD
VR0PAQH/BAQDAgEGMB0GA1UdDgQWBBSKgGBEnj3CbyuCiGM0Yjo8dkB7VTAKBggq
hkjOPQQDAgNIADBFAiALQYCvdEYtrdoV2wdObs2oGfFfizyYflBc1l1PSHqWJAIh
ANMhR9af+WTSttBZ6xjialFzTPuT4gxfrQKZxljdHqKJ
-----END CERTIFICATE-----
"""
TEST_LEAF_PEM = """-----BEGIN CERTIFICATE-----
MIIBwjCCAWegAwIBAgIBAjAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJhZ2dyZWdh
dG9yIHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMB0x
GzAZBgNVBAMMEmZlZWRzLmV4YW1wbGUudGVzdDBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABLh83Y43WvG3f0rElufPAZARGRpcn2A9mJbrsYxpiO58s4P1gtvLht27
IYS8Y1jiID5lmJ423MrIErNxZmAdfoKjgZUwgZIwDAYDVR0TAQH/BAIwADAOBgNV
HQ8BAf8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwHQYDVR0RBBYwFIISZmVl
ZHMuZXhhbXBsZS50ZXN0MB8GA1UdIwQYMBaAFIqAYESePcJvK4KIYzRiOjx2QHtV
MB0GA1UdDgQWBBRvu6lUSQxXGaGL70o1oeu0ZnJjljAKBggqhkjOPQQDAgNJADBG
AiEAsQ3E9soCeTcmFcJGa37jAAjycisuhH8slwis5nOl6LICIQCv8qslEV4Bis6O
sAB4TplWFe8B94xqqtKaFjjs+zNBiw==
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8kyRfiXM5R1Svd1F
5UAPVkvtmIooDBR6IPmGhMvnuf+hRANCAAS4fN2ON1rxt39KxJbnzwGQERkaXJ9g
PZiW67GMaYjufLOD9YLby4bduyGEvGNY4iA+ZZieNtzKyBKzcWZgHX6C
-----END PRIVATE KEY-----
"""


@pytest.fixture
def portal(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    """A "public portal" on 127.0.0.2, on the same port as ``httpserver`` (127.0.0.1)."""
    server = HTTPServer(host="127.0.0.2", port=httpserver.port)
    try:
        server.start()
    except OSError as exc:  # the 127/8 block is not all loopback on every system
        pytest.skip(f"cannot listen on 127.0.0.2: {exc}")
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.mark.parametrize("session_kind", ["fetch's own", "make_session", "a lax session"])
def test_dns_rebinding_connects_only_to_the_checked_address(
    httpserver: HTTPServer,
    portal: HTTPServer,
    dns: FakeDNS,
    monkeypatch: pytest.MonkeyPatch,
    session_kind: str,
) -> None:
    # rebind.test answers "the portal" once, then the internal server at every later
    # lookup.  A fetch that checks one answer and connects with another reaches the
    # internal server; the fixed fetch resolves once and connects to what it checked.
    pretend_public(monkeypatch, "127.0.0.2")
    dns.answers["rebind.test"] = [["127.0.0.2"], ["127.0.0.1"]]
    portal.expect_request("/feed").respond_with_data(b"portal")
    httpserver.expect_request("/feed").respond_with_data(b"internal secret")
    session = {
        "fetch's own": None,
        "make_session": make_session(GUARDED),
        "a lax session": HttpSession(allow_private_networks=True),  # the fetch's options win
    }[session_kind]

    try:
        result = fetch(source(f"http://rebind.test:{httpserver.port}/feed"), GUARDED,
                       session=session)
    finally:
        if session is not None:
            session.close()

    assert result.content == b"portal"
    assert httpserver.log == []
    assert len(portal.log) == 1
    assert dns.calls == ["rebind.test"]


def test_allowed_private_hostname_is_reached_at_its_resolved_address(
    httpserver: HTTPServer, dns: FakeDNS
) -> None:
    dns.answers["feeds.test"] = [["127.0.0.1"]]
    httpserver.expect_request("/feed").respond_with_data(b"local feed")

    result = fetch(source(f"http://feeds.test:{httpserver.port}/feed"), OPTIONS)

    assert result.content == b"local feed"
    assert dns.calls == ["feeds.test"]  # our one lookup: urllib3 never resolved it again
    ((request, _),) = httpserver.log
    assert request.headers["Host"] == f"feeds.test:{httpserver.port}"  # the name, not the IP


def test_unreachable_checked_address_falls_through_to_the_next_one(
    httpserver: HTTPServer, dns: FakeDNS
) -> None:
    # Nothing listens on [::1] at this port (refused, or no IPv6 at all): the connect moves
    # on to the next checked address, as urllib3's own create_connection would.
    dns.answers["dual.test"] = [["::1", "127.0.0.1"]]
    httpserver.expect_request("/feed").respond_with_data(b"second address")

    result = fetch(source(f"http://dual.test:{httpserver.port}/feed"), OPTIONS)

    assert result.content == b"second address"
    assert dns.calls == ["dual.test"]


def test_peer_address_is_checked_again_after_connecting(
    raw_server: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A classifier that passes 127.0.0.1 once (the pre-connect check) and refuses it from
    # then on stands in for a connect that ended somewhere other than what was checked.
    real = guard_mod.forbidden_kind
    verdicts = iter([None])
    monkeypatch.setattr(
        guard_mod,
        "forbidden_kind",
        lambda ip: next(verdicts, "loopback") if str(ip) == "127.0.0.1" else real(ip),
    )
    finished = threading.Event()

    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        try:
            if server.read_request(conn):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        finally:
            finished.set()

    server = raw_server(handler)
    with pytest.raises(
        FetchError,
        match=r"refusing 127\.0\.0\.1: the connection reached loopback address 127\.0\.0\.1 ",
    ):
        fetch(source(server.url()), GUARDED)

    assert finished.wait(5)
    assert server.connections == 1  # the TCP connect happened...
    assert server.requests == [b""]  # ...but not one byte of a request was sent


def test_kept_alive_connection_is_rechecked_for_a_guarded_fetch(
    raw_server: Callable[..., RawServer],
) -> None:
    finished = threading.Event()

    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        try:
            while server.read_request(conn):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            finished.set()

    server = raw_server(handler)
    session = make_session(OPTIONS)
    try:
        assert fetch(source(server.url()), OPTIONS, session=session).content == b"ok"
        with pytest.raises(FetchError, match=r"refusing 127\.0\.0\.1: it resolves to loopback"):
            fetch(source(server.url()), GUARDED, session=session)  # same pooled connection
    finally:
        session.close()

    assert finished.wait(5)
    assert server.connections == 1
    assert [request for request in server.requests if request] == [server.requests[0]]


def test_make_session_used_directly_keeps_its_policy(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"direct")
    url = httpserver.url_for("/feed")

    with make_session(GUARDED) as guarded, make_session(OPTIONS) as allowed:
        with pytest.raises(FetchError, match=r"refusing \S+: it resolves to loopback address"):
            guarded.request("GET", url)
        assert allowed.request("GET", url).data == b"direct"

    assert len(httpserver.log) == 1


def tls_server(raw_server: Callable[..., RawServer],
               tmp_path: Path) -> tuple[RawServer, ssl.SSLContext]:
    """A TLS server answering "secure" with the test leaf certificate (``ca.pem`` and
    ``leaf.pem`` written to ``tmp_path``), and its context."""
    (tmp_path / "ca.pem").write_text(TEST_CA_PEM)
    (tmp_path / "leaf.pem").write_text(TEST_LEAF_PEM)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "leaf.pem")

    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            server.read_request(tls)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure")

    return raw_server(handler), context


def test_tls_verifies_and_sends_sni_for_the_url_hostname(
    raw_server: Callable[..., RawServer], dns: FakeDNS, tmp_path: Path
) -> None:
    # The connection goes to the resolved 127.0.0.1, but the certificate (valid only for
    # feeds.example.test) must be checked against the URL's name, and SNI must carry it.
    server, context = tls_server(raw_server, tmp_path)
    server_names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    dns.answers["feeds.example.test"] = [["127.0.0.1"]]
    dns.answers["other.example.test"] = [["127.0.0.1"]]
    session = HttpSession(allow_private_networks=True, ca_certs=str(tmp_path / "ca.pem"))
    try:
        result = fetch(source(f"https://feeds.example.test:{server.port}/feed"), OPTIONS,
                       session=session)
        with pytest.raises(FetchError, match=r"^\[test-src\] TLS error: .*Hostname mismatch"):
            fetch(source(f"https://other.example.test:{server.port}/feed"), OPTIONS,
                  session=session)
    finally:
        session.close()

    assert result.content == b"secure"
    assert server_names[:2] == ["feeds.example.test", "other.example.test"]


def test_tls_trusts_certifis_bundle_whatever_the_environment_says(
    raw_server: Callable[..., RawServer], dns: FakeDNS, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The environment names the test CA as the trust store: a session made by
    # make_session must not read it (certifi's bundle, as requests used, does not hold it).
    server, _context = tls_server(raw_server, tmp_path)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    dns.answers["feeds.example.test"] = [["127.0.0.1"]]
    refused = r"^\[test-src\] TLS error: CERTIFICATE_VERIFY_FAILED \(unable to get "
    with make_session(OPTIONS) as session, pytest.raises(FetchError, match=refused):
        fetch(source(f"https://feeds.example.test:{server.port}/feed"), OPTIONS,
              session=session)

    assert server.requests == []  # the handshake failed: no request was sent
