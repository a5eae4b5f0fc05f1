"""The schema's newest migration, as a plain constant.

Why a module of its own: ``engine`` (which imports SQLAlchemy) and ``quick`` (which must
not) both compare a database's ``alembic_version`` with it.  A test checks it is
Alembic's head; bump it with every new revision.
"""

HEAD_REVISION = "0007"
