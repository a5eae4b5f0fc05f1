"""Typed records that flow between the stages of intake, storage and publishing.

Every stage takes and returns these frozen dataclasses, never ORM rows, HTTP
responses or feedparser dicts, so a stage can be tested with values alone and
swapped without its neighbours noticing.  It imports no outside library and from the
project only ``aggregator.rules`` (the invariants an ``Article`` enforces when it is
made) and ``aggregator.stories`` (the keys that say which articles are one story): with
those and ``errors`` it is the bottom of the import graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from aggregator.rules import as_utc, check_title
from aggregator.stories import link_key, text_fingerprint, title_digest


class SourceKind(StrEnum):
    """How a source's URL is read: a feed (RSS, Atom, JSON Feed), or a list page without
    one, read with CSS selectors (``PageSelectors``)."""

    FEED = "feed"
    HTML = "html"


@dataclass(frozen=True, slots=True)
class PageSelectors:
    """Where a list page (``kind: html``) keeps its entries: CSS selectors, each inside
    one ``item`` match; ``"sel@attr"`` takes an attribute instead of the text."""

    item: str
    title: str
    link: str
    date: str | None = None
    date_format: str | None = None  # strptime format; None: common formats are tried
    timezone: str | None = None  # "+08:00": the zone of dates that carry none (else UTC)
    summary: str | None = None  # HTML kept (sanitized like feed content)
    image: str | None = None


@dataclass(frozen=True, slots=True)
class SourceRules:
    """Per-source article rules (regexes, compiled and checked when the config loads, run
    with a time bound): drop matches of ``exclude``, keep only matches of ``include`` (if
    any), remove ``strip_title`` from titles, and add a category per matching pattern."""

    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    strip_title: str | None = None
    categories: tuple[tuple[str, str], ...] = ()  # (pattern, category), in config order

    def __bool__(self) -> bool:
        return bool(self.exclude or self.include or self.strip_title or self.categories)

    def patterns(self) -> list[tuple[str, str]]:
        """(name, pattern) of every pattern, named as the config spells them
        (``exclude[1]``, ``categories['人工智能|AI']``, ``strip_title``): config errors
        and timeout warnings name a rule the same way."""
        return [
            *((f"exclude[{i}]", p) for i, p in enumerate(self.exclude)),
            *((f"include[{i}]", p) for i, p in enumerate(self.include)),
            *((f"categories[{p!r}]", p) for p, _category in self.categories),
            *((("strip_title", self.strip_title),) if self.strip_title is not None else ()),
        ]


@dataclass(frozen=True, slots=True)
class Source:
    """One portal an operator listed in the config."""

    id: str
    name: str
    url: str
    categories: tuple[str, ...]
    interval: timedelta = timedelta(minutes=30)
    encoding: str | None = None  # overrides whatever the server or document declares
    comments: bool = False
    enabled: bool = True
    max_bytes: int | None = None  # overrides FetchOptions.max_bytes for this source
    language: str | None = None  # BCP 47 tag of its articles (``zh-TW``); None: unknown
    kind: SourceKind = SourceKind.FEED
    page: PageSelectors | None = None  # kind HTML: how to read the list page
    full_text: bool = False  # fetch each new article's page for its main content
    content_selector: str | None = None  # the content's CSS selector on article pages
    rules: SourceRules = SourceRules()

    @property
    def all_categories(self) -> tuple[str, ...]:
        """Every category this source's articles can be filed under: its own, then those
        its rules add (``rules.categories``), in order, each once.  What is built after
        its polls and published for it."""
        extra = (category for _pattern, category in self.rules.categories)
        return tuple(dict.fromkeys((*self.categories, *extra)))


# The namespace of the attributes ``aggregator sources export`` adds to OPML outlines
# (``aggregator:id``, ``aggregator:interval``) so that importing the export gives the
# same sources back; other readers ignore them.
SOURCES_OPML_NAMESPACE = "urn:aggregator:opml"


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How the fetch stage talks to portals."""

    user_agent: str = "aggregator/0.1.0 (RSS aggregator)"  # config builds the real one
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = 30.0  # wall-clock bound on one whole fetch, seconds
    max_bytes: int = 10 * 1024 * 1024  # decompressed body size limit
    max_redirects: int = 5
    allow_private_networks: bool = False


@dataclass(frozen=True, slots=True)
class Validators:
    """HTTP cache validators remembered from the previous successful fetch."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What the server answered.  ``content`` is empty when ``not_modified``."""

    source_id: str
    url: str  # final URL, after redirects
    status: int
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # keys lower-case
    etag: str | None = None
    last_modified: str | None = None
    elapsed: float = 0.0  # seconds
    # Where a 301/308 on the way pointed, when the source URL itself moved permanently.
    permanent_redirect: str | None = None

    def __post_init__(self) -> None:
        # a plain dict (not a MappingProxyType) so results pickle to parse workers
        object.__setattr__(self, "headers", {k.lower(): v for k, v in self.headers.items()})

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def validators(self) -> Validators:
        return Validators(etag=self.etag, last_modified=self.last_modified)


class ParserKind(StrEnum):
    """Which parse path read an RSS/Atom document (``ingest.fastparse`` or feedparser)."""

    FAST = "fast"
    FEEDPARSER = "feedparser"


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One feed entry as the document says it, before any cleaning.

    HTML fields are raw (unsanitized, URLs as written: relative ones resolve against
    ``base``); the other URLs are absolute; dates are timezone-aware UTC or None.
    """

    guid: str | None = None
    link: str | None = None
    title: str | None = None
    title_is_html: bool = False
    author: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    content: str | None = None  # HTML
    summary: str | None = None  # HTML
    base: str | None = None  # what relative URLs in content/summary resolve against
    thumbnails: tuple[str, ...] = ()  # media:thumbnail / media:content images
    image_enclosures: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A parsed document: feed-level metadata and its entries in document order."""

    source_id: str
    url: str  # base URL that relative links resolve against
    title: str | None = None
    link: str | None = None
    encoding: str | None = None
    entries: tuple[ParsedEntry, ...] = ()
    warnings: tuple[str, ...] = ()  # non-fatal problems (bozo feeds that still had entries)
    rekeyed: int = 0  # entries that shared another's key and got one of their own
    filtered: int = 0  # articles the source's rules dropped (exclude / include)
    parser: ParserKind | None = None  # which path read RSS/Atom (None: JSON Feed, list page)


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    """Site-wide rules for turning entries into articles."""

    image_proxy: str | None = None  # prefix, e.g. "https://cors.zfour.workers.dev/?"
    image_proxy_scope: str = "http"  # "http": only http:// images; "all": https too
    # ``image_proxy: builtin``: images go through our own signed ``/img/`` endpoint
    # (``imageproxy.signed_url``) instead of a prefix; ``image_proxy`` is then None.
    builtin_image_proxy: BuiltinImageProxy | None = None
    # headimg/thumbnail of an article with no image; with several, each article takes
    # one chosen by its identity (the same one every time).
    default_images: tuple[str, ...] = ()
    summary_length: int = 200


@dataclass(frozen=True, slots=True)
class BuiltinImageProxy:
    """Where our own image endpoint lives and the key its URLs are signed with."""

    site_url: str  # the endpoint is ``site_url + "img/<signature>/<base64 url>"``
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Article:
    """The one article schema (see shared/seed): what is stored, generated and exported."""

    source_id: str
    key: str  # identity within the source: guid, else link, else content hash
    guid: str | None
    link: str | None
    title: str
    author: str
    date: datetime  # published -> updated -> first seen; aware UTC
    date_from_feed: bool  # False when ``date`` is the first-seen fallback
    categories: tuple[str, ...]
    content: str  # sanitized HTML
    summary: str  # plain text excerpt
    headimg: str | None
    thumbnail: str | None
    comments: bool
    first_seen: datetime
    updated_at: datetime
    content_hash: str

    def __post_init__(self) -> None:
        # Invariants every writer relies on, so a record breaking them cannot exist: the
        # datetimes are aware and in UTC (converted; naive ones refused) and the title
        # shows something.  Cleaning the text is the normalize stage's job, not this one.
        object.__setattr__(self, "date", as_utc(self.date))
        object.__setattr__(self, "first_seen", as_utc(self.first_seen))
        object.__setattr__(self, "updated_at", as_utc(self.updated_at))
        check_title(self.title)

    # The keys ``stories.same_story`` compares, derived from the fields on first use and
    # kept (not init fields: ``dataclasses.replace`` makes a record that derives its own,
    # never a stale copy; pickled with the record, so what a parse worker derived reaches
    # the store with it); the store keeps them in indexed columns.  The link and title
    # keys are cheap and always needed; the fingerprint (a SimHash of the whole text, the
    # dearest thing about a new article) only when another source's article has the same
    # title, so it is derived on first use — by the store, for the few that need it.
    _story_keys: tuple[str | None, str | None] | None = field(
        default=None, init=False, repr=False, compare=False)
    _story_print: tuple[str | None] | None = field(
        default=None, init=False, repr=False, compare=False)

    def with_story_keys(self) -> Article:
        """This record, its link and title keys derived now if they were not: the normalize
        stage calls it, so a parse worker pays for them, not the store's transaction."""
        if self._story_keys is None:
            object.__setattr__(self, "_story_keys",
                               (link_key(self.link), title_digest(self.title)))
        return self

    @property
    def story_link(self) -> str | None:
        """A digest of the canonical link (``stories.link_key``); None without a link."""
        return self._link_and_title()[0]

    @property
    def story_title(self) -> str | None:
        """A digest of the folded title (``stories.title_digest``)."""
        return self._link_and_title()[1]

    def _link_and_title(self) -> tuple[str | None, str | None]:
        keys = self.with_story_keys()._story_keys
        assert keys is not None
        return keys

    @property
    def story_print(self) -> str | None:
        """The SimHash of the content's text, else of the summary
        (``stories.text_fingerprint``); None with too little text.  Derived on first use."""
        if self._story_print is None:
            object.__setattr__(self, "_story_print",
                               (text_fingerprint(self.content or "", self.summary or ""),))
        assert self._story_print is not None
        return self._story_print[0]


@dataclass(frozen=True, slots=True)
class ArticleStamp:
    """A stored article's identity and dates, without its content: what publishing needs
    to place every article of a category in an archive page (``Store.category_index``)."""

    source_id: str
    key: str
    first_seen: datetime
    updated_at: datetime
    date: datetime
    content_hash: str  # changes whenever the stored content does

    @property
    def identity(self) -> tuple[str, str]:
        return (self.source_id, self.key)


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """How generated feeds are laid out and published."""

    output_dir: str
    site_url: str  # every file in output_dir is served at site_url + relative path
    feed_size: int = 50
    title_prefix: str = ""
    site_title: str = ""  # empty: derived from title_prefix or the site host
    # BCP 47 tag of the site (the index page) and of categories missing from
    # ``category_languages``; None: unknown, no language is declared.
    language: str | None = None
    # category -> its sources' common language (None where they differ or say none)
    category_languages: Mapping[str, str | None] = field(default_factory=dict)
    # source id -> the configured name people see (the index page); missing: the id
    source_names: Mapping[str, str] = field(default_factory=dict)
    # A feed's description, with ``{category}`` and ``{site}``; None: the default
    # wording of the category's language.
    feed_description: str | None = None
    # The index page's introduction (plain text); None: the default of ``language``.
    site_description: str | None = None
    # A WebSub hub (W3C WebSub): every RSS/Atom feed links it with ``rel="hub"``.
    hub_url: str | None = None


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What a commit did to one source's articles."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0  # entries the feed still lists that retention removed (not re-added)
    collided: int = 0  # entries left out because an earlier entry had the same key
    # Categories of OTHER sources' articles whose stories new articles joined: their feeds
    # show the story too (union categories, "also reported by"), so they need a build.
    story_categories: tuple[str, ...] = ()


class PollOutcome(StrEnum):
    """How one poll of one source ended; stored as the source's ``last_result``."""

    NEW = "new"  # articles were added
    UPDATED = "updated"  # existing articles changed, none added
    UNCHANGED = "unchanged"  # parsed (or the same bytes as last time): nothing changed
    NOT_MODIFIED = "not-modified"  # HTTP 304
    ERROR = "error"  # fetch, parse or store failed; polled again after a backoff
    DISABLED = "disabled"  # the portal said 410 Gone: not polled until the URL is edited
    SKIPPED = "skipped"  # not polled: disabled by an earlier 410
    SUPERSEDED = "superseded"  # a peer took the source over past this poll's lease: not kept

    @classmethod
    def of_counts(cls, counts: StoreCounts) -> PollOutcome:
        """The outcome of a poll that stored a parsed document."""
        if counts.new:
            return cls.NEW
        if counts.updated:
            return cls.UPDATED
        return cls.UNCHANGED

    @property
    def failed(self) -> bool:
        return self in (PollOutcome.ERROR, PollOutcome.DISABLED)


@dataclass(frozen=True, slots=True)
class PollRules:
    """When sources are polled again: backoff and spreading."""

    max_backoff: timedelta = timedelta(hours=24)
    # Every next poll is pushed back by a random part of this fraction of its delay (at
    # most ``max_jitter``), so sources started together drift out of lock-step.
    jitter: float = 0.1
    max_jitter: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the store remembers about polling one source: read once per poll, written
    whole (as the poll's decision) once per poll."""

    source_id: str
    url: str | None = None  # the URL last polled: the validators and body hash belong to it
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    last_result: str | None = None  # a PollOutcome value
    last_error: str | None = None
    error_count: int = 0  # consecutive failed polls; 0 after a success
    next_poll_at: datetime | None = None  # None: not scheduled (disabled)
    disabled_reason: str | None = None  # set when the portal said 410 Gone
    redirect_target: str | None = None  # a permanent redirect seen on consecutive polls
    redirect_count: int = 0  # how many consecutive polls confirmed redirect_target
    moved_from: str | None = None  # the configured URL that moved permanently...
    moved_to: str | None = None  # ...and the URL polled instead while the config says moved_from
    # what the last parsed document was warned about (an encoding guess, a bozo feed read
    # leniently), "; "-joined; kept while the document is unchanged
    last_warnings: str | None = None

    @property
    def validators(self) -> Validators:
        return Validators(etag=self.etag, last_modified=self.last_modified)


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim on one source until ``until``; ``token`` fences its commit: the
    commit applies only while the row still carries this token (no later claim took over)."""

    source_id: str
    token: int
    until: datetime
    holder: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A due source a worker claimed: the lease and the state its poll starts from."""

    lease: Lease
    state: SourceState
    taken_over: bool = False  # the previous holder's lease had expired unreleased


@dataclass(frozen=True, slots=True)
class SourceStatus(SourceState):
    """A source's remembered state and how many articles it has stored (``status``,
    ``/healthz``)."""

    article_count: int = 0


@dataclass(frozen=True, slots=True)
class SourceUpdate:
    """One poll's decision: the source's next state, committed with its articles in one
    transaction."""

    state: SourceState
    # None when a parsed document was stored: then the articles decide (PollOutcome.of_counts)
    result: PollOutcome | None
    moved: bool = False  # this poll confirmed a permanent move (state.moved_to)


@dataclass(frozen=True, slots=True)
class PollResult:
    """One line of a poll summary, and what the scheduler reschedules from."""

    source_id: str
    result: PollOutcome
    counts: StoreCounts = StoreCounts()
    error: str | None = None
    warnings: tuple[str, ...] = ()
    elapsed: float = 0.0
    status: int | None = None  # HTTP status of the final response, when there was one
    retry_after: float | None = None  # seconds the portal asked us to wait (429/503)
    permanent_redirect: str | None = None  # the source URL answered 301/308 to this URL
    fetch_seconds: float | None = None  # time spent in the fetch stage
    next_poll_at: datetime | None = None  # None: do not schedule (disabled, skipped)
    consecutive_errors: int = 0  # after this poll
    parsed: bool = False  # the document was parsed (even if it had no entries)
    rekeyed: int = 0  # entries that shared another's key (e.g. one link) and got their own
    # full_text: article pages asked for, those that kept the feed's summary (failed),
    # and new articles whose page waits for a later poll (the per-poll cap or deadline)
    pages_fetched: int = 0
    pages_failed: int = 0
    pages_pending: int = 0
    filtered: int = 0  # articles the source's rules dropped (not stored)
    # which path read an RSS/Atom document: the fast path, or feedparser when it declined
    # (None: nothing parsed, or a JSON Feed / list page)
    parser: ParserKind | None = None


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """What a config file says about the sources, as the cluster compares it: a digest of
    its source list (same sources, same digest: whitespace, comments and per-process keys
    do not count) and when the file was last written."""

    digest: str
    written_at: datetime


@dataclass(frozen=True, slots=True)
class AppliedConfig:
    """The config whose sources the database holds: the ``generation`` counts the configs
    applied; ``applied_by`` is the process that applied it."""

    generation: int
    version: ConfigVersion
    applied_at: datetime
    applied_by: str


class ConfigSync(StrEnum):
    """What a process's config is to the database's: applied now, already the one
    applied (nothing to do), or older than the one applied (left alone: a stale process
    must not undo a newer config)."""

    APPLIED = "applied"
    CURRENT = "current"
    STALE = "stale"
