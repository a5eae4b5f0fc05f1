"""Render articles as Hexo posts and write them to a directory.

Why: the project started from one portal article exported as a Hexo post
(``shared/seed/000_08ef3d22c0e5d0f0.txt``); this module reproduces that file's
front matter byte for byte (keys, order, quoting, the ``categories: `` line with
its trailing space, the one-space `` - item`` list) and its ``<div>`` body
wrapper, so a Hexo site can consume the aggregator's output unchanged.

The front matter is written by hand rather than with ``yaml.dump`` because the
seed's exact layout is the contract; every scalar therefore goes through one
quoting rule (``_yaml_scalar``) that keeps it a valid, loss-free YAML string
even for hostile values (quotes, ``: ``, `` #``, ``---``, ``yes``, ``2021``...).
Values are single-line: line breaks collapse to one space, so no front-matter
line can ever be a ``---`` delimiter, and characters YAML cannot carry at all
(C0/C1 controls, lone surrogates, U+FFFE/U+FFFF) are dropped with
``rules.strip_xml_illegal`` (the normalize stage already did, but a record does not
guarantee it and one such character breaks the whole Hexo build).  Dates are
trusted: an ``Article``'s are always aware UTC.

Exports are incremental: a post whose bytes would not change is not written (its
mtime stays, so Hexo's own cache and rsync see nothing new), and the folder keeps a
manifest (``MANIFEST``) of the posts this module wrote.  With ``prune`` an export
deletes the posts of that manifest it did not export this time (articles retention
removed, sources dropped from the config): only files it wrote itself, never a
hand-written post beside them.

What this module must NOT do: touch a database or the network, sanitize or
rewrite the article HTML (the normalize stage owns that), decide which articles
to export, or delete a file that its manifest does not list.  It only renders and
writes files, one per article, atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import format_datetime
from pathlib import Path

from aggregator.errors import AggregatorError
from aggregator.publish.files import write_atomic
from aggregator.records import Article
from aggregator.rules import strip_xml_illegal

__all__ = [
    "MANIFEST",
    "ExportReport",
    "hexo_filename",
    "render_front_matter",
    "render_hexo",
    "write_posts",
]

# Line breaks (YAML 1.1 counts NEL, LS and PS too), with the blanks around them.
_LINE_BREAKS = re.compile(r"[ \t]*(?:\r\n|[\r\n\x85\u2028\u2029])[\s]*")
# First characters that make a plain scalar mean something else.
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
# Words YAML 1.1 (PyYAML) or 1.2 (js-yaml, used by Hexo) read as null/bool/special.
_RESERVED = frozenset(
    {
        "", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n",
        "<<", "=", ".inf", "-.inf", "+.inf", ".nan",
    }
)
# Anything that could start a number, a timestamp or a sexagesimal int.
_NUMBERISH = re.compile(r"[-+]?\.?[0-9]")


def _yaml_text(value: str) -> str:
    """Make ``value`` one line of YAML-representable text.

    YAML's reader accepts \\t \\n \\r \\x20-\\x7e \\x85 \\xa0-\\ud7ff \\ue000-\\ufffd and the
    astral planes: once the breaks (NEL included) are spaces, ``strip_xml_illegal``
    drops exactly the rest.
    """
    return strip_xml_illegal(_LINE_BREAKS.sub(" ", value))


def _single_quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _is_plain_safe(value: str) -> bool:
    """True when ``value`` reads back as the same string written as a plain scalar.

    Deliberately conservative: quoting a value that did not need it is harmless,
    leaving one unquoted that needed it is not.
    """
    if value.lower() in _RESERVED:
        return False
    if value[0] in _INDICATORS or _NUMBERISH.match(value):
        return False
    if value[0].isspace() or value[-1].isspace():
        return False
    if "\t" in value or ": " in value or " #" in value or value.endswith(":"):
        return False
    return value.isprintable()  # no NBSP, ideographic space, format or private chars


def _yaml_scalar(value: str) -> str:
    """Plain when safe (like the seed's author and categories), single-quoted otherwise."""
    value = _yaml_text(value)
    return value if _is_plain_safe(value) else _single_quoted(value)


_POST_NAME = re.compile(r"[^/\\\x00]+_[0-9a-f]{16}\.md")  # what ``hexo_filename`` makes


def hexo_filename(article: Article) -> str:
    """Stable post file name: the same (source, key) always maps to the same file."""
    source_id = article.source_id
    if not source_id or any(sep in source_id for sep in ("/", "\\", "\x00")):
        raise ValueError(f"source id {source_id!r} cannot be part of a file name")
    digest = hashlib.sha1(f"{source_id}\n{article.key}".encode()).hexdigest()
    return f"{source_id}_{digest[:16]}.md"


def render_front_matter(article: Article) -> str:
    """The ``---`` ... ``---`` block, in the seed's key order and formats."""
    lines = ["---", f"title: {_single_quoted(_yaml_text(article.title))}"]
    if article.categories:
        lines.append("categories: ")
        lines.extend(f" - {_yaml_scalar(category)}" for category in article.categories)
    else:
        lines.append("categories: []")  # the seed's empty block would load as null
    lines += [
        f"headimg: {_single_quoted(_yaml_text(article.headimg or ''))}",
        f"author: {_yaml_scalar(article.author)}",
        f"comments: {'true' if article.comments else 'false'}",
        f"date: {format_datetime(article.date, usegmt=True)}",  # Article dates are UTC
        f"thumbnail: {_single_quoted(_yaml_text(article.thumbnail or ''))}",
        "---",
    ]
    return "\n".join(lines) + "\n"


# Hexo renders post bodies through Nunjucks: "{{", "{%" and "{#" in an article would be
# executed as template code (or break the build).  The HTML entity for "{" shows the
# same character in the browser and is inert to Nunjucks.
_NUNJUCKS_TAG = re.compile(r"\{[{%#]")


def render_hexo(article: Article) -> str:
    """The whole post: front matter, a blank line, the content in the seed's ``<div>``."""
    body = _NUNJUCKS_TAG.sub(lambda m: "&#123;" + m.group(0)[1:], article.content)
    return f"{render_front_matter(article)}\n<div>   \n{body} \n  \n</div>\n"


# The posts an export wrote, kept beside them: what ``prune`` may delete.
MANIFEST = ".aggregator-hexo.json"


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What one export did: files (re)written, files already up to date, and posts
    deleted because their article is no longer exported (``prune``)."""

    written: int
    unchanged: int
    out_dir: str
    removed: int = 0


def write_posts(articles: Iterable[Article], out_dir: Path, *, prune: bool = False
                ) -> ExportReport:
    """Write one ``.md`` post per article into ``out_dir``, skipping identical files.

    Re-exporting an article overwrites its file (names are stable); a file whose
    bytes already match is not touched and counts as unchanged.  An article
    listed twice is written once per listing, the last one wins.  With ``prune``,
    the posts an earlier export wrote (``MANIFEST``) and this one did not are deleted.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AggregatorError(f"cannot create export directory {out_dir}: {exc}") from exc
    earlier = _read_manifest(out_dir)
    exported: set[str] = set()
    written = unchanged = 0
    try:
        for article in articles:
            name = hexo_filename(article)
            exported.add(name)
            data = render_hexo(article).encode("utf-8")
            try:
                changed = write_atomic(out_dir / name, data, durable=False)  # regenerable
            except OSError as exc:
                raise AggregatorError(f"cannot write Hexo post {out_dir / name}: {exc}",
                                      source_id=article.source_id) from exc
            if changed:
                written += 1
            else:
                unchanged += 1
    except BaseException:
        # a failed export still remembers what it wrote, so a later prune finds it; the
        # export's own error is the one reported
        with contextlib.suppress(AggregatorError):
            _write_manifest(out_dir, exported | earlier)
        raise
    _write_manifest(out_dir, exported | earlier)
    removed = 0
    if prune:
        removed = _remove(out_dir, earlier - exported)
        _write_manifest(out_dir, exported)
    return ExportReport(written=written, unchanged=unchanged, out_dir=str(out_dir),
                        removed=removed)


def _read_manifest(out_dir: Path) -> set[str]:
    """The post names the manifest lists; none when it is missing or not ours."""
    try:
        names = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8")).get("posts", [])
    except (OSError, ValueError, AttributeError):
        return set()
    # only plain names of posts: a manifest edited to list "../x" deletes nothing
    return {n for n in names if isinstance(n, str) and _POST_NAME.fullmatch(n)}


def _write_manifest(out_dir: Path, names: set[str]) -> None:
    data = json.dumps({"posts": sorted(names)}, indent=0).encode("utf-8") + b"\n"
    try:
        write_atomic(out_dir / MANIFEST, data, durable=False)
    except OSError as exc:
        raise AggregatorError(f"cannot write {out_dir / MANIFEST}: {exc}") from exc


def _remove(out_dir: Path, names: set[str]) -> int:
    removed = 0
    for name in sorted(names):
        try:
            (out_dir / name).unlink()
            removed += 1
        except FileNotFoundError:
            continue  # already gone: nothing to do
        except OSError as exc:
            raise AggregatorError(f"cannot remove Hexo post {out_dir / name}: {exc}") from exc
    return removed
