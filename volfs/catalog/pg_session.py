"""One process's session with the metadata database: connecting, the schema, retries.

Owns the PostgreSQL connection that :class:`volfs.catalog.postgres.PgCatalog` runs its
statements on: made on first use (and again in a forked child), the schema created once
per process under an advisory lock, a broken connection re-made and the statement retried
once, and every failure turned into one :class:`BackendUnavailableError` line with the
password left out. Must not: know the catalog's tables beyond creating them.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from volfs.catalog.records import FORMAT_VERSION
from volfs.errors import BackendUnavailableError

log = logging.getLogger("volfs.catalog.postgres")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS volfs_volumes (
    id text PRIMARY KEY,
    environment text NOT NULL,
    name text NOT NULL,
    created_at double precision NOT NULL,
    created_by text NOT NULL,
    head text NOT NULL,
    format_version integer NOT NULL,
    UNIQUE (environment, name)
);
CREATE TABLE IF NOT EXISTS volfs_snapshots (
    id text PRIMARY KEY,
    volume_id text NOT NULL,
    parent text,
    time double precision NOT NULL,
    record text NOT NULL
);
CREATE INDEX IF NOT EXISTS volfs_snapshots_volume ON volfs_snapshots (volume_id, time);
CREATE TABLE IF NOT EXISTS volfs_settings (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS volfs_damaged (snapshot_id text PRIMARY KEY, record text NOT NULL);
CREATE TABLE IF NOT EXISTS volfs_pins (
    id text PRIMARY KEY,
    machine text NOT NULL,
    volume_id text NOT NULL,
    snapshot_id text NOT NULL,
    view_tree text,
    heartbeat timestamptz NOT NULL DEFAULT now()
);
"""
SCHEMA_LOCK = 0x766F6C6673  # "volfs": serialises concurrent CREATE TABLE IF NOT EXISTS


def redact(url: str) -> str:
    """The URL without its password (for messages and ``volfs store info``)."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class PgSession:
    """The shared connection of one process (thread-safe: one statement at a time)."""

    def __init__(self, meta_url: str, stats: dict[str, int]) -> None:
        self.meta_url = meta_url
        self.stats = stats
        self._conn: Any = None
        self._conn_pid = 0
        self._db_lock = threading.RLock()
        self._schema_ready = False

    def connect(self) -> Any:
        """A new connection, the schema made once per process."""
        import psycopg

        try:
            conn = psycopg.connect(
                self.meta_url,
                autocommit=True,
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=3,
                keepalives_count=3,
                application_name="volfs",
            )
        except psycopg.Error as exc:
            raise BackendUnavailableError(
                f"cannot reach the metadata database {redact(self.meta_url)}: {first_line(exc)}"
            ) from None
        if not self._schema_ready:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(SCHEMA)
                    # A database of format 1 volumes: this process writes format 2 trees into
                    # them from now on (format 1 trees keep decoding), so they are format 2.
                    conn.execute(
                        "UPDATE volfs_volumes SET format_version = %s WHERE format_version < %s",
                        (FORMAT_VERSION, FORMAT_VERSION),
                    )
            except psycopg.Error as exc:
                conn.close()
                raise BackendUnavailableError(
                    f"metadata database {redact(self.meta_url)}: cannot create the schema: {first_line(exc)}"
                ) from None
            self._schema_ready = True
        return conn

    def run(self, what: str, fn: Callable[[Any], T], *, retry: bool = True) -> T:
        """Runs ``fn(connection)``; a broken connection is re-made and ``fn`` retried once."""
        import psycopg

        with self._db_lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn_pid != os.getpid() or self._conn.closed:
                    self._conn = self.connect()
                    self._conn_pid = os.getpid()
                try:
                    return fn(self._conn)
                except psycopg.OperationalError as exc:
                    self.drop()
                    if attempt == 2 or not retry:
                        raise BackendUnavailableError(
                            f"metadata database {redact(self.meta_url)}: {what} failed: {first_line(exc)}"
                        ) from None
                    self.stats["db_reconnects"] += 1
                    log.warning(
                        "metadata database connection lost (%s); reconnecting", first_line(exc)
                    )
                except psycopg.Error as exc:
                    if isinstance(exc, psycopg.errors.UniqueViolation):
                        raise
                    raise BackendUnavailableError(
                        f"metadata database {redact(self.meta_url)}: {what} failed: {first_line(exc)}"
                    ) from None
        raise AssertionError("unreachable")

    def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # already broken: nothing to release
                log.debug("closing a broken connection: %s", exc)

    def rows(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.run(what, lambda conn: conn.execute(sql, params).fetchall())
