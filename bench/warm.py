"""The warm re-poll's cost per source: N sources that all answer 304, whole processes.

For each N (default 200, 2,000 and 10,000): a fresh SQLite database, one cold
``aggregator poll`` (every source a small RSS feed with an ``ETag``), then ``--runs``
warm ``aggregator poll``s in which every source answers 304 to its ``If-None-Match``.
Each ``aggregator`` run is a child process; its CPU (user + system, from
``resource.getrusage(RUSAGE_CHILDREN)``, so its own children included) and wall time are
measured.  Reported per N: the warm run's CPU, CPU per source, and the slope — the CPU
one more unchanged source costs, from one N to the next (fixed costs cancel out; the
target is ≤ 1 ms).

The code measured is the one ``--tree`` names (put first on PYTHONPATH), so one run
per tree gives a before/after:

    python bench/warm.py --tree /work/main
    python bench/warm.py --tree /work/wt-warmbatch

The portals are this process's own ``http.server`` threads on 16 loopback addresses
(per-host limits see many hosts).  This script must NOT touch the network beyond
loopback, nor any database but the ones it creates in its temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

HOSTS = 16
ENTRIES = 3
_PATH = re.compile(r"^/f/(\d+)\.xml$")


def feed(index: int) -> bytes:
    items = "".join(
        f"<item><title>源 {index} 条 {n}</title><link>http://example.com/{index}/{n}</link>"
        f"<guid>s{index}-{n}</guid><pubDate>Wed, 01 Jan 2025 0{n}:00:00 GMT</pubDate>"
        f"<description>正文 {index} {n}</description></item>" for n in range(ENTRIES))
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>源 {index}</title><link>http://example.com/{index}</link>"
            f"<description>d</description>{items}</channel></rss>").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts: ClassVar[dict[int, int]] = {200: 0, 304: 0}
    lock = threading.Lock()

    def do_GET(self) -> None:
        found = _PATH.match(self.path)
        if found is None:
            self.send_error(404)
            return
        index = int(found.group(1))
        etag = f'"v{index}"'
        status = 304 if self.headers.get("If-None-Match") == etag else 200
        with self.lock:
            self.counts[status] += 1
        body = b"" if status == 304 else feed(index)
        self.send_response(status)
        self.send_header("ETag", etag)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def start_portals() -> list[Server]:
    servers = [Server((f"127.0.0.{host + 1}", 0), Handler) for host in range(HOSTS)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers


def write_config(path: Path, workdir: Path, servers: list[Server], count: int) -> None:
    q = json.dumps
    lines = [f"database_url: {q(f'sqlite:///{workdir}/aggregator.db')}",
             f"output_dir: {q(str(workdir / 'public'))}",
             'site_url: "https://bench.example/"', "site_title: Warm",
             "allow_private_networks: true", "workers: 8", "sources:"]
    for index in range(count):
        host, port = servers[index % HOSTS].server_address[:2]
        lines += [f"  - id: s{index:05d}", f"    name: {q(f'源 {index}', ensure_ascii=False)}",
                  f"    url: {q(f'http://{host}:{port}/f/{index}.xml')}",
                  f"    categories: [{q('科技', ensure_ascii=False)}]", "    interval: 1h"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(tree: Path, config: Path) -> tuple[float, float]:
    """One ``aggregator poll``: (CPU seconds, wall seconds); exits on a failure."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), "poll"],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"aggregator poll failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the source tree whose aggregator is measured")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 10000])
    parser.add_argument("--runs", type=int, default=2, help="warm runs per size (best kept)")
    args = parser.parse_args()
    servers = start_portals()
    rows: list[tuple[int, float, float, float]] = []
    try:
        for count in args.sizes:
            with tempfile.TemporaryDirectory(prefix="warm-") as folder:
                workdir = Path(folder)
                config = workdir / "aggregator.yaml"
                write_config(config, workdir, servers, count)
                cold_cpu, cold_wall = run(args.tree, config)
                Handler.counts.update({200: 0, 304: 0})
                warm = min(run(args.tree, config) for _ in range(args.runs))
                if Handler.counts[200]:
                    sys.exit(f"N={count}: {Handler.counts[200]} warm requests were not 304")
                rows.append((count, cold_cpu, *warm))
                print(f"N={count:>6}: cold {cold_cpu:7.2f} s CPU ({cold_wall:6.2f} s wall); "
                      f"warm {warm[0]:6.2f} s CPU ({warm[1]:6.2f} s wall), "
                      f"{1000 * warm[0] / count:6.3f} ms CPU per source", flush=True)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    print(f"\ntree: {args.tree}")
    print("| sources | warm CPU s | warm wall s | ms CPU / source | slope ms CPU / extra source |")
    print("|---:|---:|---:|---:|---:|")
    previous: tuple[int, float] | None = None
    for count, _cold, cpu, wall in rows:
        slope = ("—" if previous is None
                 else f"{1000 * (cpu - previous[1]) / (count - previous[0]):.3f}")
        print(f"| {count:,} | {cpu:.2f} | {wall:.2f} | {1000 * cpu / count:.3f} | {slope} |")
        previous = (count, cpu)


if __name__ == "__main__":
    main()
