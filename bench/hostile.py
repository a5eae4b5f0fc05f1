"""Wall time and peak memory of `aggregator poll` against each hostile-portal case.

    .venv/bin/python bench/hostile.py [--deadline 30] [--only CASE ...]

Starts a loopback "portal" that misbehaves in one way per path, writes a config with
one source per case (plus one healthy source, to show it is never delayed), and runs
`/usr/bin/time -v aggregator poll --source CASE --source healthy` once per case, printing
the poll's summary line, wall time and peak RSS.  Not part of the test suite: the
tests assert behaviour, this measures it.
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MB = 1024 * 1024


def rss(items: str, title: str = "portal") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{title}</title>{items}</channel></rss>").encode()


def simple_items(count: int) -> str:
    return "".join(f"<item><title>条目 {i}</title><link>http://p.test/{i}</link>"
                   f"<guid>g{i}</guid></item>" for i in range(count))


def stream_zeros(total: int) -> Iterator[bytes]:
    chunk = b"\0" * MB
    for _ in range(total // MB):
        yield chunk


def stream_gzip_bomb(total: int) -> Iterator[bytes]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * MB
    for _ in range(total // MB):
        yield compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY l0 "lol">'
          + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
          + ']><rss version="2.0"><channel><title>t</title><item><title>&l9;</title>'
            "<link>http://e.test/1</link></item></channel></rss>").encode()
BIG_ENTITY = ('<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "' + "x" * 100_000 + '">]>'
              '<rss version="2.0"><channel><title>t</title><item><title>t</title>'
              "<link>http://e.test/2</link><description>" + "&a;" * 2000
              + "</description></item></channel></rss>").encode()
XXE = (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<rss version="2.0"><channel><title>t</title><item><title>&x;</title>'
       b"<link>http://e.test/3</link></item></channel></rss>")
AUTHORS = rss("".join(f"<item><title>t{i}</title><link>http://s.test/{i}</link>"
                      f"<author>{'a' * 65536}</author></item>" for i in range(20)))
MESSY = rss(
    "<item><description>只有正文</description></item>"
    "<item><title>dup</title><guid>same</guid></item><item><title>dup2</title><guid>same</guid></item>"
    "<item><title>old</title><pubDate>Mon, 01 Jan 1900 00:00:00 GMT</pubDate></item>"
    "<item><title>future</title><pubDate>Fri, 31 Dec 9999 23:59:59 GMT</pubDate></item>"
    "<item><title>ctrl\x01\x0bchars</title></item><item></item>")
INJECTION = rss('<item><title>&lt;script&gt;alert(1)&lt;/script&gt;x</title>'
                "<link>javascript:alert(2)</link><description><![CDATA["
                '<p onclick="alert(3)">p</p><script>alert(4)</script><iframe src="x"></iframe>'
                '<svg onload="alert(5)"></svg><a href="vbscript:x">v</a>'
                '<p style="background:url(javascript:alert(6))">s</p>]]></description></item>')

# case -> (what the server does, expected outcome)
Behaviour = Callable[[BaseHTTPRequestHandler], None]


def send(handler: BaseHTTPRequestHandler, body: bytes, content_type: str = "text/xml",
         status: int = 200, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def send_stream(handler: BaseHTTPRequestHandler, chunks: Iterator[bytes],
                headers: dict[str, str]) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/xml")
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    try:
        for chunk in chunks:
            handler.wfile.write(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


def drip(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/xml")
    handler.end_headers()
    try:
        for byte in rss(simple_items(50)):
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(1)
    except (BrokenPipeError, ConnectionResetError):
        pass


def hang(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(120)


CASES: dict[str, Behaviour] = {
    "healthy": lambda h: send(h, rss(simple_items(20))),
    "drip-1-byte-per-s": drip,
    "never-answers": hang,
    "body-2gib": lambda h: send_stream(h, stream_zeros(2048 * MB), {}),
    "gzip-bomb-1gib": lambda h: send_stream(h, stream_gzip_bomb(1024 * MB),
                                            {"Content-Encoding": "gzip"}),
    "redirect-loop": lambda h: send(h, b"", status=302, headers={"Location": h.path}),
    "redirect-chain-7": lambda h: send(
        h, b"", status=302,
        headers={"Location": f"/redirect-chain-7?{int(([*h.path.split('?'), '0'])[1]) + 1}"}),
    "redirect-to-file": lambda h: send(h, b"", status=302,
                                       headers={"Location": "file:///etc/passwd"}),
    "billion-laughs": lambda h: send(h, LAUGHS),
    "entity-100kb-x2000": lambda h: send(h, BIG_ENTITY),
    "xxe": lambda h: send(h, XXE),
    "authors-20x64kb": lambda h: send(h, AUTHORS),
    "random-bytes": lambda h: send(h, random.Random(1).randbytes(256 * 1024)),
    "html-page": lambda h: send(h, b"<!DOCTYPE html><html><body>hi</body></html>", "text/html"),
    "empty-200": lambda h: send(h, b""),
    "entries-20000": lambda h: send(h, rss(simple_items(20_000))),
    "messy-entries": lambda h: send(h, MESSY),
    "injection": lambda h: send(h, INJECTION),
    "gzip-ok": lambda h: send(h, gzip.compress(rss(simple_items(100))), "text/xml",
                              headers={"Content-Encoding": "gzip"}),
}


class Portal(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        name = self.path.strip("/").split("?")[0]
        behaviour = CASES.get(name)
        if behaviour is None:
            send(self, b"not found", status=404)
        else:
            behaviour(self)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", default="30s", help="fetch_deadline for the polls")
    parser.add_argument("--only", nargs="*", help="cases to run (default: all)")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    base = f"http://{host}:{port}/"
    work = Path(tempfile.mkdtemp(prefix="aggregator-hostile-"))
    lines = [f"database_url: sqlite:///{work}/db.sqlite", f"output_dir: {work}/public",
             "allow_private_networks: true", f"fetch_deadline: {args.deadline}", "sources:"]
    for name in CASES:
        lines += [f"  - id: {name}", f"    name: {name}", f'    url: "{base}{name}"',
                  "    categories: [hostile]"]
    config = work / "aggregator.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    aggregator = Path(sys.executable).with_name("aggregator")
    socket.setdefaulttimeout(5)

    print(f"{'case':<22} {'wall s':>7} {'peak MB':>8}  summary")
    for name in args.only or [c for c in CASES if c != "healthy"]:
        run = subprocess.run(
            ["/usr/bin/time", "-v", str(aggregator), "--config", str(config), "poll",
             "--source", name, "--source", "healthy"],
            capture_output=True, text=True, timeout=600)
        wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", run.stderr)
        seconds = (int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60
                   + float(wall.group(3))) if wall else float("nan")
        rss_kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
        peak = int(rss_kb.group(1)) / 1024 if rss_kb else float("nan")
        summary = next((line.split(None, 1)[1] for line in run.stdout.splitlines()
                        if line.startswith(name + " ")), run.stdout.strip()[-80:])
        healthy = next((line.split(None, 1)[1] for line in run.stdout.splitlines()
                        if line.startswith("healthy ")), "?")
        print(f"{name:<22} {seconds:7.2f} {peak:8.1f}  {summary}  | healthy: {healthy}")
    server.shutdown()


if __name__ == "__main__":
    main()
