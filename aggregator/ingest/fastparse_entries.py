"""The fast parse path's entries: one RSS ``<item>`` or Atom ``<entry>`` → ``ParsedEntry``.

Half of ``fastparse`` (which reads the document and the feed level): the elements an
entry may hold, each read as feedparser and ``parse._entry`` read it, and a
``Decline`` for anything else.  This module must not parse documents, decode bytes,
sanitize or guess; what it does not model it declines.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from lxml import etree

from aggregator.ingest.fastparse_text import (
    absolute,
    author_name,
    clean,
    feedparser_uri,
    first_content,
    looks_like_html,
    map_type,
    popped_text,
    safe_base,
    unentity_link,
)
from aggregator.records import ParsedEntry
from aggregator.rules import web_url

ATOM = "http://www.w3.org/2005/Atom"
ATOM03 = "http://purl.org/atom/ns#"  # read as Atom 1.0 elements, as feedparser does
RSS1 = "http://purl.org/rss/1.0/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
DC = "http://purl.org/dc/elements/1.1/"
MEDIA = "http://search.yahoo.com/mrss/"
MEDIA_NAMESPACES = frozenset((MEDIA, "http://search.yahoo.com/mrss"))  # feedparser: both
DCTERMS = "http://purl.org/dc/terms/"
GEORSS = "http://www.georss.org/georss"
# iTunes, in both spellings (feedparser matches namespace URIs ignoring case)
ITUNES = frozenset(("http://www.itunes.com/DTDs/Podcast-1.0.dtd",
                    "http://www.itunes.com/dtds/podcast-1.0.dtd"))
# iTunes elements of an item that feedparser reads into its author or summary
_ITUNES_FIELDS = frozenset(("author", "summary", "owner", "name", "email"))
# Elements feedparser reads into nothing ParsedEntry carries (comment counts, comment
# feeds, origin links, categories, languages, rights).
_HARMLESS = frozenset(
    {
        ("", "category"), ("", "comments"),
        (DC, "subject"), (DC, "language"), (DC, "rights"), (DC, "format"), (DC, "type"),
        ("http://purl.org/rss/1.0/modules/slash/", "comments"),
        ("http://wellformedweb.org/CommentAPI/", "commentRss"),
        ("http://wellformedweb.org/CommentAPI/", "comment"),
        ("http://rssnamespace.org/feedburner/ext/1.0", "origLink"),
        (ATOM, "category"), (ATOM, "rights"), (ATOM, "created"), (DC, "publisher"),
        ("", "expirationDate"),
        (DCTERMS, "created"), (MEDIA, "category"), ("http://search.yahoo.com/mrss", "category"),
        (GEORSS, "point"), (GEORSS, "line"), (GEORSS, "polygon"), (GEORSS, "box"),
    }
)
# An entry's source feed (Atom <source>, RSS <source url>): feedparser keeps what it
# holds apart from the entry's own fields.
_SOURCE = frozenset({(ATOM, "source"), ("", "source")})
# Elements whose whole subtree feedparser reads into fields ParsedEntry does not carry
# (contributors, places).
_SUBTREES = _SOURCE | {(ATOM, "contributor"), (GEORSS, "where")}

_XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
ReadDate = Callable[[str | None], datetime | None]


class Decline(Exception):
    """The fast path is not sure: the caller uses feedparser."""


def qname(el: etree._Element) -> tuple[str, str]:
    tag = el.tag
    if not isinstance(tag, str):
        raise Decline("comment or processing instruction")
    if tag[0] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def text_value(el: etree._Element) -> str:
    """The text of an element that must hold only text (else: decline)."""
    if len(el):
        raise Decline("markup inside a text element")
    if el.get("mode") is not None:
        raise Decline("mode attribute")
    return popped_text(el.text or "")


def attributes(el: etree._Element) -> dict[str, str]:
    return {str(k).lower(): v for k, v in el.attrib.items()}


class EntryReader:
    """Reads the entries of one document (the feed level is ``fastparse._Reader``)."""

    def __init__(self, document_url: str, read_date: ReadDate) -> None:
        self.atom = ATOM  # the namespace of an Atom feed's own elements
        self.document_url = document_url
        self.base = document_url  # the feed's base, once its feed level is read
        self.read_date = read_date
        # True when the document may declare a base (``parse`` then gives feedparser the
        # document URL, and feedparser resolves URLs against the base in scope).
        self.resolving = False

    def _scope(self, base: str, el: etree._Element) -> str:
        """The base in scope inside ``el`` (feedparser's unknown_starttag); "" when the
        document declares none, as feedparser's own base is then."""
        if not self.resolving:
            return ""
        attrs = el.attrib
        rel = attrs[_XML_BASE] if _XML_BASE in attrs else attrs.get("base")
        return safe_base(base, rel or base) or base

    def _entry_base(self, detail_base: str | None) -> str:
        """``parse._entry``: the base of the content, summary or title detail, else the
        feed's."""
        return absolute(detail_base, self.base) or self.base

    @staticmethod
    def _atom_link_alternate(el: etree._Element, base: str) -> str | None:
        """The href of an alternate HTML link (the entry's or feed's link: the last one
        wins), None for any other link."""
        attrs = attributes(el)
        href = attrs.get("href")
        if "url" in attrs or "uri" in attrs or len(el) or (el.text or "").strip():
            raise Decline("atom link with url/uri attributes or content")
        if href is None:
            raise Decline("atom link without href (feedparser reads its text)")
        rel = attrs.get("rel", "alternate")
        kind = attrs.get("type", "application/atom+xml" if rel == "self" else "text/html")
        if rel == "alternate" and map_type(kind) in ("text/html", "application/xhtml+xml"):
            return feedparser_uri(href, base)
        return None

    @staticmethod
    def _atom_text(el: etree._Element) -> tuple[str, str]:
        """(value, feedparser's content type) of an Atom text construct."""
        kind = map_type(el.get("type", "text"))
        if kind not in ("text/plain", "text/html"):
            raise Decline(f"atom text of type {kind}")
        if el.get("src") is not None:
            raise Decline("content by reference")
        return text_value(el), kind

    def _date(self, el: etree._Element) -> datetime | None:
        return self.read_date(text_value(el))

    # --- RSS ------------------------------------------------------------------------

    def _rss_item(self, item: etree._Element, rss_ns: str, parent_base: str) -> ParsedEntry:
        item_base = self._scope(parent_base, item)
        bases: dict[str, str] = {}  # the base in scope at the title, description, content
        seen: set[tuple[str, str]] = set()
        guid: str | None = item.get(f"{{{RDF}}}about") if rss_ns else None
        permalink = False
        link: str | None = None
        has_link = False
        title: str | None = None
        author: str | None = None
        published: datetime | None = None
        updated: datetime | None = None
        description: str | None = None
        encoded: str | None = None
        thumbnails: list[str] = []
        enclosures: list[str] = []
        for child in item:
            key = qname(child)
            ns, local = key
            if key in _SUBTREES:
                continue
            if key in _HARMLESS:
                if len(child):
                    raise Decline(f"markup inside {local}")
                continue
            repeatable = key in (("", "enclosure"), (ATOM, "link")) or (
                ns in MEDIA_NAMESPACES and local in ("thumbnail", "content")
            )
            if key in seen and not repeatable:
                raise Decline(f"two {local} in one item")
            seen.add(key)
            if ns == rss_ns and local == "title":
                title = text_value(child)
                bases["title"] = self._scope(item_base, child)
            elif ns == rss_ns and local == "link":
                if child.attrib:
                    raise Decline("link with attributes")
                has_link = True
                value = feedparser_uri(text_value(child), self._scope(item_base, child))
                link = unentity_link(value.replace("&amp;", "&"))
            elif ns == ATOM and local == "link":
                child_base = self._scope(item_base, child)
                alternate = self._atom_link_alternate(child, child_base)
                if alternate is not None:
                    link, has_link = alternate, True
                self._enclosure(attributes(child), enclosures, atom=True, base=child_base)
            elif ns == "" and local == "guid" and not rss_ns:
                if guid is not None:
                    raise Decline("two guids")
                attrs = attributes(child)
                permalink = attrs.get("ispermalink", "true") == "true"
                guid = text_value(child)
            elif (key == ("", "author") and not rss_ns) or key == (DC, "creator"):
                if author is not None:
                    raise Decline("two authors")
                author = text_value(child)
            elif (ns == "" and local == "pubDate" and not rss_ns) or key == (DCTERMS, "issued"):
                published = self._date(child)  # the last of them, as feedparser
            elif key in ((DC, "date"), (DCTERMS, "modified")):
                updated = self._date(child)
            elif ns == rss_ns and local == "description":
                if child.attrib:
                    raise Decline("description with attributes")
                description = text_value(child)
                bases["summary"] = self._scope(item_base, child)
            elif key == (CONTENT, "encoded"):
                if child.attrib:
                    raise Decline("content:encoded with attributes")
                encoded = text_value(child)
                bases["content"] = self._scope(item_base, child)
            elif ns == "" and local == "enclosure" and not rss_ns:
                if len(child):
                    raise Decline("enclosure with children")
                self._enclosure(attributes(child), enclosures, atom=False, base="")
            elif ns in MEDIA_NAMESPACES and local in ("thumbnail", "content"):
                self._media(child, local, thumbnails)
            elif ns in ITUNES and local not in _ITUNES_FIELDS:
                continue  # duration, image, explicit...: nothing ParsedEntry carries
            else:
                raise Decline(f"unmodelled element {key}")
        if ("", "guid") in seen and guid is None:
            raise Decline("guid")
        if encoded:
            base = self._entry_base(bases["content"])
        else:
            base = self._entry_base(bases.get("summary", bases.get("title")))
        if has_link:
            entry_link = absolute(link, base)
        elif permalink and guid is not None:  # rdf:about never is a link
            entry_link = web_url(clean(guid))
        else:
            entry_link = None
        contents = [("text/html", encoded, "")] if encoded is not None else []
        summary = description if description is not None else encoded
        return self._entry(
            base=base,
            guid=guid, link=entry_link, title=title, title_is_html=(
                title is not None and looks_like_html(title)
            ),
            author=author_name(author) if author is not None else None,
            published=published, updated=updated, contents=contents, summary=summary,
            thumbnails=thumbnails, enclosures=enclosures,
        )

    # --- Atom -----------------------------------------------------------------------

    def _atom_entry(self, entry: etree._Element, parent_base: str) -> ParsedEntry:
        entry_base = self._scope(parent_base, entry)
        bases: dict[str, str] = {}  # the base in scope at the title and summary
        seen: set[str] = set()
        guid: str | None = None
        link: str | None = None
        has_link = False
        title: str | None = None
        title_kind = "text/plain"
        author: str | None = None
        published: datetime | None = None
        updated: datetime | None = None
        summary: str | None = None
        contents: list[tuple[str, str, str]] = []
        thumbnails: list[str] = []
        enclosures: list[str] = []
        for child in entry:
            key = self._atom_ns(child)
            ns, local = key
            if key in _SUBTREES:
                continue
            if key in _HARMLESS:
                if len(child):
                    raise Decline(f"markup inside {local}")
                continue
            if ns == ATOM and local == "link":
                child_base = self._scope(entry_base, child)
                alternate = self._atom_link_alternate(child, child_base)
                if alternate is not None:
                    link, has_link = alternate, True
                self._enclosure(attributes(child), enclosures, atom=True, base=child_base)
                continue
            if ns in MEDIA_NAMESPACES and local in ("thumbnail", "content"):
                self._media(child, local, thumbnails)
                continue
            if ns != ATOM:
                raise Decline(f"unmodelled element {key}")
            if local in seen:
                raise Decline(f"two {local} in one entry")
            seen.add(local)
            if local == "id":
                guid = text_value(child)
            elif local == "title":
                title, title_kind = self._atom_text(child)
                bases["title"] = self._scope(entry_base, child)
            elif local == "author":
                author = self._atom_author(child)
            elif local in ("published", "issued"):  # Atom 0.3: issued, modified
                published = self._date(child)  # the last of them, as feedparser
            elif local in ("updated", "modified"):
                updated = self._date(child)
            elif local == "summary":
                summary, _ = self._atom_text(child)
                bases["summary"] = self._scope(entry_base, child)
            elif local == "content":
                value, kind = self._atom_text(child)
                contents.append((kind, value, self._scope(entry_base, child)))
            else:
                raise Decline(f"unmodelled element {key}")
        if summary is None and contents:
            summary = contents[0][1]
        chosen = first_content(contents)
        if chosen is not None:
            base = self._entry_base(chosen[2])
        else:
            base = self._entry_base(bases.get("summary", bases.get("title")))
        if has_link:
            entry_link = absolute(link, base)
        else:
            entry_link = web_url(clean(guid)) if guid is not None else None
        return self._entry(
            base=base,
            guid=guid, link=entry_link, title=title, title_is_html=title_kind == "text/html",
            author=author, published=published, updated=updated, contents=contents,
            summary=summary, thumbnails=thumbnails, enclosures=enclosures,
        )

    def _atom_ns(self, el: etree._Element) -> tuple[str, str]:
        ns, local = qname(el)
        return (ATOM, local) if ns == self.atom else (ns, local)

    def _atom_author(self, el: etree._Element) -> str | None:
        if (el.text or "").strip():
            raise Decline("text directly in an atom author")
        name: str | None = None
        email: str | None = None
        for child in el:
            ns, local = self._atom_ns(child)
            if ns != ATOM or local not in ("name", "email", "uri", "url"):
                raise Decline("unmodelled author child")
            if (child.tail or "").strip():
                raise Decline("text directly in an atom author")
            if local == "name":
                name = text_value(child)
            elif local == "email":
                email = text_value(child)
            else:
                text_value(child)
        return clean(name or email)

    # --- media and enclosures ---------------------------------------------------------

    def _media(self, el: etree._Element, local: str, thumbnails: list[str]) -> None:
        if len(el):
            raise Decline("media element with children")
        attrs = attributes(el)
        url = attrs.get("url")
        if url is None:
            raise Decline("media element without url")
        if local == "thumbnail":
            thumbnails.append(url)
        elif attrs.get("medium") == "image" or attrs.get("type", "").startswith("image/"):
            thumbnails.append("\0" + url)  # media:content images come after thumbnails

    def _enclosure(
        self, attrs: dict[str, str], enclosures: list[str], *, atom: bool, base: str
    ) -> None:
        if atom:
            if attrs.get("rel") != "enclosure" or "href" not in attrs:
                return
            kind = attrs.get("type", "text/html")
            href: str | None = feedparser_uri(attrs["href"], base)
        else:
            href = attrs.get("url", attrs.get("uri", attrs.get("href")))
            kind = attrs.get("type", "")
        if kind.startswith("image/") and href:
            enclosures.append(href)

    def _entry(
        self, *, base: str, guid: str | None, link: str | None, title: str | None,
        title_is_html: bool,
        author: str | None, published: datetime | None, updated: datetime | None,
        contents: list[tuple[str, str, str]], summary: str | None, thumbnails: list[str],
        enclosures: list[str],
    ) -> ParsedEntry:
        chosen = first_content(contents)
        content = chosen[1] if chosen is not None else None
        thumbs = [u for u in thumbnails if not u.startswith("\0")]
        thumbs += [u[1:] for u in thumbnails if u.startswith("\0")]
        return ParsedEntry(
            guid=clean(guid),
            link=link,
            title=title,
            title_is_html=title_is_html,
            author=clean(author),
            published=published,
            updated=updated,
            content=content if content is not None else summary,
            summary=summary if content is not None else None,
            base=base,
            thumbnails=tuple(u for t in thumbs if (u := absolute(t, base))),
            image_enclosures=tuple(u for e in enclosures if (u := absolute(e, base))),
        )
