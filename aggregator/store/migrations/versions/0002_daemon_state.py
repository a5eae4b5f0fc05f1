"""Daemon state on sources: next poll, 410 disabling, permanent-redirect tracking.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Once released this file must NOT change: a schema change is a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a table beyond adding columns; Alembic copies it
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("next_poll_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("disabled_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("redirect_target", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("redirect_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("moved_from", sa.Text(), nullable=True))
        batch.add_column(sa.Column("moved_to", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        for column in ("moved_to", "moved_from", "redirect_count", "redirect_target",
                       "disabled_reason", "next_poll_at"):
            batch.drop_column(column)
