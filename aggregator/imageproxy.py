"""Signed URLs of the builtin image proxy (``image_proxy: builtin``): one home for the key.

Why this module exists: our own ``/img/`` endpoint fetches whatever URL it is given,
so it must only fetch URLs this aggregator put into its feeds — otherwise it is an open
proxy.  Normalize signs every image URL it rewrites (``signed_url``) and the endpoint
checks the signature (``verify``) in constant time before any network access; both
sides use these two functions, so the format cannot drift apart.

The format: ``<site_url>img/<signature>/<encoded>``, where ``encoded`` is the image
URL's UTF-8 bytes in URL-safe base64 without padding and ``signature`` the first
``SIGNATURE_BYTES`` bytes of HMAC-SHA256(secret, those bytes), URL-safe base64 too.
Such a URL never changes for a given image and key (caches may keep it forever).

What this module must NOT do: fetch, log, read the environment or the config (the key
comes in ``BuiltinImageProxy``), or accept anything but http(s) URLs back out of
``verify``.  Standard library only: it is at the bottom of the tree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from aggregator.records import BuiltinImageProxy

__all__ = ["PATH_SEGMENT", "SIGNATURE_BYTES", "endpoint", "signed_url", "verify"]

PATH_SEGMENT = "img/"  # below site_url
SIGNATURE_BYTES = 18  # 144 bits of HMAC-SHA256: 24 base64 characters, no padding
_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def endpoint(site_url: str) -> str:
    """Where signed URLs of ``site_url`` start: ``site_url`` (with its slash) + ``img/``."""
    return (site_url if site_url.endswith("/") else site_url + "/") + PATH_SEGMENT


def signed_url(image_url: str, proxy: BuiltinImageProxy) -> str:
    """``image_url`` through our own endpoint, signed with ``proxy.secret``."""
    raw = image_url.encode("utf-8", "surrogatepass")
    return f"{endpoint(proxy.site_url)}{_sign(raw, proxy.secret)}/{_b64(raw)}"


def verify(signature: str, encoded: str, secret: bytes) -> str | None:
    """The image URL of a signed path, or None: bad base64, a wrong signature, not
    UTF-8, not http(s).  The signature is compared with ``hmac.compare_digest``."""
    try:
        raw = _unb64(encoded)
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        return None
    expected = hmac.new(secret, raw, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    if not hmac.compare_digest(given, expected):
        return None
    try:
        url = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return url if url[:7].lower() == "http://" or url[:8].lower() == "https://" else None


def _sign(raw: bytes, secret: bytes) -> str:
    return _b64(hmac.new(secret, raw, hashlib.sha256).digest()[:SIGNATURE_BYTES])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _ALPHABET.fullmatch(text):
        raise ValueError("not unpadded URL-safe base64")
    data = text.encode("ascii")
    # validate=True: a character outside the URL-safe alphabet is an error, not skipped
    return base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
