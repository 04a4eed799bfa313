"""A mount that follows the head (``volfs mount --follow SECONDS``).

The daemon runs :meth:`Follower.run` in its nursery. It waits on the catalog's head watch
(``volfs.catalog.watch``: an LMDB read per interval on the embedded store, LISTEN/NOTIFY
on PostgreSQL), reads the head when the watch says it may have moved, and when the head
is not what the view holds, reloads with keep-open semantics: the daemon's own
``reload``, so the switch is one synchronous step (never a half-switched view) and open
files keep what they opened. At most one reload per interval: a burst of commits is one
reload at the end of the interval.

A writable follower with changes of its own: the reload commits them first, as ``volfs
reload`` does (they are never dropped, and the switch then shows everyone's changes). Its
own commits move the head to what the view already holds, which is no reason to reload.

A failed reload (the catalog unreachable, a commit refused) is logged and retried at the
next move or interval; it never ends the mount. No pyfuse3 here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from volfs.catalog import Catalog
from volfs.errors import VolfsError

log = logging.getLogger(__name__)


class Follower:
    def __init__(
        self,
        catalog: Catalog,
        volume_id: str,
        interval: float,
        synced: Callable[[], str],
        reload: Callable[[], Awaitable[Any]],
    ) -> None:
        self.catalog = catalog
        self.volume_id = volume_id
        self.interval = interval
        self._synced = synced
        self._reload = reload
        #: For ``volfs status``: what following cost (head reads are catalog queries in
        #: distributed mode; ``watch`` is the watch's own counters).
        self.stats: dict[str, Any] = {"head_reads": 0, "reloads": 0, "failures": 0}

    def _head(self) -> str:
        return self.catalog.get_volume_by_id(self.volume_id).head

    async def run(self) -> None:
        watch = await trio.to_thread.run_sync(self.catalog.watch_head, self.volume_id)
        self.stats["watch"] = watch.stats
        last_reload = -float("inf")
        try:
            while True:
                moved = await trio.to_thread.run_sync(
                    watch.wait, self.interval, abandon_on_cancel=True
                )
                if not moved:
                    continue
                try:
                    head = await trio.to_thread.run_sync(self._head)
                    self.stats["head_reads"] += 1
                    if head == self._synced():
                        continue
                    await trio.sleep(max(0.0, last_reload + self.interval - trio.current_time()))
                    last_reload = trio.current_time()
                    await self._reload()
                    self.stats["reloads"] += 1
                except VolfsError as exc:
                    self.stats["failures"] += 1
                    log.warning("following the head: %s (trying again)", exc)
                    await trio.sleep(self.interval)
        finally:
            watch.close()
