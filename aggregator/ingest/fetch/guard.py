"""The SSRF guard's rules: which URLs and which addresses a fetch refuses.

Why this module exists: a feed URL comes from configuration or from a redirect a portal
chose, and must never make the service talk to itself, its host or its network (cloud
metadata at 169.254.169.254, an admin port on 127.0.0.1, a LAN printer).  The rules live
here, as pure functions, so they can be read and tested without any network; the
connection classes in ``connection`` apply them to the addresses actually connected to.

What must not happen: a DNS lookup here (a name resolved now could resolve differently
when connecting — DNS rebinding; names are resolved once, by ``resolve``), or an address
slipping through because of how it is spelled.  Every spelling is normalized before it is
classified: decimal, hex, octal and short IPv4 forms are undone by the resolver, an IPv6
zone is dropped, and an IPv4 address inside an IPv4-mapped (``::ffff:a.b.c.d``) or 6to4
IPv6 address is judged as that IPv4 address.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from aggregator.errors import FetchError

__all__ = ["IPAddress", "check_url", "embedded_ipv4", "forbidden_kind", "refusal",
           "sockaddr_ip"]

ALLOWED_SCHEMES = frozenset({"http", "https"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_url(url: str, *, source_id: str) -> None:
    """Refuse, before any connection, a URL that is not http(s) or has no usable host.

    Deliberately no DNS lookup here: a name resolved now could resolve differently when
    connecting (DNS rebinding).  The addresses are checked by the connection classes, on
    the very addresses they connect to.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
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


def forbidden_kind(address: IPAddress) -> str | None:
    """Why ``address`` must not be fetched from, or None when it is a public address.

    The connection classes look this function up on this module at every check, so a
    test may replace ``guard.forbidden_kind`` to classify a loopback test server as a
    public portal.
    """
    address = embedded_ipv4(address) or address
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


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or 6to4 IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address.sixtofour
    return None


def sockaddr_ip(sockaddr: tuple[object, ...]) -> IPAddress:
    """The address of a socket address tuple (as ``getaddrinfo``/``getpeername`` give it)."""
    text = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone (fe80::1%eth0)
    return ipaddress.ip_address(text)


def refusal(host: str, address: IPAddress, kind: str, source_id: str | None,
            how: str = "it resolves to") -> FetchError:
    """The error for a refused address, showing an embedded IPv4 address as itself."""
    shown = embedded_ipv4(address) or address
    return FetchError(f"refusing {host}: {how} {kind} address {shown} "
                      f"(private networks are not allowed)", source_id=source_id)
