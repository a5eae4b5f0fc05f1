"""Edits of the operator's config file: new sources appended, everything else kept.

Why: operators comment their config (the example is half comments) and keep its
sources in an order that means something to them; a tool that re-dumps the file loses
both.  ``append_sources`` edits it with ruamel.yaml's round-trip mode, in the file's own
indentation and quoting, so every byte outside the new entries stays as it was (a
trailing comment at the file's top level stays last); the new entries follow the
file's style (flow-style ``categories: [...]``, a blank line between entries when the
file has them).

What must NOT happen: a write of a file ``aggregator.config`` would refuse (the result
is loaded with it before it replaces the old one), a half-written file (temporary file,
fsync, rename), a second source with an id or URL the file already has, or two edits
racing each other (the file is locked while it is read, edited and replaced).  This is
the only module that imports ruamel.yaml; it never touches the network or the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import ipaddress
import itertools
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken

from aggregator.config import SOURCE_ID_PATTERN, Settings, parse_config
from aggregator.errors import ConfigError
from aggregator.records import Source

__all__ = ["Appended", "DuplicateSource", "NewSource", "Skipped", "append_sources",
           "derive_id", "duplicate_of", "same_url"]

_ID_LENGTH = 64
# leading host labels that say nothing about the portal
_HOST_NOISE = {"www", "rss", "feeds", "feed", "m", "wap"}
# second-level labels of country domains (news.sina.com.cn → news-sina)
_SECOND_LEVEL = {"com", "net", "org", "gov", "edu", "co", "ac", "or", "ne"}
# path words that name the format, not the portal's section
_PATH_NOISE = {"feed", "feeds", "rss", "rss2", "atom", "xml", "json", "index", "api"}


@dataclass(frozen=True, slots=True)
class NewSource:
    """A source to append; ``id`` None: derived from its URL (``derive_id``)."""

    url: str
    name: str
    categories: tuple[str, ...]
    id: str | None = None
    interval: str | None = None  # as the operator wrote it: 90s, 30m, 2h, 1d


@dataclass(frozen=True, slots=True)
class Skipped:
    """A new source left out because the file already has it."""

    source: NewSource
    reason: str


@dataclass(frozen=True, slots=True)
class Appended:
    """What an edit did: the sources added (as the new file reads them), those skipped,
    and the whole new config."""

    added: tuple[Source, ...]
    skipped: tuple[Skipped, ...]
    settings: Settings


class DuplicateSource(ConfigError):
    """The file already has a source with this id or URL."""


def same_url(url: str) -> str:
    """The form two URLs are compared in: scheme and host lower-cased, default port and
    fragment dropped, an empty path ``/``."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port if parts.port not in (None, 80 if parts.scheme == "http" else 443) else None
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port else ""
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{netloc}{parts.path or '/'}{query}"


def derive_id(url: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A source id for ``url`` that ``taken`` does not have: its host (``www.ofweek.com``
    → ``ofweek``), then host and path (``rsshub-ofweek-news``), then a number."""
    parts = urlsplit(url)
    host = _host_slug(parts.hostname or "")
    words = [w for w in re.split(r"[/._-]+", parts.path.lower()) if w and w not in _PATH_NOISE]
    candidates = [host, _slug(f"{host}-{'-'.join(words)}")] if words else [host]
    for candidate in candidates:
        if candidate and candidate not in taken:
            return candidate
    base = candidates[-1][: _ID_LENGTH - 4].rstrip("-") or "source"
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def _host_slug(host: str) -> str:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return _slug(host)
    except ValueError:
        pass
    labels = [label for label in host.lower().split(".") if label]
    while len(labels) > 2 and labels[0] in _HOST_NOISE:
        labels.pop(0)
    if len(labels) > 1:
        labels.pop()  # the top-level domain
    if len(labels) > 1 and labels[-1] in _SECOND_LEVEL:
        labels.pop()
    return _slug("-".join(labels)) or "source"


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:_ID_LENGTH].rstrip("-")


def append_sources(path: str | os.PathLike[str], entries: Sequence[NewSource], *,
                   skip_duplicates: bool = False) -> Appended:
    """Append ``entries`` to the ``sources:`` of the config file at ``path``.

    An entry whose id or URL the file (or an earlier entry) already has raises
    ``DuplicateSource``, or with ``skip_duplicates`` is reported in ``skipped``.  The
    edited text is validated with ``aggregator.config`` (a ``ConfigError`` names the
    source and field) and then replaces the file atomically; with nothing to add the
    file is not written.
    """
    file = Path(path)
    with _locked(file) as text:
        current = parse_config(text, file)
        ids = {s.id for s in current.sources}
        urls = {same_url(str(s.url)): s.id for s in current.sources}
        accepted: list[NewSource] = []
        skipped: list[Skipped] = []
        for entry in entries:
            reason = _duplicate(entry, ids, urls)
            if reason:
                if not skip_duplicates:
                    raise DuplicateSource(reason, path=str(file), source_id=entry.id)
                skipped.append(Skipped(entry, reason))
                continue
            source_id = entry.id or derive_id(entry.url, ids)
            ids.add(source_id)
            urls[same_url(entry.url)] = source_id
            accepted.append(_with_id(entry, source_id))
        if not accepted:
            return Appended((), tuple(skipped), current)
        new_text = _edited(text, file, accepted)
        settings = parse_config(new_text, file)
        _replace(file, new_text)
    added = tuple(s for s in settings.source_list({e.id for e in accepted if e.id}))
    return Appended(added, tuple(skipped), settings)


def duplicate_of(settings: Settings, entry: NewSource) -> str | None:
    """Why the config refuses ``entry`` as a duplicate (its id or URL), None if it does
    not: what ``append_sources`` checks, for a caller to check before any fetch."""
    return _duplicate(entry, {s.id for s in settings.sources},
                      {same_url(str(s.url)): s.id for s in settings.sources})


def _duplicate(entry: NewSource, ids: set[str], urls: dict[str, str]) -> str | None:
    if entry.id is not None and entry.id in ids:
        return f"a source with id {entry.id!r} exists already"
    existing = urls.get(same_url(entry.url))
    if existing is not None:
        return f"source {existing!r} has this URL already ({entry.url})"
    return None


def _with_id(entry: NewSource, source_id: str) -> NewSource:
    if not re.match(SOURCE_ID_PATTERN, source_id):
        raise ConfigError(f"{source_id!r} is not an id like ofweek-news ([a-z0-9-], at most "
                          "64 characters)", source_id=source_id, field="id")
    return NewSource(url=entry.url, name=entry.name, categories=entry.categories,
                     id=source_id, interval=entry.interval)


# --- the round-trip edit -----------------------------------------------------------


def _edited(text: str, file: Path, entries: Sequence[NewSource]) -> str:
    yaml = _round_trip(text)
    try:
        document = yaml.load(text)
    except YAMLError as exc:  # parse_config read it, so only ruamel's stricter rules
        raise ConfigError(f"cannot edit: {exc}", path=str(file)) from None
    if document is None:
        document = CommentedMap()
    sources = document.get("sources")
    if not isinstance(sources, CommentedSeq) or not sources or sources.fa.flow_style():
        sources = CommentedSeq(list(sources or []))
        document["sources"] = sources
        separated, dedented = False, None
    else:
        separated = _entries_separated(text, sources)
        dash = _dash_column(text, sources)
        _keep_end_comments_with_last_entry(sources, dash)
        dedented = _take_dedented_tail(sources, dash)
    for entry in entries:
        last = _trailing_comment(sources[-1]) if separated else None
        sources.append(_entry_map(entry))
        if separated and (last is None or not last.value.endswith("\n\n")):
            sources.yaml_set_comment_before_after_key(len(sources) - 1, before="\n")
    if dedented:
        _attach_trailing(sources[-1], dedented)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def _round_trip(text: str) -> YAML:
    """A round-trip YAML in the file's own indentation, quotes kept, lines never folded."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 1 << 16
    mapping, sequence, offset = _indentation(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _indentation(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) as the file writes them, read from
    the first key that opens a block of each kind; the defaults are the example config's
    (2, 4, 2): ``sources:`` / ``  - id: ...`` / ``    name: ...``."""
    mapping = sequence = offset = None
    lines = [line for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    for above, line in itertools.pairwise(lines):
        if not above.rstrip().endswith(":"):
            continue
        parent = len(above) - len(above.lstrip())
        column = len(line) - len(line.lstrip())
        body = line.lstrip()
        if body.startswith("- ") and sequence is None and column >= parent:
            offset = column - parent
            sequence = column + 1 + len(body[1:]) - len(body[1:].lstrip()) - parent
        elif not body.startswith("-") and column > parent and mapping is None:
            mapping = column - parent
    return mapping or 2, sequence or 4, offset if offset is not None else 2


def _dash_column(text: str, sources: CommentedSeq) -> int:
    line = text.splitlines()[sources.lc.data[0][0]]
    return line.index("-") if "-" in line else sources.lc.data[0][1]


def _entries_separated(text: str, sources: CommentedSeq) -> bool:
    """Whether the file's second and later entries each follow a blank line (above the
    comment lines that head them, if any)."""
    lines = text.splitlines()
    starts = [sources.lc.data[i][0] for i in range(1, len(sources))]
    for start in starts:
        above = start - 1
        while above > 0 and lines[above].lstrip().startswith("#"):
            above -= 1
        if above <= 0 or lines[above].strip():
            return False
    return bool(starts)


def _trailing_comment(node: Any) -> CommentToken | None:
    """The comment token after the last value inside ``node`` (where ruamel keeps the
    comments and blank lines that follow an entry)."""
    while True:
        if isinstance(node, CommentedMap) and node:
            key = list(node)[-1]
            held = node.ca.items.get(key)
            if held and len(held) > 2 and held[2] is not None:
                return held[2]  # type: ignore[no-any-return]
            node = node[key]
        elif isinstance(node, CommentedSeq) and node:
            held = node.ca.items.get(len(node) - 1)
            if held and held[0] is not None:
                return held[0]  # type: ignore[no-any-return]
            node = node[-1]
        else:
            return None


def _keep_end_comments_with_last_entry(sources: CommentedSeq, dash: int) -> None:
    """After a flow-style value (``categories: [...]``) ruamel keeps the comments that
    follow the last entry at the end of the whole list, where they would end up after
    the new entries; those indented as the entry (about it) go back onto it."""
    end = getattr(sources.ca, "end", None) or []
    lead = 0
    while lead < len(end) and end[lead].start_mark.column >= dash:
        lead += 1
    if not lead:
        return
    text = "".join(" " * token.start_mark.column + token.value for token in end[:lead])
    del end[:lead]
    kept = text.rstrip("\n") + "\n"
    if end:  # the blank lines before a comment about the rest of the file stay before it
        end[0].value = "\n" * (len(text) - len(kept)) + end[0].value
    _attach_trailing(sources[-1], "\n" + kept)


def _attach_trailing(node: Any, text: str) -> None:
    """Put ``text`` (starting with the end of the line) after the last value in ``node``."""
    token = CommentToken(text, CommentMark(0))
    while True:
        if isinstance(node, CommentedMap):
            key = list(node)[-1]
            if _is_block(node[key]):
                node = node[key]
                continue
            node.ca.items[key] = [None, None, token, None]
            return
        if isinstance(node, CommentedSeq):
            if _is_block(node[-1]):
                node = node[-1]
                continue
            node.ca.items[len(node) - 1] = [token, None]
            return
        return


def _is_block(value: Any) -> bool:
    return isinstance(value, CommentedMap | CommentedSeq) and bool(value) \
        and not value.fa.flow_style()


def _take_dedented_tail(sources: CommentedSeq, dash: int) -> str | None:
    """Cut the comments after the last entry that are left of its dash (a comment about
    the rest of the file, not about that entry) off it, and return them with the blank
    lines before them, to follow the new entries instead."""
    token = _trailing_comment(sources[-1])
    if token is None:
        return None
    lines = token.value.splitlines(keepends=True)
    for index in range(1, len(lines)):
        stripped = lines[index].lstrip(" ")
        if stripped.startswith("#") and len(lines[index]) - len(stripped) < dash:
            rest = "".join(lines[1:index])  # lines[0] ends the entry's last line
            kept = rest.rstrip("\n") + ("\n" if rest.strip() else "")
            token.value = lines[0] + kept
            return "\n" * (1 + len(rest) - len(kept)) + "".join(lines[index:])
    return None


def _entry_map(entry: NewSource) -> CommentedMap:
    categories = CommentedSeq(entry.categories)
    categories.fa.set_flow_style()
    mapping = CommentedMap()
    mapping["id"] = entry.id
    mapping["name"] = entry.name
    mapping["url"] = entry.url
    mapping["categories"] = categories
    if entry.interval:
        mapping["interval"] = entry.interval
    return mapping


# --- the file ------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(file: Path) -> Iterator[str]:
    """The file's text, read under an exclusive lock on it; a lock won on a file that
    a concurrent edit has meanwhile replaced is dropped and taken on the new one."""
    while True:
        try:
            handle = file.open("r+", encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("file not found", path=str(file)) from None
        except OSError as exc:
            raise ConfigError(f"cannot open for editing: {exc}", path=str(file)) from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                if os.fstat(handle.fileno()).st_ino != file.stat().st_ino:
                    continue  # replaced while we waited
            except FileNotFoundError:
                continue
            try:
                text = handle.read()
            except UnicodeDecodeError as exc:
                raise ConfigError(f"cannot read: {exc}", path=str(file)) from exc
            yield text
            return


def _replace(file: Path, text: str) -> None:
    """Write ``text`` next to ``file`` and rename it over the file (same permissions)."""
    mode = file.stat().st_mode & 0o7777
    fd, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
