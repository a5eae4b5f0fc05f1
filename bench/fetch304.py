"""The CPU one 304 costs the fetching thread: HttpFetcher, raw urllib3 and requests.

Why: issue 15 wants a warm re-poll (every source answers 304) to cost <= 1 ms of CPU per
source, and the fetch is most of that.  A loopback ``ThreadingHTTPServer`` answers 304
to ``If-None-Match`` (keep-alive), in a child process (so its threads neither share the
GIL nor the fetching thread's CPU); each client makes ``--fetches`` conditional GETs
after a warm-up, and the thread CPU (``resource.getrusage(RUSAGE_THREAD)``: user +
system of the fetching thread only) is divided by the count.  The clients take turns,
``--repeat`` rounds, and each one's best round is printed (the machine's noise only ever
adds), in µs per fetch:

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
import multiprocessing
import resource
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


def measure(call: Callable[[], None], fetches: int) -> float:
    """Thread CPU per call over ``fetches`` calls, in µs."""
    started = thread_cpu()
    for _ in range(fetches):
        call()
    return (thread_cpu() - started) / fetches * 1e6


def serve(port: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotModified)
    server.daemon_threads = True
    port.put(server.server_address[1])
    server.serve_forever()


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
    queue: multiprocessing.SimpleQueue[int] = multiprocessing.SimpleQueue()
    server = multiprocessing.Process(target=serve, args=(queue,), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{queue.get()}/feed.xml"
        chosen = clients(url)
        best = dict.fromkeys(chosen, float("inf"))
        try:
            for call, _ in chosen.values():
                for _ in range(args.warmup):
                    call()
            for _ in range(args.repeat):
                for name, (call, _) in chosen.items():
                    best[name] = min(best[name], measure(call, args.fetches))
        finally:
            for _, close in chosen.values():
                close()
        for name, cost in best.items():
            print(f"{name:<22} {cost:8.0f} µs thread CPU per 304 "
                  f"(best of {args.repeat} × {args.fetches})")
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
