"""Tests for fetch.body: Content-Encoding decoding and the size limits.

Through ``fetch`` against loopback servers, plus ``body.Decoder``'s one-chunk bound on
its own.  The heavy cases (a 2 GiB body, a 1 GiB gzip bomb) are in test_fetch_limits.py.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest
import test_fetch_harness as harness
from pytest_httpserver import HTTPServer
from test_fetch_harness import (
    OPTIONS,
    options,
    source,
)
from werkzeug import Request, Response

from aggregator.errors import FetchError
from aggregator.ingest.fetch import body as body_mod
from aggregator.ingest.fetch import fetch

# The harness fixtures this module uses; ``loopback_only`` is autouse: no connect
# leaves loopback.  (Assigned, not imported, so parameters may shadow them.)
loopback_only = harness.loopback_only


# --------------------------------------------------------------------- Content-Encoding


def test_gzip_response_is_decompressed(httpserver: HTTPServer) -> None:
    body = b"<feed>" + b"entry " * 5000 + b"</feed>"
    httpserver.expect_request("/feed").respond_with_data(
        gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )

    result = fetch(source(httpserver.url_for("/feed")), OPTIONS)

    assert result.content == body
    assert result.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(zlib.compress, id="zlib-wrapped"),
        pytest.param(
            lambda data: (lambda c: c.compress(data) + c.flush())(
                zlib.compressobj(wbits=-zlib.MAX_WBITS)
            ),
            id="raw-deflate",
        ),
    ],
)
def test_deflate_response_is_decompressed(
    httpserver: HTTPServer, encode: Callable[[bytes], bytes]
) -> None:
    body = b"<rss>" + b"deflated " * 3000 + b"</rss>"
    httpserver.expect_request("/feed").respond_with_data(
        encode(body), headers={"Content-Encoding": "deflate"}
    )

    assert fetch(source(httpserver.url_for("/feed")), OPTIONS).content == body


def test_multi_member_gzip_and_trailing_padding(httpserver: HTTPServer) -> None:
    payload = gzip.compress(b"first-") + gzip.compress(b"second") + b"\0" * 16
    httpserver.expect_request("/feed").respond_with_data(
        payload, headers={"Content-Encoding": "gzip"}
    )

    assert fetch(source(httpserver.url_for("/feed")), OPTIONS).content == b"first-second"


def test_truncated_gzip_is_an_error(httpserver: HTTPServer) -> None:
    payload = gzip.compress(b"<rss>" + bytes(range(256)) * 100 + b"</rss>")
    httpserver.expect_request("/feed").respond_with_data(
        payload[: len(payload) // 2], headers={"Content-Encoding": "gzip"}
    )

    with pytest.raises(FetchError, match="truncated") as info:
        fetch(source(httpserver.url_for("/feed")), OPTIONS)
    assert info.value.source_id == "test-src"


def test_unsupported_content_encoding_is_an_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        b"\x0b\x02\x80hello\x03", headers={"Content-Encoding": "br"}
    )

    with pytest.raises(FetchError, match="unsupported Content-Encoding"):
        fetch(source(httpserver.url_for("/feed")), OPTIONS)


# -------------------------------------------------------------------------- size limits


def test_content_length_over_limit_rejected_early(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"x" * 5000)

    with pytest.raises(FetchError, match="Content-Length 5000 exceeds the 1000-byte limit"):
        fetch(source(httpserver.url_for("/feed"), max_bytes=1000), OPTIONS)


def _streamed(body: bytes, pieces: int = 10) -> Callable[[Request], Response]:
    size = max(1, len(body) // pieces)

    def handler(_: Request) -> Response:  # a generator body: no Content-Length header
        return Response(
            (body[i : i + size] for i in range(0, len(body), size)),
            content_type="application/rss+xml",
        )

    return handler


def test_streamed_body_over_limit_is_abandoned(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_handler(_streamed(b"y" * 300_000))

    with pytest.raises(FetchError, match="exceeds the 100000-byte limit"):
        fetch(source(httpserver.url_for("/feed")), options(max_bytes=100_000))
    ((_, response),) = httpserver.log
    assert "Content-Length" not in response.headers


def test_body_exactly_at_limit_is_accepted(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_handler(_streamed(b"z" * 100_000))

    result = fetch(source(httpserver.url_for("/feed")), options(max_bytes=100_000))

    assert result.content == b"z" * 100_000


def test_source_max_bytes_overrides_options(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"w" * 5000)

    result = fetch(source(httpserver.url_for("/feed"), max_bytes=10_000), options(max_bytes=10))

    assert len(result.content) == 5000


def test_gzip_bomb_counts_decompressed_bytes(httpserver: HTTPServer) -> None:
    compressed = gzip.compress(b"\0" * 20_000_000)
    assert len(compressed) < 100_000  # the declared Content-Length is far under the limit
    httpserver.expect_request("/feed").respond_with_data(
        compressed, headers={"Content-Encoding": "gzip"}
    )

    with pytest.raises(FetchError, match="exceeds the 1000000-byte limit"):
        fetch(source(httpserver.url_for("/feed"), max_bytes=1_000_000), OPTIONS)


def test_decoder_never_yields_more_than_one_chunk() -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    decoder = body_mod.Decoder("gzip")
    sizes = [len(piece) for piece in decoder.feed(bomb)]
    sizes += [len(piece) for piece in decoder.finish()]
    assert max(sizes) <= body_mod.CHUNK
    assert sum(sizes) == 5_000_000
