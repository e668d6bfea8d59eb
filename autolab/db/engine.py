"""Engines for the archive's database: one code path for SQLite and PostgreSQL.

SQLite runs in WAL mode with `synchronous=FULL`: a committed transaction survives a
`kill -9` of the process (and a power cut), and readers never wait for the writer. Its
transactions are begun explicitly, so a read sees one snapshot and a write takes the
write lock up front (`BEGIN IMMEDIATE`), waiting for another writer instead of failing.
PostgreSQL reads that must see one snapshot run at REPEATABLE READ.

The schema is made by the Alembic migrations in `migrations/`, run when an archive is
opened; two processes opening the same database at once migrate it one after the other.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

VERSION_TABLE = "autolab_alembic_version"  # not alembic_version: MLflow may share the database
MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_FILE = "archive.db"
MIGRATION_LOCK = 0x6175746F6C6162  # PostgreSQL advisory lock key held while migrating
POSTGRES_DRIVER = "psycopg"


class ArchiveError(RuntimeError):
    """The archive cannot be opened as asked; the message says why and what to do."""


def sqlite_url(path: Path) -> str:
    return URL.create("sqlite", database=str(Path(path).resolve())).render_as_string()


def parse_url(url: str) -> URL:
    """The URL as the archive uses it; ValueError, saying what is accepted, otherwise."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "not a database URL; expected postgresql://USER@HOST[:PORT]/DBNAME or "
            "sqlite:///PATH") from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername=f"postgresql+{POSTGRES_DRIVER}")
        elif parsed.get_driver_name() != POSTGRES_DRIVER:
            raise ValueError(f"driver {parsed.get_driver_name()!r} is not supported; use "
                             f"postgresql+{POSTGRES_DRIVER}:// (or plain postgresql://)")
        if not parsed.database:
            raise ValueError("names no database (postgresql://USER@HOST/DBNAME)")
        return parsed
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("an in-memory SQLite database keeps nothing; give a file "
                             "(sqlite:///PATH), or null for the campaign's own file")
        return parsed
    raise ValueError(f"database {backend!r} is not supported; use PostgreSQL "
                     "(postgresql://USER@HOST/DBNAME) or SQLite (null: a file in the campaign's "
                     "folder)")


def check_url(url: str) -> str:
    """Validate a configured URL, its driver included, before anything runs."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "postgresql" and importlib.util.find_spec("psycopg") is None:
        raise ValueError("needs the PostgreSQL driver, which is not installed: "
                         "pip install 'autolab[postgres]' (psycopg 3)")
    return url


SECRET_QUERY_KEYS = ("password", "sslpassword", "passfile")


def shown(url: str) -> str:
    """The URL with its password hidden, for messages and logs: the one after the user
    name and any given as a query parameter (?password=...)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<invalid URL>"
    hidden = {k: "***" for k in parsed.query if k.lower() in SECRET_QUERY_KEYS}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    parsed = parse_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" else None


def make_engine(url: str) -> Engine:
    parsed = parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, explicitly
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=60000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("archive_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed whole when the block ends, or not at all."""
    with engine.connect() as conn:
        conn.execution_options(archive_write=True)
        with conn.begin():
            yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """One read transaction that sees a single snapshot of the database."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def insert(engine: Engine | sa.Connection, table: sa.Table):
    """The dialect's INSERT, which has ON CONFLICT in both SQLite and PostgreSQL."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


def upsert(engine: Engine | sa.Connection, table: sa.Table, keys: list[str]):
    """INSERT ... ON CONFLICT (keys) DO UPDATE of every other column."""
    stmt = insert(engine, table)
    rest = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    return stmt.on_conflict_do_update(index_elements=keys, set_=rest)


def _alembic_config(connection: Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (creating it in an empty database)."""
    with reading(engine) as conn:
        if current_revision(conn) == head_revision():
            return
    from alembic import command

    with writing(engine) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        command.upgrade(_alembic_config(conn), "head")
