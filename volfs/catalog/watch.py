"""Watching a volume's head: how a following mount (``volfs mount --follow``) learns of a
commit without asking the catalog every interval.

:class:`HeadWatch` is what each catalog's ``watch_head`` returns. ``wait(timeout)`` blocks
at most ``timeout`` seconds and says whether the head *may* have moved; the caller then
reads the head (one catalog read) and compares.

- Embedded (:class:`PollWatch`): the head record is an LMDB read (microseconds, no
  syscall past the mapped pages), so the watch only sleeps and says "maybe" each interval.
  Cheaper than inotify on ``catalog.mdb``, which fires on every write of any table
  (handles, mounts, leases) and would need the same read to tell a head move apart.
- Distributed (:class:`ListenWatch`): ``LISTEN volfs_head`` on a connection of its own;
  every head move ``NOTIFY``s the volume id in the transaction that moves it
  (``PgCatalog._swap_head``), so an idle follower sends no query at all. When the
  connection cannot be had or breaks, it falls back to polling (a "maybe" each interval)
  and tries to listen again every ``RELISTEN_SECONDS``; a (re)connection says "maybe"
  once, for a move it may have missed meanwhile.

``stats`` counts what each did (``waits``, ``notifications``, ``polls``, ``connects``).
Thread-safe enough for one waiting thread and a ``close`` from another.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: The NOTIFY channel of head moves; the payload is the volume id.
HEAD_CHANNEL = "volfs_head"
RELISTEN_SECONDS = 30.0


class HeadWatch(Protocol):
    stats: dict[str, int]

    def wait(self, timeout: float) -> bool:
        """Blocks at most ``timeout`` seconds; True if the head may have moved."""
        ...

    def close(self) -> None: ...


class PollWatch:
    """The embedded catalog's watch: a cheap read each interval (module docstring)."""

    def __init__(self) -> None:
        self.stats = {"waits": 0, "polls": 0}
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        self.stats["waits"] += 1
        if self._closed.wait(timeout):
            return False
        self.stats["polls"] += 1
        return True

    def close(self) -> None:
        self._closed.set()


class ListenWatch:
    """PostgreSQL LISTEN/NOTIFY, polling when it cannot listen (module docstring)."""

    def __init__(self, meta_url: str, volume_id: str) -> None:
        self.meta_url = meta_url
        self.volume_id = volume_id
        self.stats = {"waits": 0, "notifications": 0, "polls": 0, "connects": 0}
        self._conn: Any = None
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._closed = False

    def _listen(self) -> bool:
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
                application_name="volfs-follow",
            )
            conn.execute(f"LISTEN {HEAD_CHANNEL}")
        except psycopg.Error as exc:
            log.warning(
                "cannot listen for head moves (polling instead): %s", str(exc).strip()[:200]
            )
            self._retry_at = time.monotonic() + RELISTEN_SECONDS
            return False
        self._conn = conn
        self.stats["connects"] += 1
        return True

    def wait(self, timeout: float) -> bool:
        import psycopg

        self.stats["waits"] += 1
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return False
            if self._conn is None and time.monotonic() >= self._retry_at and self._listen():
                return True  # listening from now: a move before it would be missed
            conn = self._conn
        if conn is None:
            time.sleep(max(0.0, deadline - time.monotonic()))
            self.stats["polls"] += 1
            return True
        try:
            while (left := deadline - time.monotonic()) > 0:
                for note in conn.notifies(timeout=left, stop_after=1):
                    if note.payload == self.volume_id:
                        self.stats["notifications"] += 1
                        return True
            return False
        except psycopg.Error as exc:
            log.warning("listening for head moves: %s (polling instead)", str(exc).strip()[:200])
            with self._lock:
                self._drop()
                self._retry_at = time.monotonic() + RELISTEN_SECONDS
            return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # already broken: nothing to release
                log.debug("closing the listening connection: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()


__all__ = ["HEAD_CHANNEL", "HeadWatch", "ListenWatch", "PollWatch"]
