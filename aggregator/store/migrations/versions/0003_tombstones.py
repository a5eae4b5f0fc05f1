"""Tombstones: articles removed by retention, so a re-poll does not add them back.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Once released this file must NOT change: a schema change is a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tombstones",
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"],
                                name=op.f("fk_tombstones_source_id_sources"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("source_id", "key", name=op.f("pk_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("tombstones")
