"""Alembic environment of the archive: run on the connection the archive hands over.

`autolab.db.engine.migrate` calls this inside its own transaction, holding the lock that
keeps two processes opening the same archive from migrating it at once.
"""

from __future__ import annotations

from alembic import context

from autolab.db.engine import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the archive's migrations run through autolab.db.engine.migrate, "
                       "which passes them a connection")
context.configure(connection=connection, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
