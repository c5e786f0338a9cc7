"""Connecting to the store: one SQLAlchemy engine per process, short transactions."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    """PaaS hosts hand out `postgres://` URLs; SQLAlchemy wants a driver named (psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Database:
    def __init__(self, url: str, pool_size: int = 10):
        self.url = normalize_url(url)
        if self.url.startswith("sqlite"):
            ensure_sqlite_directory(self.url)
            # One file shared by every process. Transactions take the write lock when they begin
            # (BEGIN IMMEDIATE), so the busy timeout applies: a deferred transaction that reads,
            # then writes after another process wrote, would fail at once with SQLITE_BUSY.
            self.engine: Engine = create_engine(self.url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        else:
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=pool_size,
                                        pool_pre_ping=True, pool_timeout=10)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits at the end of the block, or rolls back on an exception."""
        with self._sessions.begin() as session:
            yield session

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A Core connection in a transaction: for the per-request statements, where the ORM's
        unit of work would cost more CPU than the SQL itself."""
        with self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def ensure_sqlite_directory(url: str) -> None:
    """SQLite creates the file on first use, but not the folder it goes in."""
    path = url.split(":///", 1)[-1]
    if url.startswith("sqlite") and path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_connect(connection, _record) -> None:
    connection.isolation_level = None  # the driver's own BEGIN off: ours is emitted on "begin"
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def upgrade(url: str) -> None:
    """Bring the schema up to date (the Procfile's release step runs this)."""
    from alembic import command
    from alembic.config import Config

    ensure_sqlite_directory(normalize_url(url))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    command.upgrade(config, "head")
