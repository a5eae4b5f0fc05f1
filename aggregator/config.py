"""The operator's YAML config: one declared model with defaults and help text.

Loading turns a file into a validated, frozen ``Settings``; every problem becomes
a ``ConfigError`` that names the file, the source id and the field, so an operator
can fix a bad edit without reading a traceback.  Relative paths (the SQLite file,
``output_dir``) resolve against the config file's folder, not the working directory.

This module must not touch the network or the database: it only reads the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aggregator import __version__
from aggregator.errors import ConfigError
from aggregator.records import (
    BuiltinImageProxy,
    ConfigVersion,
    FeedOptions,
    FetchOptions,
    NormalizeOptions,
    PageSelectors,
    Source,
    SourceKind,
    SourceRules,
)
from aggregator.regexes import check_pattern

# libyaml's safe loader when PyYAML has it (its wheels do): 8x faster on a long source list
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_CONFIG_PATH = Path("config/aggregator.yaml")
CONFIG_ENV_VAR = "AGGREGATOR_CONFIG"
IMAGE_SECRET_ENV_VAR = "AGGREGATOR_IMAGE_SECRET"
BUILTIN_IMAGE_PROXY = "builtin"  # ``image_proxy: builtin``: our own signed /img/ endpoint

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SOURCE_ID = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
SOURCE_ID_PATTERN = _SOURCE_ID  # what a source id looks like (configfile derives ids)
# The shape of a BCP 47 (RFC 5646) language tag: language[-extlang][-script][-region]
# [-variant]*[-extension]*[-privateuse]; the subtags' case is normalized after matching.
_LANGUAGE_TAG = re.compile(
    r"^(?P<language>[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4,8})"
    r"(?:-(?P<script>[a-z]{4}))?"
    r"(?:-(?P<region>[a-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*"
    r"(?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*"
    r"(?:-x(?:-[a-z0-9]{1,8})+)?$",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
DEFAULT_LANGUAGE = "zh-CN"


def parse_duration(value: object) -> timedelta:
    """``90s`` / ``30m`` / ``2h`` / ``1d`` (or a bare number of seconds) → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 30m, 2h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration like 90s, 30m, 2h or 1d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


def language_tag(value: str) -> str:
    """A BCP 47 language tag in its conventional case (``zh-tw`` → ``zh-TW``,
    ``ZH-HANT-hk`` → ``zh-Hant-HK``, ``EN`` → ``en``), or ValueError."""
    match = _LANGUAGE_TAG.match(value)
    if not match:
        hint = " (BCP 47 separates subtags with '-', e.g. zh-TW)" if "_" in value else ""
        raise ValueError(
            f"{value!r} is not a BCP 47 language tag like zh-CN, zh-TW or en{hint}"
        )
    subtags = value.lower().split("-")
    language_end = len(match.group("language").split("-"))
    out = subtags[:language_end]
    rest = subtags[language_end:]
    if match.group("script") and rest:
        out.append(rest.pop(0).title())
    if match.group("region") and rest:
        out.append(rest.pop(0).upper())
    return "-".join(out + rest)


def description_template(value: str) -> str:
    """A feed description: ``{category}`` and ``{site}`` are the only placeholders."""
    unknown = [name for name in _PLACEHOLDER.findall(value) if name not in ("category", "site")]
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}}: use {{category}} and {{site}}"
        )
    return printable(value)


def default_user_agent(homepage_url: str | None) -> str:
    """The User-Agent sent when the config sets none: the version and, when there is
    one, the page a portal's operator can read about this aggregator."""
    contact = f"; +{homepage_url}" if homepage_url else ""
    return f"aggregator/{__version__} (RSS aggregator{contact})"


def parse_size(value: object) -> int:
    """``10MB`` / ``512KB`` / ``1048576`` → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 10MB")
    if isinstance(value, int):
        size = value
    else:
        match = re.match(r"^\s*(\d+)\s*(b|kb|mb|gb)?\s*$", str(value), re.IGNORECASE)
        if not match:
            raise ValueError(f"{value!r} is not a size like 512KB or 10MB")
        unit = (match.group(2) or "b").lower()
        size = int(match.group(1)) * {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[unit]
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PageConfig(_Model):
    """``html:`` of a ``kind: html`` source: CSS selectors of its list page."""

    item: str = Field(min_length=1, description="CSS selector: one match = one entry.")
    title: str = Field(min_length=1, description="Selector of the title inside an item.")
    link: str = Field(min_length=1, description='Selector of the link, e.g. "a@href".')
    date: str | None = Field(default=None, description="Selector of the date (optional).")
    date_format: str | None = Field(default=None, description="strptime format of the date.")
    timezone: str | None = Field(default=None, description='Zone of dates without one: "+08:00".')
    summary: str | None = Field(default=None, description="Selector of the summary (HTML).")
    image: str | None = Field(default=None, description='Selector of the image: "img@src".')

    def to_selectors(self) -> PageSelectors:
        return PageSelectors(**self.model_dump())


class RulesConfig(_Model):
    """``rules:`` of a source: regexes on the title or the plain-text content (see
    ``ingest.filters``).  Every pattern is compiled here, when the config loads: a bad
    one is a ``ConfigError`` naming the source and the rule (``rules.exclude[1]``).
    Patterns are kept exactly as written (no whitespace stripped: it is part of a regex).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    exclude: tuple[str, ...] = Field(default=(), description="Drop matching articles.")
    include: tuple[str, ...] = Field(default=(), description="If given, keep only matching.")
    strip_title: str | None = Field(default=None, description="Removed from titles.")
    categories: dict[str, str] = Field(
        default_factory=dict, description="Pattern -> an extra category for matches.")

    @field_validator("exclude", "include", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value  # exclude: 广告

    @field_validator("categories")
    @classmethod
    def _category_names(cls, value: dict[str, str]) -> dict[str, str]:
        names = {pattern: category.strip() for pattern, category in value.items()}
        for pattern, category in names.items():
            try:
                if not category:
                    raise ValueError("category name is empty")
                printable(category)
            except ValueError as exc:
                raise _InvalidRule(f"categories[{pattern!r}]", str(exc)) from None
        return names

    @model_validator(mode="after")
    def _patterns_compile(self) -> RulesConfig:
        for name, pattern in self.to_rules().patterns():
            try:
                check_pattern(pattern)
            except ValueError as exc:
                raise _InvalidRule(name, str(exc)) from None
        return self

    def to_rules(self) -> SourceRules:
        return SourceRules(exclude=self.exclude, include=self.include,
                           strip_title=self.strip_title,
                           categories=tuple(self.categories.items()))


class SourceConfig(_Model):
    """One portal: a feed, or a list page read with CSS selectors (``kind: html``)."""

    id: str = Field(
        pattern=_SOURCE_ID, description="Unique id, [a-z0-9-]; used in logs and file names."
    )
    name: str = Field(
        min_length=1, description="Portal name; the article author when an entry has none."
    )
    url: AnyHttpUrl = Field(description="The feed URL (http or https).")
    categories: tuple[str, ...] = Field(
        min_length=1,
        description="Categories every article of this source is filed under, in order.",
    )
    interval: timedelta = Field(
        default=timedelta(minutes=30), description="How often to poll: 90s, 30m, 2h, 1d."
    )
    encoding: str | None = Field(
        default=None, description="Force this character encoding, whatever the server declares."
    )
    comments: bool = Field(default=False, description="Whether exported posts allow comments.")
    enabled: bool = Field(default=True, description="Set false to stop polling without deleting.")
    max_bytes: int | None = Field(
        default=None, description="Override max_feed_bytes for this source."
    )
    language: str | None = Field(
        default=None,
        description="BCP 47 language of this source's articles (zh-TW, en); default: the "
        "top-level language.",
    )

    kind: SourceKind = Field(default=SourceKind.FEED,
                             description="feed (RSS, Atom, JSON Feed) or html (a list page).")
    html: PageConfig | None = Field(default=None,
                                    description="kind html: CSS selectors of the list page.")
    full_text: bool = Field(default=False,
                            description="Fetch each new article's page for its main content.")
    content_selector: str | None = Field(
        default=None, description="CSS selector of the content on article pages (full_text).")
    rules: RulesConfig = Field(default_factory=RulesConfig,
                               description="Regex rules: exclude, include, strip_title, "
                                           "categories.")

    @model_validator(mode="after")
    def _kind_has_its_selectors(self) -> SourceConfig:
        if self.kind is SourceKind.HTML and self.html is None:
            raise ValueError("kind html needs an html: block with item, title and link "
                             "selectors")
        if self.kind is SourceKind.FEED and self.html is not None:
            raise ValueError("an html: block needs kind: html")
        return self

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: object) -> timedelta:
        return parse_duration(value)

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _max_bytes(cls, value: object) -> int | None:
        return None if value is None else parse_size(value)

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(dict.fromkeys(c.strip() for c in value))
        if any(not c for c in cleaned):
            raise ValueError("category names must not be empty")
        for category in cleaned:
            printable(category)
        return cleaned

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return printable(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else language_tag(value)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    def to_source(self, default_language: str | None = None) -> Source:
        return Source(
            id=self.id,
            name=self.name,
            url=str(self.url),
            categories=self.categories,
            interval=self.interval,
            encoding=self.encoding,
            comments=self.comments,
            enabled=self.enabled,
            max_bytes=self.max_bytes,
            language=self.language or default_language,
            kind=self.kind,
            page=self.html.to_selectors() if self.html is not None else None,
            full_text=self.full_text,
            content_selector=self.content_selector,
            rules=self.rules.to_rules(),
        )


class Settings(_Model):
    """The whole config file.  Field descriptions are the operator's help text."""

    database_url: str = Field(
        default="sqlite:///data/aggregator.db",
        description="SQLAlchemy URL; a relative SQLite path resolves against the config's folder.",
    )
    output_dir: Path = Field(
        default=Path("public"),
        description="Where generated feeds go; served at site_url + relative path.",
    )
    site_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://localhost:8080/"), description="Public URL of output_dir."
    )
    site_title: str = Field(default="Aggregator", description="Shown in feed titles and OPML.")
    language: str | None = Field(
        default=DEFAULT_LANGUAGE,
        description="BCP 47 language of the site (the index page) and of every source "
        "that sets none; null: unknown.",
    )
    site_description: str | None = Field(
        default=None,
        description="The index page's introduction; default: a sentence in the site's language.",
    )
    feed_description: str | None = Field(
        default=None,
        description="Every category feed's description, with {category} and {site}; "
        "default: a sentence in the feed's language.",
    )
    homepage_url: AnyHttpUrl | None = Field(
        default=None,
        description="Where portals can read about this aggregator (in the default "
        "User-Agent); default: site_url unless it is a local address.",
    )
    image_proxy: str | None = Field(
        default=None,
        description="Prefix routed in front of image URLs, or 'builtin' for the signed "
        "/img/ endpoint this service serves; empty = no rewriting.",
    )
    image_proxy_secret: str | None = Field(
        default=None, repr=False,
        description=f"Key that signs builtin image proxy URLs; default: ${IMAGE_SECRET_ENV_VAR}.",
    )
    image_cache_dir: Path = Field(
        default=Path("data/image-cache"),
        description="Where the builtin image proxy keeps the images it fetched.",
    )
    image_cache_bytes: int = Field(
        default=256 * 1024 * 1024, ge=0,
        description="Bound of image_cache_dir; the least recently served images go first.",
    )
    image_proxy_scope: Literal["http", "all"] = Field(
        default="http", description="Route only http:// images through the proxy, or all."
    )
    default_image: str | list[str] | None = Field(
        default=None,
        description="headimg/thumbnail when an article has no image; a list: each "
        "article takes one of them, always the same.",
    )
    hub_url: AnyHttpUrl | None = Field(
        default=None,
        description="WebSub hub: feeds link it and it is pinged after a build changed them.",
    )
    allow_private_networks: bool = Field(
        default=False, description="Allow sources on loopback/private addresses (demo, tests)."
    )
    feed_size: int = Field(default=50, ge=1, le=10000, description="Articles per generated feed.")
    summary_length: int = Field(default=200, ge=0, description="Characters in article summaries.")
    user_agent: str = Field(
        default="",
        description="User-Agent sent to portals; default: aggregator/VERSION with homepage_url.",
    )
    connect_timeout: timedelta = Field(
        default=timedelta(seconds=10), description="TCP connect timeout."
    )
    read_timeout: timedelta = Field(
        default=timedelta(seconds=30), description="Socket read timeout."
    )
    fetch_deadline: timedelta = Field(
        default=timedelta(seconds=30), description="Wall-clock bound on one whole fetch."
    )
    max_feed_bytes: int = Field(default=10 * 1024 * 1024, description="Largest feed body accepted.")
    full_text_max_pages: int = Field(
        default=20, ge=1, le=1000,
        description="full_text: article pages one poll of a source fetches at most.")
    full_text_deadline: timedelta = Field(
        default=timedelta(minutes=2),
        description="full_text: how long one poll's article pages may take together.")
    workers: int = Field(default=8, ge=1, le=64, description="Sources polled in parallel.")
    parse_workers: int = Field(
        default=2, ge=0, le=32,
        description="Worker processes that parse feeds (0: parse in-process, no budget).",
    )
    parse_timeout: timedelta = Field(
        default=timedelta(seconds=20), description="Longest a feed may take to parse."
    )
    parse_memory: int = Field(
        default=768 * 1024 * 1024, description="Address space a parse worker may use."
    )
    # --- the daemon (aggregator run) ---
    host_concurrency: int = Field(
        default=2, ge=1, le=64, description="Polls of one host running at the same time."
    )
    max_backoff: timedelta = Field(
        default=timedelta(hours=24), description="Longest wait after repeated errors."
    )
    start_jitter: timedelta = Field(
        default=timedelta(minutes=1),
        description="First polls after a (re)start are spread over up to this long.",
    )
    build_debounce: timedelta = Field(
        default=timedelta(seconds=2),
        description="Wait this long after a poll changed articles, to build once for many.",
    )
    shutdown_timeout: timedelta = Field(
        default=timedelta(seconds=20), description="How long in-flight polls may finish on stop."
    )
    retention_days: int | None = Field(
        default=None, ge=1, description="Delete articles older than this many days."
    )
    max_articles_per_source: int | None = Field(
        default=None, ge=1, description="Keep at most this many newest articles per source."
    )
    removed_source_grace: timedelta = Field(
        default=timedelta(days=30),
        description="A source removed from the config leaves the outputs at once and the "
                    "database after this long (re-adding it meanwhile keeps its articles).",
    )
    sources: tuple[SourceConfig, ...] = Field(default=(), description="The portals to poll.")

    # Where the file was read from; relative paths were resolved against its folder.
    config_path: Path | None = Field(default=None, exclude=True)
    # When that file was last written (its modification time, read before its text).
    config_written_at: datetime | None = Field(default=None, exclude=True)

    @field_validator(
        "connect_timeout", "read_timeout", "fetch_deadline", "max_backoff", "build_debounce",
        "shutdown_timeout", "parse_timeout", "removed_source_grace", "full_text_deadline",
        mode="before",
    )
    @classmethod
    def _durations(cls, value: object) -> timedelta:
        return parse_duration(value)

    @field_validator("start_jitter", mode="before")
    @classmethod
    def _jitter(cls, value: object) -> timedelta:
        if value in (0, "0", "0s"):
            return timedelta(0)
        return parse_duration(value)

    @field_validator("max_feed_bytes", "parse_memory", "image_cache_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_size(value)

    @field_validator("image_proxy", "image_proxy_secret")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("default_image")
    @classmethod
    def _default_images(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            return [image for image in value if image] or None
        return value or None

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else language_tag(value)

    @field_validator("site_description")
    @classmethod
    def _site_description(cls, value: str | None) -> str | None:
        return printable(value) if value else None

    @field_validator("feed_description")
    @classmethod
    def _feed_description(cls, value: str | None) -> str | None:
        return description_template(value) if value else None

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("expected a SQLAlchemy URL such as sqlite:///data/aggregator.db")
        return value

    @model_validator(mode="after")
    def _default_user_agent(self) -> Settings:
        if not self.user_agent:
            # frozen model: set the derived default once, while it is being validated
            object.__setattr__(self, "user_agent", default_user_agent(self.homepage()))
        return self

    @model_validator(mode="after")
    def _image_proxy_secret(self) -> Settings:
        if self.image_proxy != BUILTIN_IMAGE_PROXY:
            return self
        secret = self.image_proxy_secret or os.environ.get(IMAGE_SECRET_ENV_VAR)
        if not secret:
            raise ValueError(f"image_proxy: builtin needs a signing key: set "
                             f"image_proxy_secret or ${IMAGE_SECRET_ENV_VAR}")
        object.__setattr__(self, "image_proxy_secret", secret)
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> Settings:
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            if source.id in seen:
                raise _DuplicateId(index, source.id)
            seen.add(source.id)
        return self

    # --- views for the stages -------------------------------------------------

    def homepage(self) -> str | None:
        """``homepage_url``, else ``site_url`` when others can reach it (not a loopback
        or ``localhost`` address, which would tell a portal nothing), else None."""
        if self.homepage_url is not None:
            return str(self.homepage_url)
        host = (self.site_url.host or "").strip("[]").lower()
        if host == "localhost" or host.endswith(".localhost") or _is_loopback(host):
            return None
        return str(self.site_url)

    def config_version(self, now: datetime) -> ConfigVersion:
        """What this config says about the sources, for comparing it with the one the
        database holds: the digest of its source list, and when its file was written
        (``now`` for settings that did not come from a file)."""
        digest = hashlib.sha256(repr(self.source_list()).encode()).hexdigest()
        return ConfigVersion(digest=digest, written_at=self.config_written_at or now)

    def source_list(self, only: set[str] | None = None) -> list[Source]:
        return [s.to_source(self.language) for s in self.sources
                if only is None or s.id in only]

    def category_languages(self) -> dict[str, str | None]:
        """Category -> the language all its sources share, None where they differ
        (a source without a language of its own has the top-level one)."""
        languages: dict[str, set[str | None]] = {}
        for source in self.sources:
            for category in source.to_source().all_categories:
                languages.setdefault(category, set()).add(source.language or self.language)
        return {c: next(iter(tags)) if len(tags) == 1 else None
                for c, tags in languages.items()}

    def fetch_options(self) -> FetchOptions:
        return FetchOptions(
            user_agent=self.user_agent,
            connect_timeout=self.connect_timeout.total_seconds(),
            read_timeout=self.read_timeout.total_seconds(),
            deadline=self.fetch_deadline.total_seconds(),
            max_bytes=self.max_feed_bytes,
            allow_private_networks=self.allow_private_networks,
        )

    def normalize_options(self) -> NormalizeOptions:
        builtin = self.image_proxy == BUILTIN_IMAGE_PROXY
        images = self.default_image
        return NormalizeOptions(
            image_proxy=None if builtin else self.image_proxy,
            image_proxy_scope=self.image_proxy_scope,
            builtin_image_proxy=self.builtin_image_proxy() if builtin else None,
            default_images=tuple([images] if isinstance(images, str) else images or ()),
            summary_length=self.summary_length,
        )

    def builtin_image_proxy(self) -> BuiltinImageProxy | None:
        """Our own image endpoint's address and key, when ``image_proxy: builtin``."""
        if self.image_proxy != BUILTIN_IMAGE_PROXY or not self.image_proxy_secret:
            return None
        return BuiltinImageProxy(site_url=str(self.site_url),
                                 secret=self.image_proxy_secret.encode("utf-8"))

    def feed_options(self) -> FeedOptions:
        return FeedOptions(
            output_dir=str(self.output_dir),
            site_url=str(self.site_url),
            feed_size=self.feed_size,
            title_prefix=f"{self.site_title} · " if self.site_title else "",
            site_title=self.site_title,
            language=self.language,
            category_languages=self.category_languages(),
            source_names={s.id: s.name for s in self.sources},
            feed_description=self.feed_description,
            site_description=self.site_description,
            hub_url=str(self.hub_url) if self.hub_url else None,
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def printable(text: str) -> str:
    """Names and categories end up in XML, YAML and file names: no control characters."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs") or char in "\ufffe\uffff":
            raise ValueError(f"{text!r} contains the control character {char!r}")
    return text


class _InvalidRule(ValueError):
    """A pattern of a source's ``rules:`` that cannot be used; ``rule`` names it as the
    config spells it (``exclude[1]``), so the error's field is ``rules.exclude[1]``."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__(message)


class _DuplicateId(ValueError):
    def __init__(self, index: int, source_id: str) -> None:
        self.index = index
        self.source_id = source_id
        super().__init__(f"duplicate source id {source_id!r}")


def resolve_config_path(
    cli_path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Path:
    """``--config PATH``, else ``$AGGREGATOR_CONFIG``, else ``config/aggregator.yaml``."""
    env = os.environ if environ is None else environ
    if cli_path:
        return Path(cli_path)
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR])
    return DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str]) -> Settings:
    """Read, validate and resolve a config file, or raise ConfigError."""
    file = Path(path)
    try:
        # the time first: an edit racing this read then looks newer than what was read,
        # and its own reload is applied (see ``Settings.config_version``)
        written_at = datetime.fromtimestamp(file.stat().st_mtime, UTC)
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(file)) from exc
    return parse_config(text, file).model_copy(update={"config_written_at": written_at})


def parse_config(text: str, file: Path) -> Settings:
    """Validate config text that came from ``file`` (used for messages and relative paths)."""
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader, C or Python
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", path=str(file)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping of keys", path=str(file))
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, raw, file) from None
    except _DuplicateId as exc:  # pragma: no cover - pydantic wraps it; kept for safety
        raise ConfigError(str(exc), path=str(file), source_id=exc.source_id, field="id") from None
    return _resolve_paths(settings, file)


def _config_error(exc: ValidationError, raw: dict[str, Any], file: Path) -> ConfigError:
    """Every validation problem, each named by source id and field; the first one is
    the error's structured ``source_id``/``field``."""
    problems = [_problem(error, raw) for error in exc.errors()]
    message, source_id, field = problems[0]
    for other_message, other_source, other_field in problems[1:]:
        where = [f"source {other_source!r}" if other_source else None,
                 f"field {other_field!r}" if other_field else None]
        message += "\n  also: " + ": ".join([w for w in where if w] + [other_message])
    return ConfigError(message, path=str(file), source_id=source_id, field=field)


def _problem(error: Any, raw: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(message, source id, field) of one pydantic error."""
    ctx_error = (error.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _DuplicateId):
        return str(ctx_error), ctx_error.source_id, f"sources[{ctx_error.index}].id"
    loc = list(error["loc"])
    source_id: str | None = None
    if loc and loc[0] == "sources" and len(loc) > 1 and isinstance(loc[1], int):
        index = loc[1]
        sources = raw.get("sources") or []
        entry = sources[index] if index < len(sources) else None
        has_id = isinstance(entry, dict) and entry.get("id")
        source_id = str(entry["id"]) if has_id else f"#{index + 1}"  # type: ignore[index]
        loc = loc[2:]
    if isinstance(ctx_error, _InvalidRule):  # raised in the rules block: loc ends there
        loc = [*loc[: loc.index("rules") + 1], ctx_error.rule] if "rules" in loc else loc
    field = ".".join(str(part) for part in loc) or None
    message = {"extra_forbidden": "unknown key", "missing": "required key is missing"}.get(
        error["type"], error["msg"]
    )
    return message.removeprefix("Value error, "), source_id, field


def _resolve_paths(settings: Settings, file: Path) -> Settings:
    base = file.resolve().parent
    output_dir = settings.output_dir
    if not output_dir.is_absolute():
        output_dir = base / output_dir
    image_cache_dir = settings.image_cache_dir
    if not image_cache_dir.is_absolute():
        image_cache_dir = base / image_cache_dir
    return settings.model_copy(
        update={
            "output_dir": output_dir,
            "image_cache_dir": image_cache_dir,
            "database_url": resolve_sqlite_url(settings.database_url, base),
            "config_path": file.resolve(),
        }
    )


def resolve_sqlite_url(url: str, base: Path) -> str:
    """Make a relative ``sqlite:///relative/path.db`` absolute against ``base``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = url[len(prefix) :]
    if not path or path.startswith(":memory:") or path.startswith("/"):
        return url
    query = ""
    if "?" in path:
        path, query = path.split("?", 1)
        query = "?" + query
    return prefix + str(base / path) + query
