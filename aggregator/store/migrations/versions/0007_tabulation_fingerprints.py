"""Fingerprints by tabulation hashing: ``stories.fingerprint`` now hashes each character
3-gram by simple tabulation instead of one BLAKE2b call per gram (3.5x cheaper, the
largest cost of a new article), so every stored fingerprint is a value of the old function
that no new one can be compared with.

Articles dated within ``STORY_WINDOW`` (3 days) of the upgrade — the ones a new article's
title and text can still meet — get their fingerprint recomputed from their stored content
(or summary), in chunks; older ones lose theirs (NULL), so like articles stored before 0006
they can still join a story by link but no longer by title and text.  Recomputing every
article would bound the upgrade by the size of the archive, not of the last days.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Once released this file must NOT change: a schema change is a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from aggregator.stories import text_fingerprint

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WINDOW = timedelta(days=3)  # the store's STORY_WINDOW when this revision was written
_CHUNK = 500


def upgrade() -> None:
    connection = op.get_bind()
    recent = (datetime.now(UTC) - _WINDOW).replace(tzinfo=None)  # stored naive UTC
    older = sa.text("UPDATE articles SET story_print = NULL "
                    "WHERE story_print IS NOT NULL AND date < :recent")
    connection.execute(older.bindparams(sa.bindparam("recent", type_=sa.DateTime())),
                       {"recent": recent})
    after = 0
    while True:
        rows = connection.execute(sa.text(
            "SELECT id, content, summary FROM articles WHERE story_print IS NOT NULL "
            "AND id > :after ORDER BY id LIMIT :chunk"), {"after": after, "chunk": _CHUNK}).all()
        if not rows:
            return
        connection.execute(sa.text("UPDATE articles SET story_print = :print WHERE id = :id"),
                           [{"id": row.id, "print": text_fingerprint(row.content, row.summary)}
                            for row in rows])
        after = rows[-1].id


def downgrade() -> None:
    # The old function's values cannot be recomputed here: no fingerprint is kept.
    op.execute("UPDATE articles SET story_print = NULL")
