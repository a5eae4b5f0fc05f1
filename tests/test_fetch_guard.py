"""Tests for fetch.guard: which addresses are refused, in any spelling, before connecting.

The classification of literal addresses (nothing is resolved or connected to), then
fetches of URLs and redirect hops that lead inward: each is refused before a connection,
and the tripwire fails any test in which something tried to connect outside loopback.
"""

from __future__ import annotations

import ipaddress
import re

import pytest
import test_fetch_harness as harness
from pytest_httpserver import HTTPServer
from test_fetch_harness import (
    GUARDED,
    OPTIONS,
    FakeDNS,
    pretend_public,
    source,
)

from aggregator.errors import FetchError
from aggregator.ingest.fetch import fetch
from aggregator.ingest.fetch import guard as guard_mod

# The harness fixtures this module uses; ``loopback_only`` is autouse: no connect
# leaves loopback.  (Assigned, not imported, so parameters may shadow them.)
loopback_only = harness.loopback_only
dns = harness.dns


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.4", "private"),
        ("fc00::1", "private"),
        ("192.0.2.10", "private"),  # TEST-NET-1: documentation only, never routed
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("93.184.215.14", None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
    ],
)
def test_forbidden_address_classification(address: str, kind: str | None) -> None:
    # Pure classification of literal addresses: nothing is resolved or connected to.
    assert guard_mod.forbidden_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    ("host", "kind", "shown"),
    [
        ("127.0.0.1", "loopback", r"127\.0\.0\.1"),
        ("localhost", "loopback", r"(127\.0\.0\.1|::1)"),
        ("2130706433", "loopback", r"127\.0\.0\.1"),
        ("0x7f000001", "loopback", r"127\.0\.0\.1"),
        ("127.1", "loopback", r"127\.0\.0\.1"),
        ("017700000001", "loopback", r"127\.0\.0\.1"),
        ("[::ffff:127.0.0.1]", "loopback", r"127\.0\.0\.1"),
        ("[::1]", "loopback", r"::1"),
        ("0.0.0.0", "unspecified", r"0\.0\.0\.0"),
        ("169.254.169.254", "link-local", r"169\.254\.169\.254"),
        ("[fe80::1]", "link-local", r"fe80::1"),
        ("224.0.0.1", "multicast", r"224\.0\.0\.1"),
        ("100.64.0.1", "non-global", r"100\.64\.0\.1"),
    ],
)
def test_private_networks_refused_before_connecting(
    httpserver: HTTPServer, loopback_only: list[object], host: str, kind: str, shown: str
) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"secret")
    url = f"http://{host}:{httpserver.port}/feed"

    with pytest.raises(FetchError) as info:
        fetch(source(url), GUARDED)

    assert re.fullmatch(
        rf"refusing \S+: it resolves to {kind} address {shown} "
        r"\(private networks are not allowed\)",
        info.value.reason,
    ), info.value.reason
    assert str(info.value).startswith("[test-src] refusing ")
    assert httpserver.log == []


def test_same_urls_allowed_when_private_networks_allowed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"local")

    result = fetch(source(f"http://2130706433:{httpserver.port}/feed"), OPTIONS)

    assert result.content == b"local"


def test_hostname_resolving_inward_is_refused_after_one_lookup(
    httpserver: HTTPServer, dns: FakeDNS
) -> None:
    dns.answers["intranet.test"] = [["127.0.0.1"]]
    httpserver.expect_request("/feed").respond_with_data(b"secret")

    with pytest.raises(
        FetchError,
        match=r"^\[test-src\] refusing intranet\.test: it resolves to loopback address "
        r"127\.0\.0\.1 ",
    ):
        fetch(source(f"http://intranet.test:{httpserver.port}/feed"), GUARDED)

    assert httpserver.log == []
    assert dns.calls == ["intranet.test"]


def test_one_inward_address_refuses_the_whole_host(
    httpserver: HTTPServer, dns: FakeDNS, loopback_only: list[object]
) -> None:
    # 93.184.215.14 is only classified (public); the refusal comes before any connect,
    # and the tripwire shows nothing was connected to, not even the public-looking one.
    dns.answers["mixed.test"] = [["93.184.215.14", "127.0.0.1"]]
    httpserver.expect_request("/feed").respond_with_data(b"secret")

    with pytest.raises(FetchError, match=r"refusing mixed\.test: .* loopback address 127\.0\.0\.1"):
        fetch(source(f"http://mixed.test:{httpserver.port}/feed"), GUARDED)

    assert httpserver.log == []
    assert loopback_only == []


def test_redirect_hop_into_private_network_refused(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend 127.0.0.1 is a public portal so the first hop is allowed; the redirect to
    # another loopback address must still be refused by the guard, before connecting.
    pretend_public(monkeypatch, "127.0.0.1")
    httpserver.expect_request("/feed").respond_with_data(
        b"", status=302, headers={"Location": f"http://127.0.0.2:{httpserver.port}/admin"}
    )

    with pytest.raises(FetchError, match=r"refusing 127\.0\.0\.2: it resolves to loopback"):
        fetch(source(f"http://127.0.0.1:{httpserver.port}/feed"), GUARDED)
    assert len(httpserver.log) == 1


def test_redirect_hop_to_a_name_for_the_metadata_address_refused(
    httpserver: HTTPServer, dns: FakeDNS, monkeypatch: pytest.MonkeyPatch,
    loopback_only: list[object],
) -> None:
    pretend_public(monkeypatch, "127.0.0.1")
    dns.answers["metadata.test"] = [["169.254.169.254"]]
    httpserver.expect_request("/feed").respond_with_data(
        b"", status=301, headers={"Location": "http://metadata.test/latest/meta-data/"}
    )

    with pytest.raises(
        FetchError,
        match=r"refusing metadata\.test: it resolves to link-local address 169\.254\.169\.254",
    ):
        fetch(source(f"http://127.0.0.1:{httpserver.port}/feed"), GUARDED)

    assert len(httpserver.log) == 1
    assert dns.calls == ["metadata.test"]
