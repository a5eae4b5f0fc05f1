"""Tests for fetch.resolve: the one DNS lookup per connection, bounded in time.

A hung resolver is cut by the deadline or the connect timeout, and a name that does not
resolve is reported with the name.  The names are ``*.test`` names answered by the
harness's ``FakeDNS``: no lookup leaves the machine.
"""

from __future__ import annotations

import threading

import pytest
import test_fetch_harness as harness
from test_fetch_harness import (
    GUARDED,
    FakeDNS,
    options,
    source,
    timed_fetch,
)

from aggregator.errors import FetchError
from aggregator.ingest.fetch import fetch

# The harness fixtures this module uses; ``loopback_only`` is autouse: no connect
# leaves loopback.  (Assigned, not imported, so parameters may shadow them.)
loopback_only = harness.loopback_only
dns = harness.dns


def test_hung_dns_lookup_is_cut_by_the_deadline(dns: FakeDNS) -> None:
    dns.hung["slow.test"] = threading.Event()

    error, elapsed = timed_fetch(
        source("http://slow.test/feed"), options(deadline=1.0, connect_timeout=30)
    )

    assert error.reason == "exceeded the 1s deadline"
    assert 0.9 <= elapsed < 3.0
    assert dns.calls == ["slow.test"]


def test_hung_dns_lookup_is_cut_by_the_connect_timeout(dns: FakeDNS) -> None:
    dns.hung["slow.test"] = threading.Event()

    error, elapsed = timed_fetch(
        source("http://slow.test/feed"), options(connect_timeout=0.5, deadline=10)
    )

    assert error.reason == "DNS lookup for slow.test timed out"
    assert elapsed < 3.0


def test_unknown_host_is_a_dns_error(dns: FakeDNS) -> None:
    with pytest.raises(FetchError) as info:
        fetch(source("http://nowhere.test/feed"), GUARDED)

    assert info.value.reason == "DNS lookup failed for nowhere.test: Name or service not known"
    assert dns.calls == ["nowhere.test"]
