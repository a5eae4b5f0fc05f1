"""Fingerprints on demand, by tabulation hashing: ``stories.fingerprint`` now hashes each
character 3-gram by simple tabulation instead of one BLAKE2b call per gram, so every stored
fingerprint is a value of the old function that no new one can be compared with; and the
store now derives a fingerprint only when a story match needs it (another source's article
with the same title), NULL meaning "not derived yet".  So every stored one is dropped: the
store derives it again from the article's content the first time a match needs it, which
keeps the upgrade instant whatever the size of the archive.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Once released this file must NOT change: a schema change is a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE articles SET story_print = NULL WHERE story_print IS NOT NULL")


def downgrade() -> None:
    # 0006 read NULL as "no fingerprint": its articles join stories by link alone until
    # their fingerprints are derived again.
    op.execute("UPDATE articles SET story_print = NULL WHERE story_print IS NOT NULL")
