"""Alembic environment for the store's schema.

Why: ``Store.open`` runs ``upgrade head`` programmatically, handing its own
connection (already inside a ``BEGIN IMMEDIATE`` transaction on SQLite) through
``config.attributes["connection"]``; developers run the ``alembic`` command with
the repo's ``alembic.ini`` (``alembic revision --autogenerate``), and then this
module connects by itself to ``-x url=...`` or the ini's ``sqlalchemy.url``.

This module must NOT open or commit its own transaction around a connection it
was given (the caller owns it), configure logging for programmatic runs, or
import anything of the project beyond ``aggregator.store``.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from aggregator.store import make_engine
from aggregator.store.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render the store's own column types as plain SQLAlchemy ones in migrations.

    Migrations stay frozen and importable even if ``models`` changes later.
    """
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def _options() -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_item": render_item,
        "render_as_batch": True,  # SQLite can only ALTER by copying the table
        "compare_type": True,
    }


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    return url or config.get_main_option("sqlalchemy.url") or ""


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options())
    # Inside a caller's transaction this is a no-op; alone it is the migration's transaction.
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"},
                      **_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    if config.config_file_name is not None and config.attributes.get("configure_logger", True):
        from logging.config import fileConfig

        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
