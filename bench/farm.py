"""A deterministic loopback "portal farm" for the benchmarks.

``Farm(sources=N, entries=M, seed=S)`` describes N portals of M entries each; ``FarmServer``
serves them from threaded HTTP servers on several loopback addresses (127.0.0.1,
127.0.0.2, ...) so that per-host limits see many hosts.  Everything is derived from the
seed, so two runs (and two commits) poll byte-identical feeds.

Per source ``i`` (independent patterns, so no category is all of one kind):

- validators: even ``i`` send ``ETag`` + ``Last-Modified`` and answer 304 to
  ``If-None-Match`` / ``If-Modified-Since``; odd ``i`` always send the whole body;
- encoding: half GBK (half of those declared ``gbk``, half declared ``gb2312`` while
  using GBK-only characters, some served as ``text/xml`` without a charset), half UTF-8;
- format: every fifth source is Atom 1.0, the rest RSS 2.0;
- entries: 2-4 KB HTML bodies (CJK and Latin paragraphs, ``<img>`` with http URLs,
  relative links, inline markup), CJK titles, authors, dates;
- one category out of ten, evenly spread and shuffled.

``Farm.change(fraction)`` moves ``fraction`` of the sources to their next version (a tenth
of their entries are new, the oldest ones drop off, ``ETag``/``Last-Modified`` change).
The changed sources are drawn from the first three categories only, so a build after the
change has a known set of affected categories.  ``/tiny/<id>.xml`` serves small 5-entry
feeds for the daemon memory test.

Options for farms too large to hold in memory (``bench/steady.py``; the defaults above are
what ``run.py`` relies on, byte for byte): ``entry_bytes`` (the HTML body size of an entry),
``all_validators`` (every source sends ``ETag`` + ``Last-Modified`` and answers 304) and
``version_at`` (source index -> its version now: changes driven by a clock instead of
``change``).  With ``version_at`` nothing is cached: a 200 renders its document, and the
validators come from (seed, source, version), so a 304 renders nothing.  ``FarmServer``'s
``on_request(index, status)`` sees every feed request (to time them).
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

CATEGORIES = ("科技", "财经", "体育", "娱乐", "汽车", "房产", "教育", "健康", "旅游", "军事")
CHANGED_CATEGORIES = 3  # changed sources are drawn from this many categories
BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
ENTRY_SPACING = timedelta(minutes=10)
ENTRY_BYTES = (2048, 4096)  # an entry's HTML body, by default
TINY_ENTRIES = 5
GBK_ONLY = "镕喆昇珺堃"  # in GBK, not in GB2312: "declared gb2312, sent GBK"
LATIN_TEXT = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua market report update analysis government city company "
    "technology growth season players season results electric vehicle launch school health"
)
LATIN = LATIN_TEXT.split()
PUNCT = "，，，、；"


def _cjk_pool() -> str:
    """The 3,755 level-1 GB2312 hanzi (common characters, encodable in GBK)."""
    chars = []
    for high in range(0xB0, 0xD8):
        for low in range(0xA1, 0xFF):
            try:
                chars.append(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return "".join(chars)


CJK = _cjk_pool()


@dataclass(frozen=True)
class SourceSpec:
    index: int
    id: str
    name: str
    category: str
    host_index: int
    validators: bool
    encoding: str  # "utf-8", "gbk" or "gb2312" (declared; bytes are GBK)
    atom: bool
    content_type: str

    @property
    def path(self) -> str:
        return f"/feeds/{self.id}.xml"


@dataclass
class Rendered:
    body: bytes
    etag: str
    last_modified: str
    last_modified_at: datetime


@dataclass(frozen=True)
class Stamp:
    """A document's validators without its body (what a conditional request needs)."""

    etag: str
    last_modified: str
    last_modified_at: datetime


@dataclass
class Farm:
    sources: int
    entries: int
    seed: int = 1
    hosts: int = 10
    entry_bytes: tuple[int, int] = ENTRY_BYTES
    all_validators: bool = False
    version_at: Callable[[int], int] | None = None
    specs: list[SourceSpec] = field(init=False)
    versions: list[int] = field(init=False)
    _cache: dict[tuple[int, int], Rendered] = field(init=False, default_factory=dict)
    _tiny: dict[int, Rendered] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.hosts = max(1, min(self.hosts, self.sources))
        rng = random.Random(f"farm:{self.seed}")
        cats = [CATEGORIES[k % len(CATEGORIES)] for k in range(self.sources)]
        rng.shuffle(cats)
        self.specs = []
        for i in range(self.sources):
            gbk = (i // 2) % 2 == 0
            encoding = ("gbk" if (i // 4) % 2 == 0 else "gb2312") if gbk else "utf-8"
            atom = i % 5 == 4
            if not gbk:
                content_type = "application/atom+xml; charset=utf-8" if atom else (
                    "application/rss+xml; charset=utf-8")
            elif i % 3 == 0:
                content_type = "text/xml"  # no charset: the XML declaration decides
            else:
                content_type = f"text/xml; charset={encoding}"
            self.specs.append(SourceSpec(
                index=i, id=f"s{i:04d}", name=f"门户{i:04d} Portal", category=cats[i],
                host_index=i % self.hosts, validators=self.all_validators or i % 2 == 0,
                encoding=encoding,
                atom=atom, content_type=content_type))
        self.versions = [0] * self.sources

    # --- changes ----------------------------------------------------------------

    @property
    def new_per_change(self) -> int:
        return max(1, self.entries // 10)

    def changed_sources(self, fraction: float = 0.1) -> list[int]:
        """The sources ``change`` moves: ``fraction`` of all, from the first categories."""
        pool = [s.index for s in self.specs if s.category in CATEGORIES[:CHANGED_CATEGORIES]]
        count = min(len(pool), max(1, math.ceil(self.sources * fraction)))
        return sorted(random.Random(f"change:{self.seed}").sample(pool, count))

    def change(self, fraction: float = 0.1) -> list[int]:
        chosen = self.changed_sources(fraction)
        with self._lock:
            for index in chosen:
                self.versions[index] += 1
        return chosen

    def reset(self) -> None:
        with self._lock:
            self.versions = [0] * self.sources

    def affected_categories(self, changed: list[int]) -> set[str]:
        return {self.specs[i].category for i in changed}

    # --- rendering --------------------------------------------------------------

    def version(self, index: int) -> int:
        """The version source ``index`` serves now."""
        if self.version_at is not None:
            return self.version_at(index)
        with self._lock:
            return self.versions[index]

    def stamp(self, index: int, version: int) -> Rendered | Stamp:
        """The validators of one version of a source (rendering it only when cached)."""
        if self.version_at is None:
            return self.render(index, version)
        spec = self.specs[index]
        digest = hashlib.sha1(f"{self.seed}:{spec.id}:{version}:{self.entries}:"
                              f"{self.entry_bytes}".encode()).hexdigest()[:20]
        modified = self._date(spec, self._newest(version)) + timedelta(minutes=1)
        return Stamp(etag=f'"{digest}"', last_modified=format_datetime(modified, usegmt=True),
                     last_modified_at=modified)

    def render(self, index: int, version: int | None = None) -> Rendered:
        """Source ``index``'s document (its current version unless ``version`` is given)."""
        if version is None:
            version = self.version(index)
        if self.version_at is not None:  # not cached; validators from the version alone
            rendered = self._render(self.specs[index], version)
            stamp = self.stamp(index, version)
            rendered.etag, rendered.last_modified = stamp.etag, stamp.last_modified
            rendered.last_modified_at = stamp.last_modified_at
            return rendered
        with self._lock:
            cached = self._cache.get((index, version))
        if cached is None:
            cached = self._render(self.specs[index], version)
            with self._lock:
                self._cache[(index, version)] = cached
        return cached

    def render_tiny(self, index: int) -> Rendered:
        with self._lock:
            cached = self._tiny.get(index)
        if cached is None:
            spec = SourceSpec(index=index, id=f"t{index:04d}", name=f"小站{index:04d}",
                              category="tiny", host_index=index % self.hosts, validators=True,
                              encoding="utf-8", atom=False,
                              content_type="application/rss+xml; charset=utf-8")
            numbers = range(TINY_ENTRIES - 1, -1, -1)
            cached = self._document(spec, numbers, newest=TINY_ENTRIES - 1, body_bytes=(200, 400))
            with self._lock:
                self._tiny[index] = cached
        return cached

    def total_bytes(self) -> int:
        return sum(len(self.render(i).body) for i in range(self.sources))

    def _newest(self, version: int) -> int:
        return version * self.new_per_change + self.entries - 1

    def _render(self, spec: SourceSpec, version: int) -> Rendered:
        first = version * self.new_per_change
        newest = self._newest(version)
        return self._document(spec, range(newest, first - 1, -1), newest,
                              body_bytes=self.entry_bytes)

    def _document(self, spec: SourceSpec, numbers: range, newest: int,
                  body_bytes: tuple[int, int]) -> Rendered:
        site = f"http://www{spec.host_index}.portal.example"
        items = [self._entry(spec, n, site, body_bytes) for n in numbers]
        updated = self._date(spec, newest)
        declared = spec.encoding.upper() if spec.encoding != "utf-8" else "utf-8"
        head = f'<?xml version="1.0" encoding="{declared}"?>\n'
        title = escape(spec.name)
        if spec.atom:
            text = (f'{head}<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="zh-CN">'
                    f"<title>{title}</title><id>{site}/{spec.id}</id>"
                    f'<link rel="alternate" href="{site}/"/>'
                    f'<link rel="self" href="{site}/{spec.id}.atom"/>'
                    f"<updated>{updated.isoformat()}</updated>"
                    f"{''.join(items)}</feed>\n")
        else:
            text = (f'{head}<rss version="2.0"><channel><title>{title}</title>'
                    f"<link>{site}/</link><description>{title} 最新新闻</description>"
                    f"<language>zh-cn</language>"
                    f"<lastBuildDate>{format_datetime(updated)}</lastBuildDate>"
                    f"{''.join(items)}</channel></rss>\n")
        body = text.encode("gbk" if spec.encoding != "utf-8" else "utf-8")
        etag = '"' + hashlib.sha1(body).hexdigest()[:20] + '"'
        modified = updated + timedelta(minutes=1)
        return Rendered(body=body, etag=etag, last_modified=format_datetime(modified, usegmt=True),
                        last_modified_at=modified)

    def _date(self, spec: SourceSpec, number: int) -> datetime:
        return BASE_TIME + number * ENTRY_SPACING + timedelta(seconds=7 * spec.index)

    def _entry(self, spec: SourceSpec, number: int, site: str,
               body_bytes: tuple[int, int]) -> str:
        rng = random.Random(f"entry:{self.seed}:{spec.id}:{number}")
        title = _cjk_text(rng, rng.randint(10, 24), punct=False)
        if rng.random() < 0.3:
            title += " " + " ".join(rng.choices(LATIN, k=rng.randint(1, 3))).title()
        if spec.encoding == "gb2312" and rng.random() < 0.5:
            title = rng.choice(GBK_ONLY) + title  # the portal says gb2312, sends GBK
        link = f"{site}/{spec.id}/{BASE_TIME.year}/{number:06d}.html"
        author = f"记者{_cjk_text(rng, 2, punct=False)}"
        html = _html_body(rng, spec, number, site, rng.randint(*body_bytes))
        date = self._date(spec, number)
        if spec.atom:
            return (f"<entry><title>{escape(title)}</title><id>{link}</id>"
                    f'<link rel="alternate" href="{link}"/>'
                    f"<published>{date.isoformat()}</published>"
                    f"<updated>{date.isoformat()}</updated>"
                    f"<author><name>{escape(author)}</name></author>"
                    f'<content type="html">{escape(html)}</content></entry>')
        guid = (f'<guid isPermaLink="false">{spec.id}-{number}</guid>' if number % 3
                else f"<guid>{link}</guid>")
        return (f"<item><title>{escape(title)}</title><link>{link}</link>{guid}"
                f"<pubDate>{format_datetime(date)}</pubDate><author>{escape(author)}</author>"
                f"<category>{escape(spec.category)}</category>"
                f"<description><![CDATA[{html}]]></description></item>")


def _cjk_text(rng: random.Random, length: int, punct: bool = True) -> str:
    chars = rng.choices(CJK, k=length)
    if punct:
        for position in range(rng.randint(6, 14), length, rng.randint(6, 14)):
            chars[position] = rng.choice(PUNCT)
        return "".join(chars) + "。"
    return "".join(chars)


def _html_body(rng: random.Random, spec: SourceSpec, number: int, site: str, target: int) -> str:
    parts: list[str] = []
    size = 0
    image = 0
    while size < target:
        roll = rng.random()
        if roll < 0.45:
            part = f"<p>{_cjk_text(rng, rng.randint(40, 120))}</p>"
        elif roll < 0.7:
            words = " ".join(rng.choices(LATIN, k=rng.randint(15, 45)))
            part = f"<p>{words.capitalize()}.</p>"
        elif roll < 0.85:
            image += 1
            part = (f'<p><img src="http://img{spec.host_index}.portal.example/{spec.id}/'
                    f'{number}-{image}.jpg" alt="{_cjk_text(rng, 6, punct=False)}" '
                    f'width="640" height="360"></p>')
        else:
            part = (f'<p><a href="/{spec.id}/related/{rng.randint(1, 99999)}.html">'
                    f"{_cjk_text(rng, 8, punct=False)}</a> <strong>"
                    f"{_cjk_text(rng, 4, punct=False)}</strong><br>"
                    f"<em>{' '.join(rng.choices(LATIN, k=4))}</em></p>")
        parts.append(part)
        size += len(part.encode("utf-8"))
    if not image:
        parts.insert(1, f'<p><img src="{site}/{spec.id}/{number}.jpg" alt="图"></p>')
    return "".join(parts)


# --------------------------------------------------------------------------- serving


# One port on every loopback address, so feed URLs, and with them the relative links the
# aggregator resolves against them, are the same in every run.
DEFAULT_PORT = 18480


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client gone (killed)
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FarmServer:
    """Serves a ``Farm`` on ``farm.hosts`` loopback addresses; counts traffic per phase."""

    def __init__(self, farm: Farm, port: int = DEFAULT_PORT,
                 on_request: Callable[[int, int], None] | None = None) -> None:
        self.farm = farm
        self.on_request = on_request  # (source index, status) of every feed request
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        handler = _handler_for(self)
        self._servers = self._bind(handler, port) if port else []
        if not self._servers:  # taken: any free ports (feed URLs then differ between runs)
            self._servers = self._bind(handler, 0)
        for host, server in enumerate(self._servers):
            thread = threading.Thread(target=server.serve_forever, name=f"farm-{host}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _bind(self, handler: type[BaseHTTPRequestHandler], port: int) -> list[_Server]:
        servers: list[_Server] = []
        try:
            for host in range(self.farm.hosts):
                servers.append(_Server((f"127.0.0.{host + 1}", port), handler))
        except OSError:
            for server in servers:
                server.server_close()
            return []
        return servers

    @property
    def fixed_port(self) -> bool:
        """Whether every host listens on the fixed port (feeds identical between runs)."""
        return len({s.server_address[1] for s in self._servers}) == 1

    def base_url(self, host_index: int) -> str:
        host, port = self._servers[host_index].server_address[:2]
        return f"http://{host}:{port}"

    def url(self, index: int) -> str:
        spec = self.farm.specs[index]
        return self.base_url(spec.host_index) + spec.path

    def tiny_url(self, index: int) -> str:
        return f"{self.base_url(index % self.farm.hosts)}/tiny/t{index:04d}.xml"

    def count(self, key: str, amount: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += amount

    def take_stats(self) -> dict[str, int]:
        with self._stats_lock:
            taken = dict(self.stats)
            self.stats.clear()
        return taken

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FarmServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _not_modified(handler: BaseHTTPRequestHandler, rendered: Rendered | Stamp) -> bool:
    inm = handler.headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return rendered.etag in tags or "*" in tags
    ims = handler.headers.get("If-Modified-Since")
    if ims:
        try:
            return rendered.last_modified_at <= parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
    return False


def _handler_for(owner: FarmServer) -> type[BaseHTTPRequestHandler]:
    farm = owner.farm
    by_path = {spec.path: spec for spec in farm.specs}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            spec = by_path.get(path)
            if spec is not None:
                self._feed(spec)
            elif path.startswith("/tiny/t") and path.endswith(".xml"):
                try:
                    index = int(path[len("/tiny/t"):-len(".xml")])
                except ValueError:
                    index = -1
                if index < 0:
                    self._plain(404, b"not found")
                else:
                    self._answer(farm.render_tiny(index), True,
                                 "application/rss+xml; charset=utf-8")
            else:
                self._plain(404, b"not found")

        def _feed(self, spec: SourceSpec) -> None:
            version = farm.version(spec.index)
            stamp = farm.stamp(spec.index, version)
            fresh = spec.validators and _not_modified(self, stamp)
            if owner.on_request is not None:
                owner.on_request(spec.index, 304 if fresh else 200)
            if fresh:
                self._not_modified(stamp)
            else:
                self._body(farm.render(spec.index, version), spec.validators, spec.content_type)

        def _answer(self, rendered: Rendered, validators: bool, content_type: str) -> None:
            if validators and _not_modified(self, rendered):
                self._not_modified(rendered)
            else:
                self._body(rendered, validators, content_type)

        def _not_modified(self, stamp: Rendered | Stamp) -> None:
            owner.count("requests")
            owner.count("304")
            self.send_response(304)
            self.send_header("ETag", stamp.etag)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _body(self, rendered: Rendered, validators: bool, content_type: str) -> None:
            owner.count("requests")
            owner.count("200")
            owner.count("bytes", len(rendered.body))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(rendered.body)))
            if validators:
                self.send_header("ETag", rendered.etag)
                self.send_header("Last-Modified", rendered.last_modified)
            self.end_headers()
            self.wfile.write(rendered.body)

        def _plain(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler
