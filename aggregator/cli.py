"""Command line: ``aggregator [--config PATH] COMMAND``.

The CLI only translates between people and the rest: it loads the config, opens
the store, calls intake, publishing and service functions and prints results.  It
holds no business logic.  Every other module (config with pydantic, SQLAlchemy, feedgen)
is imported inside the commands that need it: ``--help`` starts fast, and parse
workers, which multiprocessing makes import the ``aggregator`` script's module
(this one), stay small.
Expected failures (a bad config, an unreachable database) print one clear line
and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from aggregator.errors import AggregatorError, ConfigError

if TYPE_CHECKING:
    from aggregator.config import Settings
    from aggregator.ingest.poll import PollStore
    from aggregator.ingest.sandbox import WorkerPool
    from aggregator.publish.feeds import BuildReport
    from aggregator.records import AppliedConfig, PollResult, Source, SourceStatus
    from aggregator.store import Store
    from aggregator.store.quick import QuickReads

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONFIG = 2
EXIT_FAILURE = 1
PROGRESS_THRESHOLD = 5  # show a progress bar when polling more sources than this
DEFAULT_PORT = 8080
HUB_WAIT = timedelta(seconds=60)  # how long ``build`` waits for the hub to take its pings


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(dict)["config"] = value
        ctx.find_root().ensure_object(dict)["config"] = value


def config_option(func: F) -> F:
    """``--config PATH``, accepted both before and after the command name."""
    return click.option(
        "--config",
        "config_path",
        metavar="PATH",
        expose_value=False,
        is_eager=True,
        callback=_remember_config,
        help="Config file (default: $AGGREGATOR_CONFIG, else config/aggregator.yaml).",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="key=value text for people, JSON lines for collectors.")
@click.version_option(package_name="aggregator")
@click.pass_context
def cli(ctx: click.Context, verbose: int, log_format: str) -> None:
    """Poll news portals' feeds, store articles, publish per-category RSS/Atom feeds."""
    from aggregator.service import logs

    ctx.ensure_object(dict)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if ctx.invoked_subcommand in ("run", "serve") and verbose == 0:
        level = logging.INFO  # a daemon's log is its record of what it did
    # one line a request is too much by default, even for a daemon: -v turns it on
    logs.configure(level, log_format, access_log=verbose >= 1)


def _settings(ctx: click.Context) -> Settings:
    from aggregator.config import load_config, resolve_config_path
    from aggregator.records import SourceKind

    path = resolve_config_path(ctx.find_root().ensure_object(dict).get("config"))
    try:
        settings = load_config(path)
        sources = settings.source_list()
        # CSS selectors (cssselect, lxml: scrape is their home) only when a source has some
        if any(s.kind is SourceKind.HTML or s.content_selector is not None for s in sources):
            from aggregator.ingest.scrape import check_page_sources

            check_page_sources(sources, str(path))
        return settings
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        ctx.exit(EXIT_CONFIG)
        raise  # unreachable; ctx.exit raises


@contextmanager
def _open_store(ctx: click.Context, settings: Settings, *,
                long_running: bool = False) -> Iterator[Store]:
    from aggregator.store import Store

    try:
        # the poll threads, plus a build and the HTTP side's health reads
        store = Store.open(settings.database_url, migrate_in_child=long_running,
                           connections=settings.workers + 2)
    except AggregatorError as exc:
        click.echo(f"database error: {exc}", err=True)
        ctx.exit(EXIT_FAILURE)
        raise
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _status_reads(ctx: click.Context, settings: Settings) -> Iterator[QuickReads | Store]:
    """What ``status`` reads: an up-to-date SQLite file through ``sqlite3`` alone (no
    SQLAlchemy import: most of a short command's time), anything else through the Store."""
    from aggregator.store.quick import QuickReads

    quick = QuickReads.open(settings.database_url)
    if quick is None:
        with _open_store(ctx, settings) as store:
            yield store
        return
    with quick:
        yield quick


@cli.command("check-config")
@config_option
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the config file (every rule's regex compiles) and summarize it."""
    settings = _settings(ctx)
    sources = settings.source_list()
    enabled = [s for s in sources if s.enabled]
    categories = list(dict.fromkeys(c for s in sources for c in s.all_categories))
    ruled = [s for s in sources if s.rules]
    click.echo(f"{settings.config_path}: OK")
    click.echo(f"  sources: {len(sources)} ({len(enabled)} enabled)")
    click.echo(f"  categories: {', '.join(categories) or '-'}")
    if ruled:
        patterns = sum(len(s.rules.patterns()) for s in ruled)
        click.echo(f"  rules: {len(ruled)} source(s), {patterns} regex(es) compiled")
    click.echo(f"  database: {settings.database_url}")
    click.echo(f"  output: {settings.output_dir} (served at {settings.site_url})")


@cli.command()
@config_option
@click.option(
    "--source",
    "source_ids",
    multiple=True,
    metavar="ID",
    help="Poll only this source (repeatable), even if disabled. Default: every enabled source.",
)
@click.pass_context
def poll(ctx: click.Context, source_ids: tuple[str, ...]) -> None:
    """Fetch every source now and store what is new.

    A source that a 410 Gone disabled is skipped (and said so) unless --source names it.
    """
    settings = _settings(ctx)
    sources = _selected_sources(ctx, settings, source_ids)
    if not sources:  # nothing to fetch: no parse workers, no HTTP client (nor their imports)
        with _status_reads(ctx, settings):
            pass  # the database is there and current (else the Store created or migrated it)
        click.echo(poll_summary([])[-1])
        return
    from aggregator.service.wiring import parse_pool

    with parse_pool(settings) as pool:
        if len(sources) > 1:
            pool.start_soon()  # the workers start while this process opens the store
        with _store_for_poll(ctx, settings) as store:
            results = _poll(settings, store, sources, pool, force=source_ids)
    for line in poll_summary(results):
        click.echo(line)


@contextmanager
def _store_for_poll(ctx: click.Context, settings: Settings) -> Iterator[PollStore]:
    """The store of a poll: an SQLite file at HEAD, or none yet, opens on a thread while
    the poll fetches (``store.opening``); any other database opens first, as for every
    command.  A store that could not open fails the command after the poll, as before it."""
    from aggregator.store.opening import OpeningStore

    opening = OpeningStore.start(settings.database_url, connections=settings.workers + 2)
    if opening is None:
        with _open_store(ctx, settings) as store:
            yield store
        return
    try:
        yield opening
    finally:
        opening.close()
    if opening.failure is not None:
        click.echo(f"database error: {opening.failure}", err=True)
        ctx.exit(EXIT_FAILURE)


def _selected_sources(ctx: click.Context, settings: Settings,
                      source_ids: tuple[str, ...]) -> list[Source]:
    """The sources a poll covers: the given ids (even disabled), else every enabled one."""
    known = {s.id for s in settings.sources}
    unknown = [i for i in source_ids if i not in known]
    if unknown:
        click.echo(f"unknown source id(s): {', '.join(unknown)}", err=True)
        ctx.exit(EXIT_CONFIG)
    return [
        s for s in settings.source_list(set(source_ids) or None) if s.enabled or s.id in source_ids
    ]


def _poll(settings: Settings, store: PollStore, sources: list[Source], pool: WorkerPool, *,
          force: tuple[str, ...] = ()) -> list[PollResult]:
    from aggregator.ingest.fetch import HttpFetcher
    from aggregator.ingest.poll import poll_sources
    from aggregator.service.wiring import poll_options

    fetcher = HttpFetcher()
    kwargs: dict[str, Any] = {
        "fetch": fetcher, "workers": settings.workers, "parse_pool": pool,
        "host_concurrency": settings.host_concurrency, "force": set(force),
    }
    try:
        if len(sources) <= PROGRESS_THRESHOLD:
            return poll_sources(sources, store, poll_options(settings), **kwargs)
        with click.progressbar(length=len(sources), label="polling", file=sys.stderr,
                               show_pos=True) as bar:
            return poll_sources(sources, store, poll_options(settings),
                                on_result=lambda _result: bar.update(1), **kwargs)
    finally:
        fetcher.close()


def poll_summary(results: list[PollResult]) -> list[str]:
    """One line per source: new/updated/unchanged/error/skipped with reason, then totals."""
    from collections import Counter

    from aggregator.records import ParserKind, PollOutcome

    width = max((len(r.source_id) for r in results), default=0)
    lines = []
    for r in results:
        if r.result is PollOutcome.SKIPPED:
            detail = (f"skipped: disabled after the portal said the feed is gone ({r.error}); "
                      f"--source {r.source_id} polls it anyway")
        elif r.result.failed:
            detail = f"{r.result.value}: {r.error}"
        elif not r.parsed:
            detail = f"{r.result.value} (nothing to parse)"
        else:
            c = r.counts
            detail = f"{r.result.value}: {c.new} new, {c.updated} updated, {c.unchanged} unchanged"
            if c.retired:
                detail += f", {c.retired} removed by retention"
            if r.pages_fetched or r.pages_pending:
                detail += f", {r.pages_fetched - r.pages_failed} full text(s)"
                if r.pages_failed:
                    detail += f" ({r.pages_failed} page(s) failed: summary kept)"
                if r.pages_pending:
                    detail += f", {r.pages_pending} page(s) left for the next poll"
            if r.rekeyed:
                detail += f", {r.rekeyed} given a key of their own (they shared one)"
            if r.filtered:
                detail += f", {r.filtered} filtered by rules"
            if not (c.new or c.updated or c.unchanged or c.retired or r.filtered):
                detail += " (the document has no entries)"
        if r.warnings:
            detail += f" [{len(r.warnings)} warning(s): {r.warnings[0]}]"
        lines.append(f"{r.source_id:<{width}}  {detail}  ({r.elapsed:.2f}s)")
    failed = sum(r.result.failed for r in results)
    skipped = sum(r.result is PollOutcome.SKIPPED for r in results)
    total = f"polled {len(results) - skipped} source(s): {len(results) - failed - skipped} ok, " \
            f"{failed} failed"
    lines.append(total + (f", {skipped} skipped" if skipped else ""))
    paths = Counter(r.parser for r in results if r.parser is not None)
    if paths:  # the fast path's share, and what it left to feedparser
        lines.append(f"parsed {sum(paths.values())} RSS/Atom document(s): "
                     f"{paths[ParserKind.FAST]} by the fast path, "
                     f"{paths[ParserKind.FEEDPARSER]} by feedparser")
    return lines


@cli.command()
@config_option
@click.pass_context
def build(ctx: click.Context) -> None:
    """Regenerate the per-category RSS/Atom feeds and feeds.opml."""
    settings = _settings(ctx)
    with _open_store(ctx, settings) as store:
        _build(settings, store)


def _build(settings: Settings, store: Store) -> None:
    from aggregator.publish import build

    options = settings.feed_options()
    report = build(store, options, settings.source_list())
    click.echo(
        f"built {len(report.written)} file(s), {len(report.unchanged)} unchanged "
        f"in {options.output_dir}"
    )
    if report.skipped_articles:
        click.echo(f"skipped {report.skipped_articles} article(s) that could not be rendered")
    click.echo(
        f"OPML index: {Path(options.output_dir) / 'feeds.opml'} ({options.site_url}feeds.opml)"
    )
    if options.hub_url:
        _ping_hub(settings, report)


def _ping_hub(settings: Settings, report: BuildReport) -> None:
    """Tell the WebSub hub about the feeds this build changed, and wait (bounded) for it:
    a cron ``build`` has no daemon to send the pings later."""
    from aggregator.service.metrics import Metrics
    from aggregator.service.websub import HubPinger

    pinger = HubPinger(Metrics())
    queued = pinger.after_build(report, settings.feed_options(), settings.fetch_options())
    if not queued:
        return
    delivered = pinger.wait_idle(HUB_WAIT.total_seconds())
    pinger.stop()
    click.echo(f"WebSub: {queued} changed feed(s) announced to {settings.hub_url}"
               + ("" if delivered else " (not all answered in time: see the log)"))


@cli.group("export")
def export_group() -> None:
    """Export stored articles to other formats."""


@export_group.command("hexo")
@config_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the Markdown posts (created).",
)
@click.option("--prune", is_flag=True,
              help="Also delete the posts an earlier export wrote whose article is gone "
              "(retention, a source removed from the config).")
@click.pass_context
def export_hexo_command(ctx: click.Context, out_dir: Path, prune: bool) -> None:
    """Write every stored article as a Hexo post: only new or changed ones are written."""
    settings = _settings(ctx)
    with _open_store(ctx, settings) as store:
        _export(settings, store, out_dir, prune=prune)


def _export(settings: Settings, store: Store, out_dir: Path, *, prune: bool = False) -> None:
    from aggregator.publish import export_hexo

    report = export_hexo(store, out_dir, settings.source_list(), prune=prune)
    removed = f", {report.removed} removed" if prune else ""
    if report.written == 0 and not report.removed:
        click.echo(f"nothing new: 0 post(s) written, {report.unchanged} unchanged{removed}, "
                   f"in {out_dir}")
    else:
        click.echo(f"exported {report.written} post(s), {report.unchanged} unchanged"
                   f"{removed}, to {out_dir}")


@cli.command()
@config_option
@click.pass_context
def prune(ctx: click.Context) -> None:
    """Apply retention_days / max_articles_per_source now and say what was removed.

    For cron users; the daemon prunes hourly.  Removed articles are remembered, so the
    next poll does not add them back while their portal still lists them.  Sources the
    config no longer lists are forgotten after removed_source_grace (the config is applied
    to the database first, unless the database holds a newer one).
    """
    from aggregator.ingest.poll import utc_now
    from aggregator.records import ConfigSync
    from aggregator.service import wiring

    settings = _settings(ctx)
    with _open_store(ctx, settings) as store:
        synced = wiring.sync_config(store, settings, holder=wiring.holder_name(), now=utc_now())
        pruned = wiring.prune(store, settings, utc_now())
    if synced.outcome is ConfigSync.STALE:
        click.echo(f"note: {synced.describe(settings)}")
    if not settings.retention_days and not settings.max_articles_per_source:
        click.echo("no retention configured (retention_days, max_articles_per_source)")
    for source_id, count in pruned.articles.items():
        click.echo(f"{source_id}  {count} article(s) removed")
    for source_id in pruned.sources:
        click.echo(f"{source_id}  forgotten: removed from the config more than "
                   f"{settings.removed_source_grace} ago")
    click.echo(f"pruned {sum(pruned.articles.values())} article(s) from "
               f"{len(pruned.articles)} source(s), forgot {len(pruned.sources)} source(s)")


@cli.command()
@config_option
@click.pass_context
def status(ctx: click.Context) -> None:
    """A table per source: last poll, result, articles, errors, next poll."""
    settings = _settings(ctx)
    with _status_reads(ctx, settings) as store:
        remembered = {s.source_id: s for s in store.statuses()}
        applied = store.applied_config()
    rows = [("SOURCE", "LAST POLL (UTC)", "RESULT", "ARTICLES", "ERRORS", "NEXT POLL (UTC)",
             "LAST ERROR / WARNING")]
    for source in settings.sources:
        st = remembered.get(source.id)
        result = (st.last_result or "-") if st else "-"
        if not source.enabled:
            result += " (off in config)"
        if st and st.moved_to and st.moved_from == str(source.url):
            result += f" (moved to {st.moved_to})"
        rows.append((
            source.id,
            _when(st.last_poll_at if st else None, "never"),
            result,
            str(st.article_count if st else 0),
            str(st.error_count if st else 0),
            "disabled" if st and st.disabled_reason else _when(st.next_poll_at if st else None),
            _note(st),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        click.echo(f"{cells}  {row[-1]}")
    click.echo(_config_line(settings, applied))


def _config_line(settings: Settings, applied: AppliedConfig | None) -> str:
    """Which config the database holds, and what this file is to it."""
    from aggregator.ingest.poll import utc_now
    from aggregator.service import wiring

    if applied is None:
        return "config: none applied to the database yet (run or prune applies this file)"
    held = (f"config: generation {applied.generation}, applied by {applied.applied_by} at "
            f"{_when(applied.applied_at)}")
    offered = settings.config_version(utc_now())
    if offered.digest == applied.version.digest:
        return f"{held}: this file's sources"
    if wiring.supersedes(offered, applied):
        return f"{held}; this file is newer: the next start, reload or prune applies it"
    return f"{held}; this file is OLDER: a worker started with it claims nothing"


def _note(state: SourceStatus | None) -> str:
    """The last error, else what the last parsed document was warned about."""
    if state is None:
        return ""
    if state.last_error:
        return state.last_error
    return f"warning: {state.last_warnings}" if state.last_warnings else ""


def _when(moment: datetime | None, missing: str = "-") -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else missing


def _listen_options(func: F) -> F:
    func = click.option("--port", type=int, default=8080, show_default=True,
                        help="TCP port to listen on (0: any free port).")(func)
    return click.option("--host", default="127.0.0.1", show_default=True,
                        help="Address to listen on (0.0.0.0 for every interface).")(func)


def _health(settings_of: Callable[[], Settings], store: Store) -> Callable[[], Any]:
    from aggregator.ingest.poll import utc_now
    from aggregator.service.health import ConfigState, health_report

    config = ConfigState(settings_of().config_path, utc_now())  # loaded once, never reloaded

    def report() -> Any:
        settings = settings_of()
        return health_report(settings.source_list(), store.statuses(), utc_now(), config)

    return report


@cli.command()
@config_option
@_listen_options
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Serve the generated feeds, OPML and index page (no polling)."""
    from aggregator.service.http import make_app, serve_forever
    from aggregator.service.http.images import image_settings

    settings = _settings(ctx)
    with _open_store(ctx, settings) as store:
        app = make_app(settings.output_dir, str(settings.site_url),
                       health=_health(lambda: settings, store), images=image_settings(settings))
        serve_forever(app, host, port,
                      serving=f"serving {settings.output_dir} at {settings.site_url}")


@cli.command()
@config_option
@click.option("--port", type=int, default=None,
              help="TCP port to listen on (0: any free port; default 8080, none for a worker).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--role", type=click.Choice(["all", "worker", "web"]), default="all",
              show_default=True, help="all: poll and serve; worker: poll with peers; web: serve.")
@click.pass_context
def run(ctx: click.Context, host: str, port: int | None, role: str) -> None:
    """The daemon: poll every source on its interval, rebuild feeds, serve them.

    Reloads the config when the file changes or on SIGHUP (an invalid edit is
    logged and the last good config keeps running); SIGTERM/SIGINT stop it cleanly.
    --role worker polls with any number of peers on one PostgreSQL database (HTTP only
    with --port, for /healthz and /metrics); --role web serves and polls nothing.
    """
    from aggregator.service.process import run_service

    settings = _settings(ctx)
    if port is None and role != "worker":
        port = DEFAULT_PORT
    with _open_store(ctx, settings, long_running=True) as store:
        if role == "web":
            code = run_service(settings, store, host=host, port=port, role=role)
        else:
            with store.sole_poller() as allowed:
                if not allowed:
                    click.echo("another process polls this SQLite database: SQLite is one "
                               "host and one writer; use PostgreSQL to run several workers",
                               err=True)
                    ctx.exit(EXIT_CONFIG)
                code = run_service(settings, store, host=host, port=port, role=role)
    ctx.exit(code)


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Where the demo's config, database, feeds and Hexo posts go.",
)
@click.pass_context
def demo(ctx: click.Context, workdir: Path) -> None:
    """Serve bundled sample portals on loopback, poll, build and export them."""
    from aggregator.config import load_config
    from aggregator.demo import DemoPortal, demo_config_text

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with DemoPortal() as portal:
        config_path = workdir / "aggregator.yaml"
        config_path.write_text(demo_config_text(portal.base_url), encoding="utf-8")
        try:
            settings = load_config(config_path)
        except ConfigError as exc:  # the bundled config is tested; this is a packaging bug
            click.echo(f"config error: {exc}", err=True)
            ctx.exit(EXIT_CONFIG)
        click.echo(f"demo portal serving {len(settings.sources)} feeds at {portal.base_url}")
        from aggregator.service.wiring import parse_pool

        with parse_pool(settings) as pool, _open_store(ctx, settings) as store:
            results = _poll(settings, store, _selected_sources(ctx, settings, ()), pool)
            for line in poll_summary(results):
                click.echo(line)
            _build(settings, store)
            _export(settings, store, workdir / "hexo")
    click.echo("")
    click.echo(f"config:   {config_path}")
    click.echo(f"database: {settings.database_url}")
    click.echo(f"feeds:    {settings.output_dir}")
    click.echo(f"hexo:     {workdir / 'hexo'}")
    click.echo(f"next:     aggregator --config {config_path} status")
    click.echo(f"          aggregator --config {config_path} serve   "
               "(then open http://127.0.0.1:8080/)")


def main() -> None:
    """The console script: ``cli``, then an exit that skips the interpreter's teardown.

    Why: freeing every imported module's objects at exit (SQLAlchemy's alone ~60 ms) was a
    twentieth of a cold poll, and the same for every short command; each command closes
    what it opened itself.  The exit hooks still run (logging's flush, multiprocessing's),
    the streams are flushed, and a command that leaves a non-daemon thread running (or
    ends in an exception) exits the usual way.
    """
    try:
        cli(prog_name="aggregator")
    except SystemExit as done:
        if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
               if thread is not threading.main_thread()):
            raise
        status = _exit_status(done.code)
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):  # a closed pipe: nothing more to say
                stream.flush()
        os._exit(status)


def _exit_status(code: object) -> int:
    """The process status ``SystemExit(code)`` ends with (None: 0; a message: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


# ``aggregator sources ...`` lives in a module of its own, which attaches itself to ``cli``.
import aggregator.cli_sources  # noqa: E402, F401
