"""Stories: the keys that say which articles of different sources are one story (canonical
link, folded title, content SimHash) and the story each article belongs to.  Existing
articles become stories of their own (``story_id`` = their id) without keys, so nothing
already stored is merged after the upgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Once released this file must NOT change: a schema change is a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("story_link", sa.Text(), nullable=True))
        batch.add_column(sa.Column("story_title", sa.Text(), nullable=True))
        batch.add_column(sa.Column("story_print", sa.Text(), nullable=True))
        batch.add_column(sa.Column("story_id", sa.Integer(), nullable=True))
    op.execute("UPDATE articles SET story_id = id")
    op.create_index(op.f("ix_articles_story_link"), "articles", ["story_link"])
    op.create_index(op.f("ix_articles_story_title"), "articles", ["story_title"])
    op.create_index(op.f("ix_articles_story_id"), "articles", ["story_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_articles_story_id"), table_name="articles")
    op.drop_index(op.f("ix_articles_story_title"), table_name="articles")
    op.drop_index(op.f("ix_articles_story_link"), table_name="articles")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("story_id")
        batch.drop_column("story_print")
        batch.drop_column("story_title")
        batch.drop_column("story_link")
