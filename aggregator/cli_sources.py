"""``aggregator sources``: the operator's commands for the config's source list.

``add`` subscribes to a URL (a feed, or a page whose ``<link rel="alternate">`` names
one) after test-parsing it; ``import`` reads other readers' OPML; ``export`` writes the
sources as OPML; ``list`` shows them with their state.  The config file is edited only
through ``aggregator.configfile`` (comments and order kept, the result validated).

Like ``aggregator.cli``, this module translates and holds no business logic: it
imports everything but click inside the commands.  It attaches its group to ``cli`` when
``aggregator.cli`` imports it.  Exit codes: 2 for a refused edit (a duplicate, a bad
value, a bad config or OPML file), 1 when the URL cannot be fetched or read as a feed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from aggregator.cli import EXIT_CONFIG, EXIT_FAILURE, _settings, _when, cli, config_option
from aggregator.errors import AggregatorError, ConfigError

if TYPE_CHECKING:
    from aggregator.config import Settings
    from aggregator.configfile import Appended, NewSource
    from aggregator.records import SourceStatus


def default_category(settings: Settings) -> str:
    """The category of a new source the operator gave none (and its OPML folder none)."""
    return "未分类" if (settings.language or "").startswith("zh") else "Uncategorized"


@cli.group("sources")
def sources_group() -> None:
    """Add, import, export and list the config's sources."""


@sources_group.command("add")
@config_option
@click.argument("url")
@click.option("--id", "source_id", metavar="ID", help="Source id (default: from the host).")
@click.option("--name", metavar="N", help="Portal name (default: the feed's title).")
@click.option("--category", "categories", multiple=True, metavar="C",
              help="Category (repeatable; default: one for uncategorized sources).")
@click.option("--interval", metavar="DURATION", help="How often to poll: 90s, 30m, 2h, 1d.")
@click.pass_context
def add_command(ctx: click.Context, url: str, source_id: str | None, name: str | None,
                categories: tuple[str, ...], interval: str | None) -> None:
    """Subscribe to URL: a feed, or a page that links its feed; test-parsed first.

    The source is appended to the config file, whose comments and order are kept.
    """
    from aggregator.config import parse_duration
    from aggregator.configfile import NewSource, duplicate_of
    from aggregator.errors import FetchError, ParseError
    from aggregator.ingest.discover import find_feed
    from aggregator.ingest.fetch import HttpFetcher
    from aggregator.service.wiring import parse_pool

    settings = _settings(ctx)
    if interval is not None:
        try:
            parse_duration(interval)
        except ValueError as exc:
            _refuse(ctx, f"--interval: {exc}")
    duplicate = duplicate_of(settings, NewSource(url=url, name="-", categories=(),
                                                 id=source_id))
    if duplicate:
        _refuse(ctx, duplicate)  # before any fetch
    fetcher = HttpFetcher()
    try:
        with parse_pool(settings) as pool:  # the parse budget of polls holds here too
            found = find_feed(url, fetcher, settings.fetch_options(), pool)
    except (FetchError, ParseError) as exc:
        click.echo(f"cannot add {url}: {exc.reason}", err=True)
        ctx.exit(EXIT_FAILURE)
    finally:
        fetcher.close()
    if found.page is not None:
        click.echo(f"{url} is a page; its feed: {found.url}")
    entry = NewSource(url=found.url, name=(name or found.title or "").strip() or _host(found.url),
                      categories=categories or (default_category(settings),),
                      id=source_id, interval=interval)
    appended = _append(ctx, settings, [entry], skip_duplicates=False)
    for source in appended.added:
        click.echo(f"added {source.id}: {source.name} <{source.url}> in "
                   f"{', '.join(source.categories)}, every {_interval(source.interval)} "
                   f"({found.entries} entr{'y' if found.entries == 1 else 'ies'} now) to "
                   f"{settings.config_path}")


@sources_group.command("import")
@config_option
@click.argument("opml_file", metavar="FILE.opml",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--category", "categories", multiple=True, metavar="C",
              help="Category given to every imported source, before its OPML folders.")
@click.pass_context
def import_command(ctx: click.Context, opml_file: Path, categories: tuple[str, ...]) -> None:
    """Append the feeds of an OPML file (Miniflux, FreshRSS, Feedly, newsboat...).

    Folders become categories; feeds the config has already (same URL or id) are
    skipped and listed.  One write for all.
    """
    import re

    from aggregator.config import SOURCE_ID_PATTERN
    from aggregator.configfile import NewSource
    from aggregator.errors import ParseError
    from aggregator.ingest.subscriptions import read_opml

    settings = _settings(ctx)
    try:
        listed = read_opml(opml_file.read_bytes())
    except (ParseError, OSError) as exc:
        _refuse(ctx, f"{opml_file}: {exc}")
    entries = [
        NewSource(
            url=sub.url,
            name=sub.title or _host(sub.url),
            categories=tuple(dict.fromkeys((*categories, *sub.categories)))
            or (default_category(settings),),
            id=sub.source_id if sub.source_id and re.match(SOURCE_ID_PATTERN, sub.source_id)
            else None,
            interval=sub.interval,
        )
        for sub in listed.subscriptions
    ]
    appended = _append(ctx, settings, entries, skip_duplicates=True)
    for source in appended.added:
        click.echo(f"added {source.id}: {source.name} <{source.url}> in "
                   f"{', '.join(source.categories)}")
    for skipped in appended.skipped:
        click.echo(f"skipped {skipped.source.name} <{skipped.source.url}>: {skipped.reason}")
    for problem in listed.skipped:
        click.echo(f"skipped {problem}")
    click.echo(f"imported {len(appended.added)} source(s) into {settings.config_path}, "
               f"skipped {len(appended.skipped) + len(listed.skipped)}")


@sources_group.command("export")
@config_option
@click.pass_context
def export_command(ctx: click.Context) -> None:
    """Write the config's feed sources as OPML 2.0 to stdout (folders: first categories)."""
    from aggregator.publish.opml import render_sources_opml
    from aggregator.records import SourceKind

    settings = _settings(ctx)
    sources = settings.source_list()
    pages = [s.id for s in sources if s.kind is not SourceKind.FEED]
    if pages:
        click.echo(f"left out (kind html, not feeds other readers can read): "
                   f"{', '.join(pages)}", err=True)
    click.echo(render_sources_opml(sources, f"{settings.site_title} sources"), nl=False)


@sources_group.command("list")
@config_option
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """Id, kind, URL, categories and state of each source (last poll if a database exists)."""
    settings = _settings(ctx)
    remembered, note = _statuses(settings)
    rows = [("ID", "KIND", "URL", "CATEGORIES", "STATE")]
    for source in settings.sources:
        rows.append((source.id, source.kind.value, str(source.url),
                     ", ".join(source.categories),
                     _state(source.enabled, remembered.get(source.id))))
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = "  ".join(cell + " " * (w - _width(cell))
                          for cell, w in zip(row, widths, strict=False))
        click.echo(f"{cells}  {row[-1]}")
    click.echo(f"{len(settings.sources)} source(s); {note}")


def _width(text: str) -> int:
    """Columns a terminal gives ``text``: two for each wide (CJK) character."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _statuses(settings: Settings) -> tuple[dict[str, SourceStatus], str]:
    """The store's statuses by source id, and where they came from; no database is
    created to read them."""
    from aggregator.store import Store

    if not Store.exists(settings.database_url):
        return {}, f"no database yet at {settings.database_url}"
    try:
        with Store.open(settings.database_url) as store:
            return {s.source_id: s for s in store.statuses()}, "last polls from the database"
    except AggregatorError as exc:
        return {}, f"database not read: {exc}"


def _state(enabled: bool, status: SourceStatus | None) -> str:
    state = "enabled" if enabled else "disabled"
    if status is None or status.last_poll_at is None:
        return f"{state}, never polled"
    state += f", {status.last_result or '-'} at {_when(status.last_poll_at)} UTC"
    if status.disabled_reason:
        state += f", stopped: {status.disabled_reason}"
    elif status.last_error:
        state += f": {status.last_error}"
    return state


def _append(ctx: click.Context, settings: Settings, entries: list[NewSource], *,
            skip_duplicates: bool) -> Appended:
    from aggregator.configfile import append_sources

    assert settings.config_path is not None  # loaded from a file
    try:
        return append_sources(settings.config_path, entries, skip_duplicates=skip_duplicates)
    except ConfigError as exc:
        _refuse(ctx, str(exc))


def _refuse(ctx: click.Context, message: str) -> NoReturn:
    click.echo(f"refused: {message}", err=True)
    ctx.exit(EXIT_CONFIG)


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or url


def _interval(value: object) -> str:
    from aggregator.publish.opml import duration_text

    return duration_text(value)  # type: ignore[arg-type]
