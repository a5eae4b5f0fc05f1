"""Heavy size-limit cases for aggregator.ingest.fetch: endless bodies and decompression bombs.

The servers are raw threaded sockets on 127.0.0.1 that *generate* their bodies while
sending (a 2 GiB stream, a 1 GiB-of-zeros gzip stream compressed chunk by chunk), so the
test process never holds more than one small block of either.  Their send buffers are made
small so they stay lazy: once the client stops reading they block, and once it hangs up
they stop.  What must not happen: the fetch draining the stream, or the fetch's memory
growing with the decompressed size rather than with the limit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from builders import make_source

from aggregator.errors import FetchError
from aggregator.ingest.fetch import fetch
from aggregator.records import FetchOptions, Source

MiB = 1024 * 1024
GiB = 1024 * MiB
LIMIT = 2 * MiB  # per-source max_bytes; the options' default (10 MB) must not apply
OPTIONS = FetchOptions(allow_private_networks=True, connect_timeout=2.0, read_timeout=5.0,
                       deadline=10.0)
ZEROS = bytes(MiB)  # the one block every generated body is made of


class StreamServer:
    """Serves ``head`` then the blocks of ``body()`` to the first connection, then closes.

    ``sent`` counts the body bytes handed to the kernel; ``done`` is set when the server
    stopped sending (body exhausted or the client gone).
    """

    def __init__(self, head: bytes, body: Iterator[bytes]) -> None:
        self.head = head
        self.body = body
        self.sent = 0
        self.done = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/feed"

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            self.done.set()
            return
        self.conn = conn
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            conn.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                piece = conn.recv(4096)
                if not piece:
                    return
                request += piece
            conn.sendall(self.head)
            for block in self.body:
                conn.sendall(block)
                self.sent += len(block)
        except OSError:
            pass  # the client hung up: exactly what the limit should make it do
        finally:
            self.done.set()
            conn.close()

    def close(self) -> None:
        for sock in (self.listener, self.conn):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def stream_server() -> Iterator[Callable[[bytes, Iterator[bytes]], StreamServer]]:
    servers: list[StreamServer] = []

    def start(head: bytes, body: Iterator[bytes]) -> StreamServer:
        server = StreamServer(head, body)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def endless_zeros(total: int) -> Iterator[bytes]:
    """``total`` bytes of zeros, one shared 1 MiB block at a time (never materialized)."""
    for _ in range(total // len(ZEROS)):
        yield ZEROS


def gzip_of_zeros(total: int, compressor: zlib._Compress) -> Iterator[bytes]:
    """A gzip stream of ``total`` zero bytes, compressed block by block as it is sent.

    Each 1 MiB block is sync-flushed (about 1 KiB on the wire), so the client gets the
    bomb as fast as it reads instead of waiting for zlib to fill its own output buffer.
    """
    for block in endless_zeros(total):
        yield compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()


def test_the_bomb_generator_is_a_valid_gzip_stream_of_zeros() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    wire = b"".join(gzip_of_zeros(8 * MiB, compressor))

    assert len(wire) < 16 * 1024  # a bomb: over 500 times smaller than what it expands to
    assert zlib.decompress(wire, 16 + zlib.MAX_WBITS) == bytes(8 * MiB)


def measured_fetch(src: Source) -> tuple[FetchError, float, int]:
    """Fetch expecting a FetchError; the elapsed time and tracemalloc's peak (all threads)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        started = time.monotonic()
        with pytest.raises(FetchError) as info:
            fetch(src, OPTIONS)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info.value, elapsed, peak


source = partial(make_source, source_id="huge", name="Huge", max_bytes=LIMIT)


def test_2gib_streamed_body_is_abandoned_at_the_limit(
    stream_server: Callable[[bytes, Iterator[bytes]], StreamServer],
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nConnection: close\r\n\r\n"
    server = stream_server(head, endless_zeros(2 * GiB))  # no Content-Length to reject early

    error, elapsed, peak = measured_fetch(source(server.url()))

    assert error.reason == f"body exceeds the {LIMIT}-byte limit (after decompression)"
    assert error.source_id == "huge"
    assert elapsed < 3.0
    assert peak < 3 * LIMIT
    assert server.done.wait(5), "the server is still sending: the body was drained"
    assert server.sent < 64 * MiB  # abandoned near the limit, nowhere near 2 GiB
    print(f"\n2 GiB body: {elapsed:.3f}s, tracemalloc peak {peak / MiB:.2f} MiB, "
          f"server sent {server.sent / MiB:.0f} MiB")


def test_1gib_gzip_bomb_costs_about_the_limit_in_memory(
    stream_server: Callable[[bytes, Iterator[bytes]], StreamServer],
) -> None:
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
            b"Content-Encoding: gzip\r\nConnection: close\r\n\r\n")
    # Made before tracemalloc starts: the server's own zlib state is not the fetch's cost.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    server = stream_server(head, gzip_of_zeros(GiB, compressor))

    error, elapsed, peak = measured_fetch(source(server.url()))

    assert error.reason == f"body exceeds the {LIMIT}-byte limit (after decompression)"
    assert elapsed < 3.0
    assert peak < 3 * LIMIT
    assert server.done.wait(5), "the server is still sending: the bomb was drained"
    assert server.sent < GiB // 1000 // 2  # the client stopped well before the bomb's end
    print(f"\n1 GiB gzip bomb: {elapsed:.3f}s, tracemalloc peak {peak / MiB:.2f} MiB, "
          f"server sent {server.sent / 1024:.0f} KiB compressed")
