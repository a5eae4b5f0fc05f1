"""Sources: since when the config no longer lists one (forgotten after a grace period), the
warnings of the last parsed document (shown by ``aggregator status``), and the lease a
worker holds while it polls one (fenced by a token), with the due-time index claims use.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Once released this file must NOT change: a schema change is a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("unlisted_since", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("last_warnings", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("lease_token", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("leased_until", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("leased_by", sa.Text(), nullable=True))
    op.create_index("ix_sources_next_poll_at", "sources", ["next_poll_at"])


def downgrade() -> None:
    op.drop_index("ix_sources_next_poll_at", table_name="sources")
    with op.batch_alter_table("sources") as batch:
        for column in ("leased_by", "leased_until", "lease_token"):
            batch.drop_column(column)
        batch.drop_column("last_warnings")
        batch.drop_column("unlisted_since")
