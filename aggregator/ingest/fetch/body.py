"""The response body: streamed in chunks, decompressed here, cut at the size limit.

Why this module exists: a feed may be endless, or a small gzip bomb that expands a
thousandfold, and the limit is on the decompressed size.  So the body is read raw
(``decode_content=False``) in ``CHUNK``-byte chunks and the Content-Encoding is undone by
``Decoder`` with ``zlib``'s ``max_length``, so it never expands beyond one chunk past the
limit in memory, whatever urllib3 version is installed.

What must not happen: buffering the whole body before counting it, letting urllib3
decode it, draining the rest of an over-limit body (the response is closed instead), or
reading on past the deadline between chunks.  Text decoding and charset sniffing belong
to the parse stage: this module hands back bytes.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator

from urllib3 import BaseHTTPResponse

from aggregator.errors import FetchError
from aggregator.ingest.fetch.errors import deadline_error
from aggregator.ingest.fetch.protocol import content_length

__all__ = ["CHUNK", "DecodeError", "Decoder", "read_body"]

CHUNK = 64 * 1024  # bytes read per step, and the most ``Decoder`` yields at once


def read_body(response: BaseHTTPResponse, limit: int, *, source_id: str,
              deadline_at: float, deadline: float) -> bytes:
    """The decompressed body of ``response``, at most ``limit`` bytes, before ``deadline_at``.

    ``deadline`` (seconds) only names the limit in the error.  Raises ``FetchError`` for a
    Content-Length or a body over the limit, an undecodable body and the deadline.
    """
    declared = content_length(response.headers.get("Content-Length"))
    if declared is not None and declared > limit:
        raise FetchError(f"Content-Length {declared} exceeds the {limit}-byte limit",
                         source_id=source_id)
    encoding = response.headers.get("Content-Encoding", "")
    try:
        decoder = Decoder(encoding)
    except DecodeError as exc:
        raise FetchError(str(exc), source_id=source_id) from exc

    parts: list[bytes] = []
    total = 0

    def keep(pieces: Iterator[bytes]) -> None:
        nonlocal total
        for piece in pieces:
            total += len(piece)
            if total > limit:
                raise FetchError(f"body exceeds the {limit}-byte limit "
                                 f"(after decompression)", source_id=source_id)
            parts.append(piece)

    try:
        for chunk in response.stream(CHUNK, decode_content=False):
            keep(decoder.feed(chunk))
            if time.monotonic() > deadline_at:
                raise deadline_error(source_id, deadline)
        keep(decoder.finish())
    except DecodeError as exc:
        raise FetchError(f"cannot decode the {encoding} body: {exc}",
                         source_id=source_id) from exc
    return b"".join(parts)


class DecodeError(Exception):
    """The Content-Encoding is unsupported or the compressed stream is broken."""


class Decoder:
    """Undo one gzip/deflate Content-Encoding incrementally, ``CHUNK`` bytes at a time.

    Every yielded piece is at most ``CHUNK`` bytes, so the caller can stop at its limit
    without a decompression bomb ever being expanded in memory.  "deflate" is accepted
    zlib-wrapped (as RFC 9110 says), raw (as many servers send) or as gzip (mislabelled);
    several gzip members are joined; trailing garbage after a complete stream is ignored,
    like urllib3 does.
    """

    def __init__(self, header: str) -> None:
        codings = [c.strip().lower() for c in header.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise DecodeError(f"unsupported stacked Content-Encoding {header!r}")
        if codings and codings[0] not in ("gzip", "x-gzip", "deflate"):
            raise DecodeError(f"unsupported Content-Encoding {header!r}")
        self._kind = codings[0] if codings else None
        self._obj: zlib._Decompress | None = None
        self._head = b""  # deflate: bytes held until the zlib header can be sniffed
        self._members = 0  # complete gzip members seen
        self._skip = False  # ignore trailing garbage after a complete stream, like urllib3

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of the next compressed ``data``."""
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
        """The last pieces; raises ``DecodeError`` if the stream stopped short."""
        if self._kind is None or self._skip:
            return
        if self._obj is None:
            if not self._head:
                return  # an empty body stays empty
            data, self._head = self._head, b""
            self._obj = zlib.decompressobj(self._wbits(data))
            yield from self._inflate(data)
        if not self._obj.eof and not self._skip:
            raise DecodeError("the compressed stream is truncated")

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
                out = obj.decompress(data, CHUNK)
            except zlib.error as exc:
                if self._members:
                    self._skip = True  # garbage after a complete member (e.g. zero padding)
                    return
                raise DecodeError(str(exc)) from exc
            if out:
                yield out
            if obj.eof:
                self._members += 1
                data = obj.unused_data
            else:
                data = obj.unconsumed_tail
                if not data and len(out) < CHUNK:
                    return  # all input consumed and no output pending
