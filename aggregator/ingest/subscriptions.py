"""Subscription lists from other feed readers (OPML) → ``Subscription`` records.

Why: operators move here from Miniflux, FreshRSS, Feedly or newsboat, and each of
them exports OPML in its own dialect: feeds as ``<outline type="rss" xmlUrl=…>`` named by
``title`` or only ``text``, folders as outlines around them (nested folders in some),
a ``category`` attribute in others.  ``read_opml`` reads all of them the same way: a
feed's categories are its enclosing folders (outermost first), then the entries of its
``category`` attribute; the ``aggregator:`` attributes of this project's own export
bring back the source id and interval.

What must NOT happen: an OPML file expanding entities, reading a DTD or reaching the
network (the parser has all three off, and a document with an internal DTD subset is
refused), or one bad outline (a ``javascript:`` URL) losing the others: it is listed in
``skipped`` with the reason.  This module does not decide ids or duplicates; the
config file editor does.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from aggregator.errors import ParseError
from aggregator.records import SOURCES_OPML_NAMESPACE
from aggregator.rules import web_url

__all__ = ["OpmlSubscriptions", "Subscription", "read_opml"]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One feed an OPML file lists."""

    url: str
    title: str | None
    categories: tuple[str, ...] = ()
    html_url: str | None = None
    source_id: str | None = None  # from this project's export
    interval: str | None = None  # from this project's export


@dataclass(frozen=True, slots=True)
class OpmlSubscriptions:
    """The feeds of an OPML file in document order, and the outlines left out (why)."""

    subscriptions: tuple[Subscription, ...]
    skipped: tuple[str, ...] = ()


def read_opml(content: bytes) -> OpmlSubscriptions:
    """Read an OPML document's feeds, or raise ``ParseError`` if it is not OPML."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             dtd_validation=False, huge_tree=False, remove_pis=True)
    try:
        root = etree.fromstring(content, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"not an OPML file: {exc}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise ParseError("refused: the OPML file declares entities (an internal DTD)")
    if etree.QName(root).localname.lower() != "opml":
        raise ParseError(f"not an OPML file: the root element is <{etree.QName(root).localname}>")
    body = next((child for child in root if _name(child) == "body"), None)
    if body is None:
        raise ParseError("not an OPML file: it has no <body>")
    found: list[Subscription] = []
    skipped: list[str] = []
    _walk(body, (), found, skipped)
    return OpmlSubscriptions(tuple(found), tuple(skipped))


def _walk(parent: etree._Element, folders: tuple[str, ...], found: list[Subscription],
          skipped: list[str]) -> None:
    for outline in parent:
        if _name(outline) != "outline":
            continue
        feed = _attribute(outline, "xmlUrl")
        label = (_attribute(outline, "title") or _attribute(outline, "text") or "").strip()
        if feed is None:
            _walk(outline, (*folders, label) if label else folders, found, skipped)
            continue
        url = web_url(feed)
        if url is None:
            skipped.append(f"{label or feed}: {feed!r} is not an http(s) URL")
            continue
        named = [c.strip().strip("/") for c in (_attribute(outline, "category") or "").split(",")]
        categories = tuple(dict.fromkeys(c for c in (*folders, *named) if c))
        found.append(Subscription(
            url=url, title=label or None, categories=categories,
            html_url=web_url(_attribute(outline, "htmlUrl")),
            source_id=outline.get(f"{{{SOURCES_OPML_NAMESPACE}}}id"),
            interval=outline.get(f"{{{SOURCES_OPML_NAMESPACE}}}interval"),
        ))


def _name(element: etree._Element) -> str:
    return etree.QName(element).localname.lower() if isinstance(element.tag, str) else ""


def _attribute(element: etree._Element, name: str) -> str | None:
    """An attribute by name in any case (``xmlUrl``, ``xmlurl``), None when empty."""
    wanted = name.lower()
    for key, value in element.attrib.items():
        if isinstance(key, str) and key.lower() == wanted and value.strip():
            return str(value).strip()
    return None
