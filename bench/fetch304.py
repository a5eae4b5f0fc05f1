"""The CPU one 304 costs the fetching thread: HttpFetcher, raw urllib3 and requests.

Why: issue 15 wants a warm re-poll (every source answers 304) to cost <= 1 ms of CPU per
source, and the fetch is most of that.  A loopback ``ThreadingHTTPServer`` answers 304
to ``If-None-Match`` (keep-alive); each client makes ``--fetches`` conditional GETs after
a warm-up, and the thread CPU (``resource.getrusage(RUSAGE_THREAD)``: user + system of
the fetching thread only, so the server threads do not count) is divided by the count.
Best of ``--repeat``.  Printed in µs per fetch:

- ``HttpFetcher``: the project's fetch (one session per thread), what a poll calls;
- ``urllib3.PoolManager``: a raw ``request`` with ``preload_content=False`` (the floor);
- ``requests.Session.get``: for comparison (the layer the fetch no longer uses).

It only uses public names (``HttpFetcher``, ``Source``, ``FetchOptions``,
``Validators``), so ``PYTHONPATH=<tree>`` measures any tree.  It must NOT touch the
network beyond loopback.  A benchmark, not a test: no assertions on the figures.

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/fetch304.py
"""

from __future__ import annotations

import argparse
import resource
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ETAG = '"v1"'


class NotModified(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the warm poll reuses its connections

    def do_GET(self) -> None:
        status = 304 if self.headers.get("If-None-Match") == ETAG else 200
        body = b"" if status == 304 else b"<rss/>"
        self.send_response(status)
        self.send_header("ETag", ETAG)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def measure(call: Callable[[], None], fetches: int, warmup: int, repeat: int) -> float:
    """Best-of-``repeat`` thread CPU per call, in µs."""
    for _ in range(warmup):
        call()
    best = float("inf")
    for _ in range(repeat):
        started = thread_cpu()
        for _ in range(fetches):
            call()
        best = min(best, (thread_cpu() - started) / fetches)
    return best * 1e6


def clients(url: str) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """Each client's one-304 call and its cleanup."""
    from aggregator.ingest.fetch import HttpFetcher
    from aggregator.records import FetchOptions, Source, Validators

    options = FetchOptions(allow_private_networks=True, deadline=10.0)
    src = Source(id="bench", name="bench", url=url, categories=("c",))
    validators = Validators(etag=ETAG)
    fetcher = HttpFetcher()

    def ours() -> None:
        assert fetcher(src, options, validators).status == 304

    import urllib3

    pool = urllib3.PoolManager()

    def raw() -> None:
        response = pool.request("GET", url, headers={"If-None-Match": ETAG}, redirect=False,
                                retries=False, preload_content=False)
        assert response.status == 304
        response.drain_conn()  # (reads nothing) the connection can be reused
        response.release_conn()

    import requests

    session = requests.Session()

    def wrapped() -> None:
        assert session.get(url, headers={"If-None-Match": ETAG}).status_code == 304

    return {"HttpFetcher": (ours, fetcher.close),
            "urllib3.PoolManager": (raw, pool.clear),
            "requests.Session.get": (wrapped, session.close)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fetches", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotModified)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/feed.xml"
        for name, (call, close) in clients(url).items():
            try:
                cost = measure(call, args.fetches, args.warmup, args.repeat)
            finally:
                close()
            print(f"{name:<22} {cost:8.0f} µs thread CPU per 304 "
                  f"(best of {args.repeat} × {args.fetches})")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
