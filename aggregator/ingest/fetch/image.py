"""The image proxy's fetch: one image URL → ``ImageResponse`` (or ``FetchError``).

Why this module exists: the builtin image proxy (``image_proxy: builtin``) fetches
third-party images on behalf of readers, which makes it an SSRF target exactly like a
source (Miniflux GHSA-xwh2-742g-w3wp: an image proxy that reached private addresses).
So it goes through the same ``fetch`` as sources — the deadline, the size limit,
redirects re-checked hop by hop, the address guard on the connected socket — and only
changes what a browser fetching an image would: ``Accept: image/*``, no cookies kept
between hops (a fresh session whose jar refuses every cookie), never a ``Referer``.

What it must NOT do: decide which content types are served (the endpoint does), cache,
retry, or keep a session between images (nothing of one origin reaches another).
A refused address becomes ``AddressRefused`` so the endpoint can count it apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy

from aggregator.errors import FetchError
from aggregator.ingest import fetch as _fetch
from aggregator.records import FetchOptions, Source, Validators

__all__ = ["IMAGE_ACCEPT", "IMAGE_SOURCE_ID", "AddressRefused", "ImageResponse", "fetch_image"]

IMAGE_ACCEPT = "image/*"
IMAGE_SOURCE_ID = "image-proxy"  # what errors name as their source


@dataclass(frozen=True, slots=True)
class ImageResponse:
    """What the image's origin answered (after redirects); ``body`` is empty on 304."""

    url: str
    status: int
    content_type: str  # as sent, "" when absent
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None


class AddressRefused(FetchError):
    """The image (or a redirect on its way) is on an address the guard refuses."""


def fetch_image(url: str, options: FetchOptions,
                validators: Validators | None = None) -> ImageResponse:
    """GET ``url`` as an image, within ``options``' limits and SSRF policy; conditional
    with ``validators``.  Raises ``FetchError`` (``AddressRefused`` for the guard)."""
    source = Source(id=IMAGE_SOURCE_ID, name="image proxy", url=url, categories=())
    session = _fetch.make_session(options)
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # keeps none
    try:
        result = _fetch.fetch(source, options, validators or Validators(), session,
                              accept=IMAGE_ACCEPT)
    except FetchError as exc:
        if exc.status is None and exc.reason.startswith("refusing "):
            raise AddressRefused(exc.reason, source_id=IMAGE_SOURCE_ID) from exc
        raise
    finally:
        session.close()
    return ImageResponse(url=result.url, status=result.status,
                         content_type=result.headers.get("content-type", ""),
                         body=result.content, etag=result.etag,
                         last_modified=result.last_modified)
