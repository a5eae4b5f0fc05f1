"""Sources: since when the config no longer lists one (forgotten after a grace period), and
the warnings of the last parsed document (shown by ``aggregator status``).

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


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("last_warnings")
        batch.drop_column("unlisted_since")
