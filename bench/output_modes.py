"""Published feeds (issue 12): a shared output_dir the workers write, or rendered per request.

    .venv/bin/python bench/output_modes.py [--articles 20000] [--seconds 5] [--builds 7]
                                           [--lookups 2000] [--misses 50]
                                           [--backends postgresql,sqlite] [--pg-quiet 11]
                                           [--out bench/results/output-modes-<timestamp>.json]

Both modes with the project's own store (``Store``), feed writer (``publish``) and HTTP
server (``FeedServer``), on a fresh database holding ``--articles`` articles of 2–4 KB over
ten categories (ten sources each):

- **shared output_dir** (what the workers do now): after one new article in one category,
  one ``publish.build(..., only={category})`` (wall ms, median of ``--builds``; SQL
  statements; bytes written), then the web role's app (``make_app`` + ``FeedServer``)
  serving that category's ``rss.xml`` under ``wrk`` (200, gzip, 304 with If-None-Match);
  freshness = ``build_debounce`` + the worker's idle wait + one build.
- **render from the database** (the alternative; emulated here, not in ``aggregator/``):
  a ``category_versions(category, version)`` table in the bench database, per request
  one version lookup (a read transaction through SQLAlchemy/psycopg, as a ``Store`` read
  does) and a per-process cache keyed by (category, version); a miss is
  ``Store.latest_articles(category, feed_size)`` + ``feeds.render_rss`` +
  ``feeds.render_atom`` (+ gzip of both).  Version lookups and misses are timed alone
  (p50/p99), then a WSGI app on the same ``FeedServer`` is loaded: hits (200, gzip, 304)
  and every request a miss (the cache off: a category that changes all the time).

Per load it counts what the database saw per request: SQL statements and transactions
from SQLAlchemy's events, and on PostgreSQL the server's own ``xact_commit +
xact_rollback`` (read once every backend had been idle ``--pg-quiet`` s, so their
statistics were flushed) and the CPU its backends used.  The serving process's CPU per
request is the bench process's (``wrk`` runs apart).  ``os.getloadavg()`` is recorded
before every load: the machine may be shared.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import platform
import random
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from farm import CATEGORIES, CJK, LATIN
from measure import get, load
from run import current_commit
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session
from transactions import Postgres

from aggregator import publish
from aggregator.config import Settings
from aggregator.httpsemantics import accepts_gzip, is_not_modified
from aggregator.publish import feeds
from aggregator.publish.paths import category_paths
from aggregator.records import Article, FeedOptions, Source, SourceState, SourceUpdate
from aggregator.service.http import CACHE_CONTROL, FeedServer, content_type_for, make_app
from aggregator.service.logs import configure
from aggregator.service.worker import IDLE_WAIT
from aggregator.store import Store, make_engine

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
from builders import make_article  # noqa: E402  (tests/ is not a package)

SITE_URL = "http://feeds.bench.example/"
SOURCES_PER_CATEGORY = 10
SERVER_THREADS = 8  # FeedServer's default
NEWEST = datetime(2026, 1, 1, tzinfo=UTC)
VERSIONS_DDL = "CREATE TABLE category_versions (category text PRIMARY KEY, version bigint NOT NULL)"
VERSION_SQL = text("SELECT version FROM category_versions WHERE category = :category")
BUMP_SQL = text("UPDATE category_versions SET version = version + 1 WHERE category = :category")


# --------------------------------------------------------------------------- numbers


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def p50_p99(samples: Sequence[float]) -> dict[str, float]:
    """Median and 99th percentile (interpolated; with few samples near the maximum), in ms."""
    ordered = sorted(samples)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98] if len(ordered) > 1 \
        else ordered[0]
    return {"p50_ms": ms(statistics.median(ordered)), "p99_ms": ms(p99),
            "max_ms": ms(ordered[-1]), "n": len(ordered)}


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def cpu_seconds() -> float:
    """User + system CPU of this process (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- articles


@dataclass(frozen=True)
class Corpus:
    """The configured sources (ten per category) and the options a build is given."""

    sources: list[Source]
    options: FeedOptions

    @property
    def source_ids(self) -> set[str]:
        return {s.id for s in self.sources}


def make_corpus(output_dir: Path) -> Corpus:
    sources = [Source(id=f"s{n:03d}", name=f"门户{n:03d} Portal", url=f"http://p.test/{n}.xml",
                      categories=(CATEGORIES[n % len(CATEGORIES)],), language="zh-CN")
               for n in range(len(CATEGORIES) * SOURCES_PER_CATEGORY)]
    options = FeedOptions(output_dir=str(output_dir), site_url=SITE_URL, feed_size=50,
                          title_prefix="Bench · ", site_title="Bench", language="zh-CN",
                          category_languages={c: "zh-CN" for c in CATEGORIES},
                          source_names={s.id: s.name for s in sources})
    return Corpus(sources, options)


def paragraphs(rng: random.Random, count: int = 400) -> list[str]:
    """A pool of HTML paragraphs (CJK, Latin, images) that article bodies are drawn from."""
    pool = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.55:
            pool.append(f"<p>{''.join(rng.choices(CJK, k=rng.randint(40, 120)))}。</p>")
        elif roll < 0.85:
            pool.append(f"<p>{' '.join(rng.choices(LATIN, k=rng.randint(15, 45)))}.</p>")
        else:
            pool.append(f'<p><img src="https://img.portal.example/{n}.jpg" alt="图"></p>')
    return pool


def article(number: int, source: Source, rng: random.Random, pool: list[str]) -> Article:
    """Article ``number`` (the newest is 0, one minute apart) of ``source``: 2–4 KB of HTML."""
    target = rng.randint(2048, 4096)
    body: list[str] = []
    while sum(len(p.encode()) for p in body) < target:
        body.append(rng.choice(pool))
    title = "".join(rng.choices(CJK, k=rng.randint(10, 24)))
    date = NEWEST - timedelta(minutes=number)
    key = f"{source.id}-{number}"
    content = "".join(body)
    return make_article(key, source_id=source.id, title=title, author=f"记者{number % 37}",
                        date=date, first_seen=date, updated_at=date,
                        categories=source.categories, content=content,
                        summary=content.split("</p>", 1)[0][3:203],
                        headimg=f"https://img.portal.example/{key}.jpg")


def commit(store: Store, source: Source, articles: list[Article]) -> None:
    """Store a parsed document's articles as one successful poll of ``source``."""
    state = SourceState(source_id=source.id, url=source.url, last_poll_at=NEWEST,
                        last_success_at=NEWEST)
    store.commit_poll(SourceUpdate(state=state, result=None), articles)


def fill(store: Store, corpus: Corpus, count: int, seed: int = 12) -> None:
    """``count`` articles, round-robin over the sources (so every category is interleaved)."""
    rng = random.Random(seed)
    pool = paragraphs(rng)
    sources = corpus.sources
    batches: dict[str, list[Article]] = {s.id: [] for s in sources}
    for number in range(count):
        source = sources[number % len(sources)]
        batches[source.id].append(article(number, source, rng, pool))
    for source in sources:
        commit(store, source, batches[source.id])


# --------------------------------------------------------------------------- counting


class SqlCounter:
    """SQL statements and transactions every SQLAlchemy engine of this process starts."""

    def __init__(self) -> None:
        self.statements = 0
        self.transactions = 0
        self._lock = threading.Lock()
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "begin", self._begin)

    def _statement(self, *_args: object) -> None:
        with self._lock:
            self.statements += 1

    def _begin(self, *_args: object) -> None:
        with self._lock:
            self.transactions += 1

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.statements, self.transactions


class Counted:
    """WSGI middleware counting the requests it passes on (same wrapper for both modes)."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self.requests += 1
        return self.app(environ, start_response)


class ServerProbe:
    """PostgreSQL's view of the bench database: transactions and its backends' CPU."""

    def __init__(self, pg: Postgres, dbname: str, quiet_s: float) -> None:
        self.pg, self.dbname, self.quiet_s = pg, dbname, quiet_s
        self._tick = os.sysconf("SC_CLK_TCK")

    def quiet(self, timeout: float = 120) -> None:
        """Until every backend has been idle ``quiet_s`` (its statistics are flushed by then)."""
        deadline = time.monotonic() + timeout
        while True:
            backends, busy, idle_for = self.pg.activity(self.dbname)
            if not backends or (not busy and (idle_for or 0) >= self.quiet_s):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.dbname} never quiet for {self.quiet_s} s")
            time.sleep(0.5)

    def transactions(self) -> int:
        """Commits + rollbacks, less one per session started (its start-up is one)."""
        counters = self.pg.counters(self.dbname)
        return counters.commit + counters.rollback - counters.sessions

    def backend_cpu(self) -> dict[int, float]:
        """CPU seconds used so far by each backend of the database (from /proc)."""
        found = self.pg.conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                     (self.dbname,)).fetchall()
        cpu: dict[int, float] = {}
        for (pid,) in found:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu[int(pid)] = (int(fields[11]) + int(fields[12])) / self._tick
        return cpu


@dataclass
class Mark:
    """Every counter at one moment, so a load's share is one subtraction."""

    requests: int
    statements: int
    transactions: int
    cpu: float
    server_transactions: int | None
    backend_cpu: dict[int, float]

    @classmethod
    def take(cls, counted: Counted, sql: SqlCounter, probe: ServerProbe | None) -> Mark:
        statements, transactions = sql.snapshot()
        return cls(counted.requests, statements, transactions, cpu_seconds(),
                   None if probe is None else probe.transactions(),
                   {} if probe is None else probe.backend_cpu())


def per_request(before: Mark, after: Mark) -> dict[str, float | int | None]:
    requests = after.requests - before.requests
    if not requests:
        return {"requests": 0}
    server = None
    if after.server_transactions is not None and before.server_transactions is not None:
        server = round((after.server_transactions - before.server_transactions) / requests, 3)
    backends = sum(cpu - before.backend_cpu.get(pid, 0.0)
                   for pid, cpu in after.backend_cpu.items())
    return {
        "requests": requests,
        "sql_statements_per_request": round((after.statements - before.statements) / requests, 3),
        "sql_transactions_per_request":
            round((after.transactions - before.transactions) / requests, 3),
        "server_transactions_per_request": server,
        "server_cpu_us_per_request": round((after.cpu - before.cpu) / requests * 1e6, 1),
        "pg_backend_cpu_us_per_request":
            round(backends / requests * 1e6, 1) if after.backend_cpu else None,
    }


# --------------------------------------------------------------------------- serving


def serve_load(app: WSGIApplication, path: str, seconds: float, sql: SqlCounter,
               probe: ServerProbe | None, headers: dict[str, str] | None = None,
               expect: int = 200) -> dict[str, Any]:
    """``app`` on a FeedServer on 127.0.0.1, one warm-up GET of ``path``, then ``wrk``
    (or measure.py's fallback) for ``seconds``, with what each request cost."""
    counted = Counted(app)
    with FeedServer(counted, threads=SERVER_THREADS) as server:
        url = server.url + quote(path)
        status, got, body = get(url, headers)
        if probe is not None:
            probe.quiet()
        before = Mark.take(counted, sql, probe)
        average = loadavg()
        result = load(url, seconds=seconds, headers=headers)
        if probe is not None:
            probe.quiet()
        after = Mark.take(counted, sql, probe)
    return {"url": url, "headers": headers or {}, "status": status, "expected": expect,
            "bytes": len(body), "etag": {k.lower(): v for k, v in got.items()}.get("etag"),
            "requests_per_s": round(result.requests_per_s), "errors": result.errors,
            "tool": result.tool, "loadavg_before": average, **per_request(before, after),
            "wrk": result.raw}


def serve_set(app: WSGIApplication, path: str, seconds: float, sql: SqlCounter,
              probe: ServerProbe | None) -> dict[str, dict[str, Any]]:
    """200 plain, 200 gzip and 304 (If-None-Match of the plain answer's ETag)."""
    plain = serve_load(app, path, seconds, sql, probe)
    zipped = serve_load(app, path, seconds, sql, None, {"Accept-Encoding": "gzip"})
    etag = plain["etag"] or '"none"'
    not_modified = serve_load(app, path, seconds, sql, probe, {"If-None-Match": etag}, 304)
    return {"200": plain, "gzip": zipped, "304": not_modified}


# --------------------------------------------------------------------------- shared output_dir


def timed_build(store: Store, corpus: Corpus, sql: SqlCounter,
                only: set[str] | None) -> dict[str, Any]:
    before = sql.snapshot()
    started = time.perf_counter()
    report = publish.build(store, corpus.options, corpus.sources, only=only)
    wall = time.perf_counter() - started
    after = sql.snapshot()
    out = Path(corpus.options.output_dir)
    return {"ms": ms(wall), "written": list(report.written),
            "bytes_written": sum((out / name).stat().st_size for name in report.written),
            "sql_statements": after[0] - before[0], "sql_transactions": after[1] - before[1]}


def build_parts(store: Store, corpus: Corpus, category: str) -> dict[str, float]:
    """Where a one-category build's time goes (the same public calls ``build`` makes)."""
    ids, options = corpus.source_ids, corpus.options
    started = time.perf_counter()
    articles = store.latest_articles(category, options.feed_size, ids)
    queried = time.perf_counter()
    store.latest_articles(None, publish.INDEX_ARTICLES, ids)
    indexed = time.perf_counter()
    feeds.write_feeds({category: articles}, options, all_categories=sorted(CATEGORIES),
                      only={category})
    written = time.perf_counter()
    with store.exclusive([f"build:{category}"]):
        pass
    locked = time.perf_counter()
    return {"category_query_ms": ms(queried - started), "index_query_ms": ms(indexed - queried),
            "render_and_write_feeds_ms": ms(written - indexed),
            "advisory_lock_ms": ms(locked - written)}


def measure_shared_dir(store: Store, corpus: Corpus, args: argparse.Namespace, sql: SqlCounter,
                       probe: ServerProbe | None) -> dict[str, Any]:
    first = timed_build(store, corpus, sql, None)
    builds = []
    for n in range(args.builds):
        category = CATEGORIES[n % len(CATEGORIES)]
        source = next(s for s in corpus.sources if s.categories == (category,))
        fresh = article(-1 - n, source, random.Random(n), paragraphs(random.Random(n), 20))
        commit(store, source, [fresh])
        builds.append({"category": category, **timed_build(store, corpus, sql, {category})})
    parts = build_parts(store, corpus, CATEGORIES[0])
    median_ms = statistics.median(b["ms"] for b in builds)
    debounce = Settings.model_fields["build_debounce"].default.total_seconds()
    app = make_app(Path(corpus.options.output_dir), SITE_URL)
    serving = serve_set(app, category_paths(CATEGORIES[0]).rss, args.seconds, sql, probe)
    return {
        "first_build": first, "builds": builds, "build_ms_median": median_ms,
        "build_ms_min_max": [min(b["ms"] for b in builds), max(b["ms"] for b in builds)],
        "bytes_written_median": statistics.median(b["bytes_written"] for b in builds),
        "build_parts": parts, "build_debounce_s": debounce, "idle_wait_s": IDLE_WAIT,
        "freshness_s": {"best": round(debounce + median_ms / 1000, 3),
                        "worst": round(debounce + IDLE_WAIT + median_ms / 1000, 3)},
        "serving": serving,
    }


# --------------------------------------------------------------------------- render per request


class Versions:
    """The per-category version counter the render mode keys its cache and ETags by."""

    def __init__(self, engine: Engine, *, autocommit: bool = False) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit \
            else engine
        self.autocommit = autocommit

    @staticmethod
    def create(engine: Engine, categories: Iterable[str]) -> None:
        with engine.begin() as connection:
            connection.execute(text(VERSIONS_DDL))
            connection.execute(text("INSERT INTO category_versions VALUES (:category, 1)"),
                               [{"category": c} for c in categories])

    def lookup(self, category: str) -> int:
        """One read: a rolled-back Session transaction, as ``Store`` reads do (or autocommit)."""
        if self.autocommit:
            with self.engine.connect() as connection:
                return int(connection.execute(VERSION_SQL, {"category": category}).scalar_one())
        with Session(self.engine) as session:
            return int(session.execute(VERSION_SQL, {"category": category}).scalar_one())

    def bump(self, category: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(BUMP_SQL, {"category": category})


@dataclass(frozen=True)
class Rendered:
    """Both feeds of one category at one version, with their gzip."""

    rss: bytes
    atom: bytes
    rss_gz: bytes
    atom_gz: bytes


def compress(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)  # what static.py does


class Renderer:
    """A miss: the category's newest articles from the store, rendered as RSS and Atom."""

    def __init__(self, store: Store, corpus: Corpus) -> None:
        self.store, self.options, self.ids = store, corpus.options, corpus.source_ids

    def render(self, category: str, timings: dict[str, float] | None = None) -> Rendered:
        started = time.perf_counter()
        articles = self.store.latest_articles(category, self.options.feed_size, self.ids)
        queried = time.perf_counter()
        rss = feeds.render_rss(category, articles, self.options)
        rss_done = time.perf_counter()
        atom = feeds.render_atom(category, articles, self.options)
        atom_done = time.perf_counter()
        rendered = Rendered(rss, atom, compress(rss), compress(atom))
        if timings is not None:
            timings.update(query=queried - started, rss=rss_done - queried,
                           atom=atom_done - rss_done, gzip=time.perf_counter() - atom_done,
                           total=time.perf_counter() - started)
        return rendered


class FeedCache:
    """Per-process cache: the last rendered version of each category.  Misses render one at
    a time (a burst of requests after a change renders once); ``enabled=False`` renders on
    every request (a category that changes all the time)."""

    def __init__(self, renderer: Renderer, *, enabled: bool = True) -> None:
        self.renderer = renderer
        self.enabled = enabled
        self.hits = self.misses = 0
        self._items: dict[str, tuple[int, Rendered]] = {}
        self._lock = threading.Lock()

    def get(self, category: str, version: int) -> Rendered:
        if not self.enabled:
            self.misses += 1
            return self.renderer.render(category)
        item = self._items.get(category)
        if item is not None and item[0] == version:
            self.hits += 1
            return item[1]
        with self._lock:
            item = self._items.get(category)
            if item is None or item[0] != version:
                self.misses += 1
                item = (version, self.renderer.render(category))
                self._items[category] = item
            return item[1]


class RenderApp:
    """WSGI: ``/categories/<name>/{rss,atom}.xml`` from ``FeedCache``, ETag = the version."""

    def __init__(self, cache: FeedCache, versions: Versions, categories: Iterable[str]) -> None:
        self.cache, self.versions = cache, versions
        self.routes: dict[str, tuple[str, str, str]] = {}
        for category in categories:
            paths = category_paths(category)
            tag = hashlib.sha1(category.encode()).hexdigest()[:8]  # header values are latin-1
            self.routes["/" + paths.rss] = (category, "rss", tag)
            self.routes["/" + paths.atom] = (category, "atom", tag)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        route = self.routes.get(path)
        if route is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return []
        category, fmt, tag = route
        version = self.versions.lookup(category)
        rendered = self.cache.get(category, version)
        zipped = accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", ""))
        body = (rendered.rss_gz if zipped else rendered.rss) if fmt == "rss" else (
            rendered.atom_gz if zipped else rendered.atom)
        etag = f'"{tag}-{version}{"-gz" if zipped else ""}"'
        headers = [("ETag", etag), ("Cache-Control", CACHE_CONTROL), ("Vary", "Accept-Encoding")]
        if is_not_modified(environ.get("HTTP_IF_NONE_MATCH"), None, etag, None):
            start_response("304 Not Modified", headers)
            return []
        headers += [("Content-Type", content_type_for(path)), ("Content-Length", str(len(body)))]
        if zipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]


def time_lookups(versions: Versions, count: int) -> dict[str, float]:
    samples = []
    for n in range(count):
        started = time.perf_counter()
        versions.lookup(CATEGORIES[n % len(CATEGORIES)])
        samples.append(time.perf_counter() - started)
    return p50_p99(samples)


def time_misses(renderer: Renderer, count: int) -> dict[str, Any]:
    parts: dict[str, list[float]] = {}
    for n in range(count):
        timings: dict[str, float] = {}
        renderer.render(CATEGORIES[n % len(CATEGORIES)], timings)
        for name, value in timings.items():
            parts.setdefault(name, []).append(value)
    return {name: p50_p99(values) for name, values in parts.items()}


def time_select_probe(renderer: Renderer) -> dict[str, float]:
    """Diagnostic: ``render_rss`` and ``render_atom`` each run ``_select`` (every article
    rendered alone in both formats) — how long one such pass takes, and one ``_render``."""
    category = CATEGORIES[0]
    articles = renderer.store.latest_articles(category, renderer.options.feed_size, renderer.ids)
    started = time.perf_counter()
    entries, _ = feeds._select(category, articles, renderer.options)
    selected = time.perf_counter()
    feeds._render(category, entries, renderer.options, "rss")
    return {"select_ms": ms(selected - started), "render_rss_only_ms":
            ms(time.perf_counter() - selected)}


def freshness(versions: Versions, cache: FeedCache, store: Store, corpus: Corpus) -> float:
    """After a new article and a version bump, wall time until the cache holds it (one lookup
    and one miss); checks the new article is in the feed."""
    category = CATEGORIES[1]
    source = next(s for s in corpus.sources if s.categories == (category,))
    fresh = article(-1000, source, random.Random(7), paragraphs(random.Random(7), 20))
    commit(store, source, [fresh])
    versions.bump(category)
    started = time.perf_counter()
    rendered = cache.get(category, versions.lookup(category))
    wall = time.perf_counter() - started
    if feeds.entry_id(fresh).encode() not in rendered.rss:
        raise AssertionError("the new article is missing from the re-rendered feed")
    return ms(wall)


def measure_render(store: Store, engine: Engine, corpus: Corpus, args: argparse.Namespace,
                   sql: SqlCounter, probe: ServerProbe | None) -> dict[str, Any]:
    Versions.create(engine, CATEGORIES)
    versions = Versions(engine)
    renderer = Renderer(store, corpus)
    time_lookups(versions, 50)  # warm the pool
    lookups = time_lookups(versions, args.lookups)
    lookups_autocommit = time_lookups(Versions(engine, autocommit=True), args.lookups)
    misses = time_misses(renderer, args.misses)
    path = category_paths(CATEGORIES[0]).rss
    cache = FeedCache(renderer)
    app = RenderApp(cache, versions, CATEGORIES)
    serving = serve_set(app, path, args.seconds, sql, probe)
    quick = Versions(engine, autocommit=True)
    autocommit = serve_load(RenderApp(FeedCache(renderer), quick, CATEGORIES), path,
                            args.seconds, sql, probe)
    all_miss_cache = FeedCache(renderer, enabled=False)
    all_miss = serve_load(RenderApp(all_miss_cache, versions, CATEGORIES), path, args.seconds,
                          sql, probe)
    return {
        "version_lookup": lookups, "version_lookup_autocommit": lookups_autocommit,
        "miss": misses, "select_probe": time_select_probe(renderer),
        "freshness_ms": freshness(versions, cache, store, corpus),
        "serving": serving, "autocommit_200": autocommit, "all_miss": all_miss,
        "cache": {"hits": cache.hits, "misses": cache.misses,
                  "all_miss_renders": all_miss_cache.misses},
        "same_bytes_as_build": same_bytes(renderer, corpus),
    }


def same_bytes(renderer: Renderer, corpus: Corpus) -> bool:
    """Whether rendering on request gives the very bytes the build wrote (after a fresh
    build of that category)."""
    category = CATEGORIES[2]
    publish.build(renderer.store, corpus.options, corpus.sources, only={category})
    paths = category_paths(category)
    out = Path(corpus.options.output_dir)
    rendered = renderer.render(category)
    return (out / paths.rss).read_bytes() == rendered.rss and \
        (out / paths.atom).read_bytes() == rendered.atom


# --------------------------------------------------------------------------- one backend


@contextmanager
def database(kind: str, pg: Postgres | None, workdir: Path) -> Iterator[tuple[str, str | None]]:
    """A fresh database URL (and its PostgreSQL name), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}", None
        return
    assert pg is not None
    name = f"bench_output_{secrets.token_hex(4)}"
    pg.conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg.url(name), name
    finally:
        pg.drop(name)


def run_backend(kind: str, args: argparse.Namespace, pg: Postgres | None,
                sql: SqlCounter) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="aggregator-output-modes-"))
    try:
        with database(kind, pg, workdir) as (url, name):
            probe = None if name is None or pg is None else ServerProbe(pg, name, args.pg_quiet)
            corpus = make_corpus(workdir / "public")
            with Store.open(url, connections=SERVER_THREADS) as store:
                started = time.perf_counter()
                fill(store, corpus, args.articles)
                filled = time.perf_counter() - started
                say(f"{kind}: {args.articles} articles stored in {filled:.1f} s")
                shared = measure_shared_dir(store, corpus, args, sql, probe)
                say(f"{kind}: shared output_dir measured")
                engine = make_engine(url, connections=SERVER_THREADS)
                try:
                    rendered = measure_render(store, engine, corpus, args, sql, probe)
                finally:
                    engine.dispose()
                say(f"{kind}: render from the database measured")
                return {"backend": kind, "fill_s": round(filled, 1),
                        "count": store.count_articles(), "shared_output_dir": shared,
                        "render_from_db": rendered}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def head_commit() -> str | None:
    """HEAD's commit: ``run.current_commit`` reads ``.git`` as a folder, which in a git
    worktree is a file, so ask git then."""
    found = current_commit()
    if found:
        return found
    try:
        return subprocess.run(["git", "-C", str(BENCH), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def say(text_: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text_} (load {loadavg()})", file=sys.stderr,
          flush=True)


# --------------------------------------------------------------------------- report


def problems(result: dict[str, Any]) -> list[str]:
    """Anything that makes a figure suspect: wrong status, load errors, a miscount."""
    found = []
    kind = result["backend"]
    loads = {**{f"shared {k}": v for k, v in result["shared_output_dir"]["serving"].items()},
             **{f"render {k}": v for k, v in result["render_from_db"]["serving"].items()},
             "render autocommit 200": result["render_from_db"]["autocommit_200"],
             "render all-miss": result["render_from_db"]["all_miss"]}
    for label, figures in loads.items():
        if figures["status"] != figures["expected"]:
            found.append(f"{kind} {label}: status {figures['status']}, not {figures['expected']}")
        if figures["errors"]:
            found.append(f"{kind} {label}: {figures['errors']} load-generator errors")
    if not result["render_from_db"]["same_bytes_as_build"]:
        found.append(f"{kind}: rendered feeds differ from the built files")
    return found


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, shared output_dir, render from the database) for the Markdown table."""
    shared, render = result["shared_output_dir"], result["render_from_db"]
    s, r = shared["serving"], render["serving"]
    parts = render["miss"]

    def rps(figures: dict[str, Any]) -> str:
        return f"{figures['requests_per_s']:,}"

    def cost(figures: dict[str, Any]) -> str:
        server = figures.get("server_transactions_per_request")
        pg_cpu = figures.get("pg_backend_cpu_us_per_request")
        text_ = (f"{figures['sql_statements_per_request']:g} stmt / "
                 f"{figures['sql_transactions_per_request']:g} tx")
        if server is not None:
            text_ += f" (server {server:g} tx, {pg_cpu:g} µs PG CPU)"
        return text_

    return [
        ("change → published", f"build {shared['build_ms_median']:.1f} ms (min–max "
         f"{shared['build_ms_min_max'][0]:.0f}–{shared['build_ms_min_max'][1]:.0f}), "
         f"{shared['bytes_written_median'] / 1024:.0f} KiB written",
         f"miss {parts['total']['p50_ms']:.1f} ms p50 / {parts['total']['p99_ms']:.1f} p99 "
         f"(query {parts['query']['p50_ms']:.1f}, RSS {parts['rss']['p50_ms']:.1f}, "
         f"Atom {parts['atom']['p50_ms']:.1f}, gzip {parts['gzip']['p50_ms']:.1f}), "
         "once per version per node"),
        ("freshness", f"{shared['freshness_s']['best']:.2f}–{shared['freshness_s']['worst']:.2f}"
         f" s (debounce {shared['build_debounce_s']:g} s + idle wait ≤ "
         f"{shared['idle_wait_s']:g} s + build)",
         f"{render['freshness_ms']:.0f} ms (the next request's lookup + miss)"),
        ("per-request DB read", "none",
         f"version lookup {render['version_lookup']['p50_ms']:.2f} ms p50 / "
         f"{render['version_lookup']['p99_ms']:.2f} p99 (autocommit "
         f"{render['version_lookup_autocommit']['p50_ms']:.2f} / "
         f"{render['version_lookup_autocommit']['p99_ms']:.2f})"),
        ("req/s 200 (hit)", rps(s["200"]), rps(r["200"])),
        ("req/s 200 gzip (hit)", rps(s["gzip"]), rps(r["gzip"])),
        ("req/s 200 (hit), autocommit lookup", "—", rps(render["autocommit_200"])),
        ("req/s 304 If-None-Match", rps(s["304"]), rps(r["304"])),
        ("req/s every request a miss", "— (a build per change instead)",
         rps(render["all_miss"])),
        ("DB per request, 200 hit", cost(s["200"]), cost(r["200"])),
        ("DB per request, 304", cost(s["304"]), cost(r["304"])),
        ("DB per request, all-miss", "—", cost(render["all_miss"])),
        ("serving CPU per request, 200", f"{s['200']['server_cpu_us_per_request']:.0f} µs",
         f"{r['200']['server_cpu_us_per_request']:.0f} µs"),
        ("DB per change", f"{shared['builds'][0]['sql_statements']} stmt / "
         f"{shared['builds'][0]['sql_transactions']} tx per build (+ advisory lock "
         f"{shared['build_parts']['advisory_lock_ms']:.1f} ms)",
         "2 stmt / 1 tx per miss per node, + the version bump in the poll's commit"),
    ]


def table(result: dict[str, Any]) -> str:
    lines = [f"**{result['backend']}** ({result['count']:,} articles)", "",
             "| figure | shared output_dir | render from the database |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows(result)]
    return "\n".join(lines)


def strip_raw(result: dict[str, Any]) -> None:
    """Keep wrk's summary lines only (latency, totals) in the JSON."""
    def trim(figures: dict[str, Any]) -> None:
        figures["wrk"] = [line.strip() for line in figures["wrk"].splitlines() if line.strip()]
    for mode in ("shared_output_dir", "render_from_db"):
        for figures in result[mode]["serving"].values():
            trim(figures)
    trim(result["render_from_db"]["all_miss"])
    trim(result["render_from_db"]["autocommit_200"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5, help="length of each load")
    parser.add_argument("--builds", type=int, default=7, help="one-category builds timed")
    parser.add_argument("--lookups", type=int, default=2000, help="version lookups timed")
    parser.add_argument("--misses", type=int, default=50, help="cache misses timed")
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--pg-quiet", type=float, default=11.0,
                        help="idle seconds before reading PostgreSQL's counters")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = args.out or BENCH / "results" / f"output-modes-{stamp}.json"
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    configure(logging.WARNING)  # as the CLI does: waitress' per-request queue warning off
    sql = SqlCounter()
    pg = Postgres(args.pg_host, args.pg_port, args.pg_user, "postgres") \
        if "postgresql" in backends else None
    started = time.monotonic()
    load_start = loadavg()
    results = []
    try:
        for kind in backends:
            results.append(run_backend(kind, args, pg, sql))
        pg_settings = pg.settings() if pg is not None else {}
    finally:
        if pg is not None:
            pg.close()
    found = [p for r in results for p in problems(r)]
    for result in results:
        strip_raw(result)
    document = {
        "schema": 1, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": head_commit(), "duration_s": round(time.monotonic() - started, 1),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count(), "loadavg_start": load_start,
                        "loadavg_end": loadavg(), "postgresql": pg_settings,
                        "load_generator": shutil.which("wrk") or "python fallback"},
        "results": results, "problems": found,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n",
                        encoding="utf-8")
    print(f"output modes: {args.articles:,} articles over {len(CATEGORIES)} categories, "
          f"{args.seconds:g} s loads ({document['environment']['load_generator']}), "
          f"{os.cpu_count()} CPUs, load average {load_start} → "
          f"{document['environment']['loadavg_end']}")
    for result in results:
        print()
        print(table(result))
    if found:
        print("\nproblems seen:")
        for line in found:
            print(f"- {line}")
    print(f"\nJSON: {out_path}  ({document['duration_s']:.0f} s)")


if __name__ == "__main__":
    main()
