"""The database schema, as SQLAlchemy ORM models.

Why: one declared schema serves three readers — the store's queries, Alembic's
autogenerate (``alembic revision --autogenerate`` diffs the migrations against
this metadata) and the test that the shipped migrations match it.

Five tables:

* ``sources`` — one row per polled feed: cache validators, body hash and the
  outcome of the last poll;
* ``articles`` — one row per (source, key), the stored form of ``records.Article``;
* ``article_categories`` — an article's categories in order, one row each, so
  per-category queries are plain indexed joins on every backend;
* ``tombstones`` — (source, key) of articles that retention removed while the portal
  may still list them, so that a re-poll does not add them back as new;
* ``config_generations`` — each config whose sources were applied to ``sources``; the
  newest is the one a process's config is compared with.

Datetimes are stored as naive UTC (``UTCDateTime``) and come back aware UTC.

This module must NOT open connections, run queries or leak its row classes out
of ``aggregator.store``: callers only ever see the records in ``aggregator.records``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: future migrations (including SQLite batch
# migrations, which recreate tables) need names to drop or alter constraints.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored as naive UTC so that every backend agrees.

    Naive datetimes are refused (they would be stored as whatever local time
    they meant); values read back always carry ``tzinfo=UTC``.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # every record's datetimes (rules.as_utc)
            return value.replace(tzinfo=None)
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} (expected timezone-aware)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:  # a backend that hands back aware values
            return value.astimezone(UTC)
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SourceRow(Base):
    """What the store remembers about polling one source."""

    __tablename__ = "sources"
    __table_args__ = (Index("ix_sources_next_poll_at", "next_poll_at"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    body_hash: Mapped[str | None] = mapped_column(Text)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_result: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    error_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # daemon state (migration 0002)
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(Text)  # 410 Gone: stop polling
    redirect_target: Mapped[str | None] = mapped_column(Text)  # 301/308 seen on the last polls
    redirect_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    moved_from: Mapped[str | None] = mapped_column(Text)  # configured URL that moved...
    moved_to: Mapped[str | None] = mapped_column(Text)  # ...and where it is polled now
    # since when the config no longer lists the source (migration 0004); its articles
    # leave the outputs at once and the database after a grace period
    unlisted_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_warnings: Mapped[str | None] = mapped_column(Text)  # of the last parsed document
    # the lease of the worker polling the source now, and the fencing token its commit must
    # still find on the row (every claim bumps it)
    lease_token: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                             server_default="0")
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(Text)


class ArticleRow(Base):
    """One stored article; identity is (source_id, key)."""

    __tablename__ = "articles"
    __table_args__ = (
        UniqueConstraint("source_id", "key"),
        Index("ix_articles_date", "date"),
        Index("ix_articles_story_link", "story_link"),
        Index("ix_articles_story_title", "story_title"),
        Index("ix_articles_story_id", "story_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(
        Text, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False
    )
    key: Mapped[str] = mapped_column(Text, nullable=False)
    guid: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    author: Mapped[str] = mapped_column(Text, nullable=False)
    date: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    date_from_feed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    summary: Mapped[str] = mapped_column(Text, nullable=False)
    headimg: Mapped[str | None] = mapped_column(Text)
    thumbnail: Mapped[str | None] = mapped_column(Text)
    comments: Mapped[bool] = mapped_column(Boolean, nullable=False)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    # One story, many portals (migration 0006): the keys ``stories.same_story`` compares
    # (``Article.story_link`` / ``story_title`` / ``story_print``) and the story the store
    # assigned: the id of the story's first stored article.  Rows stored before 0006 have
    # no keys (never matched) and are each their own story.  ``story_print`` is NULL until
    # a story match derives it (0007 dropped every stored one: a new hash function).
    story_link: Mapped[str | None] = mapped_column(Text)
    story_title: Mapped[str | None] = mapped_column(Text)
    story_print: Mapped[str | None] = mapped_column(Text)
    story_id: Mapped[int | None] = mapped_column(Integer)

    # Loaded explicitly (selectinload) by the read paths; lazy elsewhere, so that
    # checking a batch's existing rows does not fetch categories it never needs.
    categories: Mapped[list[CategoryRow]] = relationship(
        order_by="CategoryRow.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class CategoryRow(Base):
    """One of an article's categories; ``position`` keeps the feed's order."""

    __tablename__ = "article_categories"
    __table_args__ = (
        PrimaryKeyConstraint("article_id", "position"),
        Index("ix_article_categories_category", "category"),
    )

    article_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("articles.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    category: Mapped[str] = mapped_column(Text, nullable=False)


class TombstoneRow(Base):
    """An article retention removed; forgotten once the portal stops listing its key."""

    __tablename__ = "tombstones"
    __table_args__ = (PrimaryKeyConstraint("source_id", "key"),)

    source_id: Mapped[str] = mapped_column(
        Text, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False
    )
    key: Mapped[str] = mapped_column(Text, nullable=False)
    removed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ConfigGenerationRow(Base):
    """One config applied to the sources table (``Store.apply_config``); the newest wins."""

    __tablename__ = "config_generations"

    generation: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    digest: Mapped[str] = mapped_column(Text, nullable=False)
    written_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    applied_by: Mapped[str] = mapped_column(Text, nullable=False)
