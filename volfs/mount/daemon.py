"""The mount daemon: one process per mount, pyfuse3 + trio, and its whole lifecycle.

``run_daemon`` mounts a volume and serves it until it is told to stop (``volfs unmount``,
SIGTERM, SIGINT, or someone unmounting the path), then makes a final commit and exits.
Starting one in the background and waiting for it is ``launcher.py``'s job.

Tasks in the root nursery: the FUSE loop, the control socket, background commits and
the signal handler. Commit and reload hold one lock, so they never overlap; the slow
parts (hashing, LMDB writes, kernel cache invalidation) run in worker threads.

The daemon holds an exclusive ``flock`` on ``<overlay>/lock`` for its lifetime: when the
process dies, however it dies, the kernel drops the lock and ``volfs recover`` knows the
overlay is orphaned.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import resource
import shutil
import signal
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyfuse3
import trio

from volfs import control
from volfs.catalog import Catalog, MountId, MountRecord, SnapshotRecord, new_id
from volfs.config import max_nodes
from volfs.core.tree import Entry, Kind
from volfs.errors import (
    ConflictError,
    InvalidError,
    MountError,
    NotADirectoryPathError,
    NotFoundError,
    OpenFilesError,
    VolfsError,
)
from volfs.mount import logs
from volfs.mount import metrics as prometheus
from volfs.mount.diagnose import why_fuse_cannot_mount
from volfs.mount.follow import Follower
from volfs.mount.fs import VolfsOperations
from volfs.mount.inodes import ROOT_INO, Node
from volfs.mount.overlay import HashResult, Invalidation, Overlay
from volfs.mount.scratch import chunk_span
from volfs.mount.stats import MountStats
from volfs.names import split_path
from volfs.remote import store_identity
from volfs.store import Store

log = logging.getLogger("volfs.mount.daemon")
FINAL_COMMIT_ATTEMPTS = 3
READ_AHEAD_KB = 1024
DIRTY_MAX_RATIO = 100
HANDLE_SYNC_SECONDS = 0.25
PROTECTED_PREFIXES = ("/proc", "/sys", "/dev")


@dataclass
class MountOptions:
    store: str | None
    name: str
    environment: str
    path: str
    read_only: bool = False
    snapshot: str | None = None
    autocommit: float = 5.0
    #: Serve this directory of the volume as the mount's root (Modal's
    #: ``with_mount_options(sub_path=…)``); it must exist. None: the whole volume.
    sub_path: str | None = None
    #: Mount over a directory that has entries (hiding them while mounted), as asked.
    nonempty: bool = False
    #: Serve Prometheus /metrics at HOST:PORT (metrics.py); None: the store's default, if any.
    metrics: str | None = None
    metrics_public: bool = False
    log_level: str = "INFO"
    #: Set by the launcher, which names the log file after it before the daemon starts.
    mount_id: str | None = None
    #: Log to this file, rotated (logs.py); None: to stderr (--foreground).
    log_file: str | None = None
    #: ``reload`` keeps open files by default (``volfs mount --keep-open``; orphans.py).
    keep_open: bool = False
    #: Reload (keeping open files) when the head moves, checked this often (``follow.py``).
    follow: float | None = None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"pid {pid}"


def processes_with_cwd_inside(path: str, exclude: set[int]) -> list[int]:
    inside = []
    prefix = path.rstrip("/") + "/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == path or cwd.startswith(prefix):
            inside.append(int(entry))
    return inside


class MountDaemon:
    def __init__(self, options: MountOptions) -> None:
        self.options = options
        self.store = Store.open(options.store)
        self.metrics_address, self._metrics_search = self._metrics_config()
        catalog = self.store.catalog
        self.volume = catalog.get_volume(options.environment, options.name)
        if options.snapshot:
            base = catalog.get_snapshot(options.snapshot)
            if base.volume_id != self.volume.id:
                raise InvalidError(
                    f"snapshot {options.snapshot} does not belong to volume {options.name!r}"
                )
        else:
            base = catalog.head(self.volume.id)
        self.read_only = options.read_only or bool(options.snapshot)
        # Checked before anything is created: a refused mount leaves no overlay behind.
        self.sub_path = _check_sub_path(catalog, base.root, options.sub_path, self.volume.name)
        node_cap = max_nodes()
        self.mountpoint = os.path.realpath(options.path)
        self.mount_id = MountId(options.mount_id or new_id("mo"))
        self.overlay_dir = self.store.overlays_dir / self.mount_id
        self.overlay_dir.mkdir(mode=0o700)
        self._lock_fd = os.open(
            self.overlay_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.socket_path = self.store.run_dir / f"{self.mount_id}.sock"
        self.record = MountRecord(
            self.mount_id,
            self.volume.id,
            self.volume.name,
            self.volume.environment,
            self.mountpoint,
            os.getpid(),
            os.getuid(),
            base.id,
            self.read_only,
            str(self.socket_path),
            str(self.overlay_dir),
            time.time(),
        )
        (self.overlay_dir / "mount.json").write_text(json.dumps(self.record.__dict__))
        self.overlay = Overlay(
            self.store, self.volume, base, self.overlay_dir, read_only=self.read_only
        )
        root_ino = self._sub_root()
        control_info = json.dumps(
            {
                "socket": str(self.socket_path),
                "mount_id": self.mount_id,
                "volume_id": self.volume.id,
                "volume_name": self.volume.name,
                "environment": self.volume.environment,
                "pid": os.getpid(),
                # Whose mount this is: a plain `volfs commit` acts on its own store's only.
                "store": store_identity(self.store.root),
                "sub_path": self.sub_path,
            }
        ).encode()
        self.stats = MountStats()
        self.ops = VolfsOperations(
            self.overlay,
            control_info=control_info,
            on_open=self._opened,
            on_release=self._released,
            root_ino=root_ino,
            stats=self.stats,
            node_cap=node_cap,
        )
        self._metrics: prometheus.MetricsServer | None = None
        self._opens: dict[int, tuple[int, str, bool]] = {}
        self._handles_changed = False
        self._handles_failing = False
        self._lock = trio.Lock()
        self._stop = trio.Event()
        self._discard = False
        self._mounted = False
        self.final_result: dict[str, Any] | None = None
        self._finished = trio.Event()
        #: The newest snapshot whose content the view holds in full: the base, or this
        #: mount's own commit when it landed directly on it. ``status`` compares it with head.
        self._synced: str = base.id
        self.follower: Follower | None = None
        if options.follow is not None:
            self.follower = Follower(
                catalog,
                self.volume.id,
                options.follow,
                lambda: self._synced,
                lambda: self.reload(None, keep_open=True),
            )

    def _sub_root(self) -> int:
        """The view inode the mount serves as its root: the volume's root, or the sub-path's
        directory, pinned (one lookup the kernel never forgets) so the view keeps its node
        whatever a reload does to it."""
        if self.sub_path is None:
            return ROOT_INO
        node = self.overlay.resolve(self.sub_path)  # _check_sub_path saw it in this base
        self.overlay.table.looked_up(node)
        return node.ino

    # -- open handles ---------------------------------------------------------------------------
    # Kept in memory for reload and status, and mirrored to the catalog's runtime table
    # (LMDB) for outside observers at most HANDLE_SYNC_SECONDS late: one transaction per
    # open and per release cost ~7% of a small-file create.
    def _opened(self, fh: int, node: Node, pid: int, write: bool) -> None:
        self._opens[fh] = (pid, self.overlay.path_of(node) or "(deleted)", write)
        self._handles_changed = True

    def _released(self, fh: int) -> None:
        self._opens.pop(fh, None)
        self._handles_changed = True

    async def _sync_handles(self) -> None:
        while True:
            await trio.sleep(HANDLE_SYNC_SECONDS)
            if self._handles_changed:
                self._handles_changed = False
                rows = {
                    fh: {"path": path, "pid": pid, "write": write}
                    for fh, (pid, path, write) in self._opens.items()
                }
                try:
                    self.store.catalog.set_handles(self.mount_id, rows)
                except Exception as exc:  # lmdb's DiskError on a full disk, say
                    # Only a mirror for observers: it must never end the mount. Retried.
                    self._handles_changed = True
                    if not self._handles_failing:
                        log.warning(
                            "recording the open files of %s failed (retrying): %s",
                            self.mountpoint,
                            exc,
                        )
                    self._handles_failing = True
                else:
                    self._handles_failing = False

    def _check_nothing_open(self, requester: int | None) -> None:
        prefix = "there are open files preventing the operation"
        for pid, path, _ in self._opens.values():
            if pid == requester:
                raise OpenFilesError(f"{prefix}: path {path} is open")
            raise OpenFilesError(f"{prefix}: path {path} is open from '{_cmdline(pid)}'")
        inside = processes_with_cwd_inside(self.mountpoint, {os.getpid()})
        for pid in inside:
            if pid == requester:
                raise OpenFilesError(f"{prefix}: cwd is inside volume")
            raise OpenFilesError(f"{prefix}: cwd of '{_cmdline(pid)}' is inside volume")

    # -- commit and reload ---------------------------------------------------------------------------
    async def commit(
        self,
        *,
        if_unchanged: bool = False,
        origin: str | None = None,
        skip_writing: bool = False,
    ) -> dict[str, Any]:
        async with self._lock:
            return await self._commit_locked(
                if_unchanged=if_unchanged, origin=origin, skip_writing=skip_writing
            )

    async def _commit_locked(
        self,
        *,
        if_unchanged: bool = False,
        origin: str | None = None,
        skip_writing: bool = False,
    ) -> dict[str, Any]:
        """One commit, counted (stats.py) and logged."""
        start = time.monotonic()
        try:
            result = await self._commit_once(
                if_unchanged=if_unchanged, origin=origin, skip_writing=skip_writing
            )
        except BaseException as exc:
            self.stats.commit_finished(time.monotonic() - start, error=str(exc) or repr(exc))
            raise
        seconds = time.monotonic() - start
        files, size = result.get("files_hashed", 0), result.get("bytes_hashed", 0)
        overwrites = len(result.get("overwrites") or ())
        self.stats.commit_finished(
            seconds, snapshot=result["snapshot"], files=files, size=size, overwrites=overwrites
        )
        if result["snapshot"]:
            log.info(
                "commit %s: %d files, %d bytes, %d overwrites, %.3f s",
                result["snapshot"],
                files,
                size,
                overwrites,
                seconds,
            )
        return result

    async def _commit_once(
        self,
        *,
        if_unchanged: bool = False,
        origin: str | None = None,
        skip_writing: bool = False,
    ) -> dict[str, Any]:
        overlay = self.overlay
        if self._mounted and not self.read_only and self.ops.enable_writeback_cache:
            # Written data the kernel still caches reaches us as WRITE requests, which this
            # loop serves while the worker thread waits in syncfs.
            try:
                await trio.to_thread.run_sync(syncfs, self.mountpoint)
            except OSError as exc:
                # A cached write we could not take (the store's disk was full, say) already
                # failed for its writer, at close or fsync; the commit goes on with what
                # reached us, as for a file still open. Not an "internal error" of the commit.
                log.warning(
                    "flushing cached writes of %s before a commit: %s", self.mountpoint, exc
                )
        # Files written through descriptors a keep-open reload left open go back to their
        # paths first (orphans.py); the kernel forgets those names after the commit.
        adopted = [Invalidation(p, n) for p, n in overlay.adopt_orphans()]
        if self.read_only or not overlay.dirty:
            return {"snapshot": None, "committed": False}
        jobs = overlay.prepare_commit(skip_writing=skip_writing)
        written = sum(chunk_span(j.size, index) for j in jobs for index, _, _ in j.segments)
        catalog = self.store.catalog
        # A lease from the first blob to the head move (and the mount's pin naming the new
        # view): gc keeps what it wrote or reused. Taken in the worker thread: in distributed
        # mode it may wait for a running gc, which must not stall the FUSE loop.
        lease = catalog.lease(f"commit of mount {self.mount_id}")

        held: list[bool] = []

        def hash_files() -> dict[int, HashResult]:
            lease.__enter__()
            held.append(True)
            return overlay.hash_files(jobs)

        def release(view: Entry | None) -> None:
            try:
                if view is not None:
                    catalog.mount_committed(self.mount_id, overlay.base_snapshot, view.tree)
            finally:
                lease.__exit__(None, None, None)

        view = None
        try:
            results = await trio.to_thread.run_sync(hash_files)
            pending = overlay.build_view(results, skip_writing=skip_writing)
            origin = origin or f"mount {self.mount_id} pid {os.getpid()} {self.mountpoint}"
            result = await trio.to_thread.run_sync(
                partial(overlay.publish, pending, if_unchanged=if_unchanged, origin=origin)
            )
            overlay.finish_commit(pending)
            view = overlay.committed_view
            if result.snapshot is not None and result.parent == self._synced:
                self._synced = result.snapshot
        finally:
            if held:
                with trio.CancelScope(shield=True):  # a lease must never be left held
                    await trio.to_thread.run_sync(release, view)
            if adopted and self._mounted:
                await trio.to_thread.run_sync(self._invalidate, adopted)
        if result.overwrites:
            log.info(
                "commit %s overwrote changes made by others: %s", result.snapshot, result.overwrites
            )
        return {
            "snapshot": result.snapshot,
            "committed": result.committed,
            "trees_written": result.trees_written,
            "overwrites": result.overwrites,
            #: The head this commit merged onto: it holds the versions it overwrote.
            "previous": result.parent,
            "files_hashed": len(jobs),
            "bytes_hashed": written,
            #: Merges it took: more than 1 when a writer without a head turn moved the head.
            "attempts": result.attempts,
        }

    async def reload(
        self, requester: int | None = None, keep_open: bool | None = None
    ) -> dict[str, Any]:
        """One reload, counted (stats.py) and logged."""
        try:
            result = await self._reload_once(requester, keep_open)
        except (OpenFilesError, ConflictError) as exc:
            self.stats.reload_finished("refused")
            log.info("reload refused: %s", exc)
            raise
        except BaseException:
            self.stats.reload_finished("failed")
            raise
        self.stats.reload_finished("ok")
        log.info(
            "reload to %s (%d cache entries invalidated)", result["snapshot"], result["invalidated"]
        )
        return result

    async def _reload_once(
        self, requester: int | None = None, keep_open: bool | None = None
    ) -> dict[str, Any]:
        """Commits, then switches to the head. Refused while a file is open or a cwd is
        inside (Modal's "volume busy"), unless ``keep_open`` (None: the mount's option):
        then open files keep what they opened (orphans.py)."""
        if keep_open is None:
            keep_open = self.options.keep_open
        async with self._lock:
            if not keep_open:
                await trio.to_thread.run_sync(self._check_nothing_open, requester)
            committed: dict[str, Any] = {"snapshot": None}
            for _ in range(10):
                if self.overlay.dirty:
                    committed = await self._commit_locked()
                head = await trio.to_thread.run_sync(self.store.catalog.head, self.volume.id)
                # No await from here to the rebase: the view is checked and switched at once.
                if self.overlay.dirty and not (keep_open and self.overlay.content_only_dirty()):
                    continue
                if not keep_open:
                    self._check_open_handles_only(requester)
                if self.sub_path is not None:
                    self._check_sub_path_kept(head)
                invalidations = self.overlay.rebase(head, keep_open=keep_open)
                self.store.catalog.set_mount_base(self.mount_id, head.id)  # gc keeps a mount's base
                self._synced = head.id
                break
            else:
                raise ConflictError("reload gave up: the mount keeps changing")
        await trio.to_thread.run_sync(self._invalidate, self._kernel_side(invalidations))
        return {
            "snapshot": head.id,
            "committed": committed.get("snapshot"),
            "invalidated": len(invalidations),
        }

    def _check_sub_path_kept(self, head: SnapshotRecord) -> None:
        """Refuses a reload onto a head without the sub-path: the mount's root would be left
        detached, and what is written there would never be committed."""
        try:
            _check_sub_path(self.store.catalog, head.root, self.sub_path, self.volume.name)
        except (NotFoundError, NotADirectoryPathError) as exc:
            raise ConflictError(
                f"reload refused: {exc} in its newest version (it was removed or replaced); "
                "unmount this mount"
            ) from None

    def _check_open_handles_only(self, requester: int | None) -> None:
        if self._opens:
            pid, path, _ = next(iter(self._opens.values()))
            suffix = "" if pid == requester else f" from '{_cmdline(pid)}'"
            raise OpenFilesError(
                f"there are open files preventing the operation: path {path} is open{suffix}"
            )

    def _kernel_side(self, invalidations: list[Invalidation]) -> list[Invalidation]:
        """The invalidations in the kernel's inode numbers (a sub-path mount's root is the
        kernel's root; the view's own root, above it, the kernel never saw)."""
        out = []
        for inval in invalidations:
            if inval.ino == ROOT_INO and self.ops.kernel_ino(ROOT_INO) != ROOT_INO:
                continue
            out.append(Invalidation(self.ops.kernel_ino(inval.ino), inval.name, inval.attr_only))
        return out

    @staticmethod
    def _invalidate(invalidations: list[Invalidation]) -> None:
        for inval in invalidations:
            try:
                if inval.name is None:
                    pyfuse3.invalidate_inode(inval.ino, attr_only=inval.attr_only)
                else:
                    pyfuse3.invalidate_entry(inval.ino, os.fsencode(inval.name))
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    log.warning("invalidating %s failed: %s", inval, exc)

    def status(self) -> dict[str, Any]:
        return {
            "mount_id": self.mount_id,
            "volume": self.volume.name,
            "volume_id": self.volume.id,
            "environment": self.volume.environment,
            "path": self.mountpoint,
            "pid": os.getpid(),
            "base_snapshot": self.overlay.base_snapshot,
            "read_only": self.read_only,
            "dirty_paths": self.overlay.dirty_paths(),
            "open_files": sorted({p for _, p, _ in self._opens.values()}),
            "autocommit": self.options.autocommit,
            "sub_path": self.sub_path,
            "store": str(self.store.root),
            "metrics": str(self._metrics.address) if self._metrics is not None else None,
            "log": self.options.log_file,
            "stats": self.stats_now(),
            **({"follow": self.follower.stats} if self.follower is not None else {}),
            # What the mount holds in memory: the nodes of its inode table (tests read it).
            "nodes": len(self.overlay.table),
            "catalog": dict(self.store.catalog.stats),
        }

    # -- statistics -----------------------------------------------------------------------------
    def gauges(self) -> dict[str, float]:
        """What the mount holds now (any thread: see Namespace.dirty_content)."""
        files, size = self.overlay.dirty_content()
        return {
            "overlay_dirty_files": files,
            "overlay_dirty_bytes": size,
            "open_handles": len(self._opens),
        }

    def stats_now(self) -> dict[str, Any]:
        """The counters (``status``, and the ``stats`` request ``volfs stats`` polls)."""
        out = self.stats.snapshot()
        out.update(self.gauges())
        if not self.store.blobs.reads_are_local:
            blobs = dict(self.store.blobs.stats)
            out["blob_cache"] = {
                k: blobs.get(k, 0) for k in ("cache_hits", "cache_misses", "bytes_fetched")
            }
        return out

    def _metrics_config(self) -> tuple[prometheus.Address | None, int]:
        """Where to serve /metrics: --metrics, else the store's default (whose port, shared
        by the store's mounts, may be taken: the next ones are tried)."""
        text, public, search = self.options.metrics, self.options.metrics_public, 0
        if text is None:
            text, public = prometheus.store_default(self.store.root)
            search = prometheus.PORT_SEARCH
        if not text or text == "off":
            return None, 0
        return prometheus.parse_address(text, public=public), search

    def _start_metrics(self) -> None:
        if self.metrics_address is None:
            return
        collector = prometheus.MountCollector(
            self.stats,
            {"volume": self.volume.name, "mount": self.mount_id},
            self.gauges,
            None if self.store.blobs.reads_are_local else self.store.blobs.stats,
        )
        self._metrics = prometheus.serve(
            collector, self.metrics_address, search=self._metrics_search
        )
        log.info("serving metrics at http://%s/metrics", self._metrics.address)

    def _stop_metrics(self) -> None:
        if self._metrics is not None:
            server, self._metrics = self._metrics, None
            server.close()

    def _head_id(self) -> str | None:
        """The volume's current head, or None if it cannot be read now (status still answers)."""
        try:
            return self.store.catalog.get_volume_by_id(self.volume.id).head
        except VolfsError as exc:
            log.warning("status: cannot read the head of %s: %s", self.volume.name, exc)
            return None

    # -- control requests ------------------------------------------------------------------------------
    async def handle(self, request: dict[str, Any], peer: control.Peer) -> dict[str, Any]:
        op = request["op"]
        if op == "ping":
            return {"pong": True}
        if op == "status":
            status = self.status()
            head = await trio.to_thread.run_sync(self._head_id)  # one query in distributed mode
            status["head"] = head
            status["behind"] = head is not None and head != self._synced
            return status
        if op == "stats":
            return self.stats_now()
        if op == "commit":
            return await self.commit(if_unchanged=_field(request, "if_unchanged", bool, False))
        if op == "reload":
            keep_open = request.get("keep_open")
            return await self.reload(
                _field(request, "pid", int, peer.pid),
                None if keep_open is None else _field(request, "keep_open", bool, False),
            )
        if op == "unmount":
            # Every field checked before anything happens: "discard": "false" must not discard.
            force, pid = (
                _field(request, "force", bool, False),
                _field(request, "pid", int, peer.pid),
            )
            discard = _field(request, "discard", bool, False)
            if not force:
                await trio.to_thread.run_sync(self._check_nothing_open, pid)
            self._discard = discard
            first: dict[str, Any] = {}
            if not self._discard:
                try:
                    first = await self.commit()
                except NotFoundError:
                    if not await trio.to_thread.run_sync(self._volume_gone):
                        raise
                    self._discard = True  # nothing left to commit to (volume delete --force)
            self._stop.set()
            await self._finished.wait()
            result = dict(self.final_result or {})
            if not result.get("snapshot") and first.get("snapshot"):
                result["snapshot"] = first["snapshot"]  # the final commit found nothing left
            return result
        raise InvalidError(f"unknown control operation {op!r}")

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def _fuse_main(self) -> None:
        try:
            # Handlers never await but for chunk verification of cold reads; a few tasks let
            # other requests through meanwhile.
            await pyfuse3.main(min_tasks=1, max_tasks=8)
        finally:
            self._stop.set()

    async def _autocommit(self) -> None:
        if self.options.autocommit <= 0 or self.read_only:
            return
        while True:
            await trio.sleep(self.options.autocommit)
            try:
                # Files still being written wait for their close (a half-written
                # checkpoint must not be what a reader reloads); an explicit commit takes them.
                await self.commit(
                    origin=f"autocommit {self.mount_id} {self.mountpoint}", skip_writing=True
                )
            except VolfsError as exc:
                log.error("background commit failed (will retry): %s", exc)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    continue
                if self._stop.is_set():
                    log.info("received %s: already stopping", signal.Signals(signum).name)
                    continue
                log.info("received %s: committing and unmounting", signal.Signals(signum).name)
                self._stop.set()

    def _tune_bdi(self) -> None:
        """The mount's backing-device info, tuned for streaming:

        - read-ahead 1 MiB instead of 128 KiB: cold sequential reads reach disk speed;
        - the share of the dirty-page limit this mount may use, 1% -> 100%: the kernel
          throttles a FUSE writer to its share (strictlimit), which here halved sequential
          writes (1 GiB + fsync: 184-212 MiB/s at 1%, 388-412 MiB/s at 100%).

        Only root may write it; others keep the defaults.
        """
        if os.getuid() != 0:
            return
        # The kernel sets the read-ahead from the FUSE INIT reply, after pyfuse3.main starts:
        # a stat answered by this daemon proves INIT is done, so the value set here sticks.
        os.stat(self.mountpoint)
        device = control.device_of(self.mountpoint)
        if device is None:
            return
        for name, value in (("read_ahead_kb", READ_AHEAD_KB), ("max_ratio", DIRTY_MAX_RATIO)):
            try:
                with open(f"/sys/class/bdi/{device}/{name}", "w") as f:
                    f.write(str(value))
            except OSError as exc:
                log.info("could not set %s of %s: %s", name, self.mountpoint, exc)

    def _options(self) -> set[str]:
        options = {f"fsname=volfs:{self.volume.name}", "subtype=volfs", "default_permissions"}
        if os.getuid() == 0:
            options.add("allow_other")
        if self.read_only:
            options.add("ro")
        return options

    async def run(self, ready_fd: int | None) -> int:
        os.chdir("/")
        self._start_metrics()  # before mounting: a port it cannot have fails the mount cleanly
        try:
            pyfuse3.init(self.ops, self.mountpoint, self._options())
        except RuntimeError as exc:
            self._stop_metrics()
            # Nothing was mounted, so nothing was written: leave no overlay for recover.
            self._remove_overlay()
            self.store.catalog.unregister_mount(self.mount_id)
            hint = why_fuse_cannot_mount()
            raise MountError(
                f"cannot mount at {self.mountpoint}: {exc}" + (f" ({hint})" if hint else "")
            ) from None
        self._mounted = True
        self.store.catalog.register_mount(self.record)
        exit_code = 0
        try:
            async with trio.open_nursery() as outer:
                # Signals are watched for the daemon's whole life: a second SIGTERM during the
                # final commit must not kill it half-way.
                outer.start_soon(self._signals)
                await outer.start(control.serve, self.socket_path, os.getuid(), self.handle)
                async with trio.open_nursery() as inner:
                    self.ops.spawn = inner.start_soon
                    inner.start_soon(self._fuse_main)
                    inner.start_soon(trio.to_thread.run_sync, self._tune_bdi)
                    inner.start_soon(self._autocommit)
                    inner.start_soon(self._sync_handles)
                    if self.follower is not None:
                        inner.start_soon(self.follower.run)
                    if ready_fd is not None:
                        # The pid too: a daemon that had to start itself again to get a pid
                        # of its own (PidCollisionError) is not the process its launcher
                        # started.
                        os.write(ready_fd, f"ready {self.mount_id} {os.getpid()}\n".encode())
                        os.close(ready_fd)
                        ready_fd = None
                    log.info(
                        "mounted %s (%s) at %s, base %s%s",
                        self.volume.name,
                        self.volume.id,
                        self.mountpoint,
                        self.overlay.base_snapshot,
                        " read-only" if self.read_only else "",
                    )
                    await self._stop.wait()
                    inner.cancel_scope.cancel()
                self._unmount()
                exit_code = await self._final_commit()
                self._finished.set()
                await trio.sleep(0.2)  # let an `unmount` request send its reply
                outer.cancel_scope.cancel()
        finally:
            self._unmount()
            self._stop_metrics()
            self.store.catalog.unregister_mount(self.mount_id)
            self.overlay.close()
        if self.final_result is not None and exit_code == 0:
            final = self.final_result
            log.info(
                "unmounted %s from %s%s",
                self.volume.name,
                self.mountpoint,
                " (changes discarded)"
                if final.get("discarded")
                else f" (committed {final['snapshot']})"
                if final.get("snapshot")
                else "",
            )
            # Ended cleanly: nothing is left for `volfs recover`, so the log may go in time.
            logs.mark_ended(self.store.run_dir, self.mount_id)
            logs.remove_expired(self.store.run_dir)
        return exit_code

    def _unmount(self) -> None:
        if self._mounted:
            self._mounted = False
            try:
                pyfuse3.close(unmount=True)
            except Exception as exc:  # never let cleanup hide the final commit
                log.warning("unmounting %s: %s", self.mountpoint, exc)

    def _volume_gone(self) -> bool:
        try:
            self.store.catalog.get_volume_by_id(self.volume.id)
        except NotFoundError:
            return True
        return False

    async def _final_commit(self) -> int:
        if (
            not self.read_only
            and not self._discard
            and await trio.to_thread.run_sync(self._volume_gone)
        ):
            log.warning(
                "volume %r was deleted while mounted at %s: its uncommitted changes are discarded",
                self.volume.name,
                self.mountpoint,
            )
            self._discard = True
        if self.read_only or self._discard:
            self.final_result = {"snapshot": None, "discarded": self._discard}
            if self._discard and await trio.to_thread.run_sync(self._volume_gone):
                self.final_result["volume_deleted"] = True
            self._remove_overlay()
            return 0
        for attempt in range(1, FINAL_COMMIT_ATTEMPTS + 1):
            try:
                self.final_result = await self.commit(
                    origin=f"unmount {self.mount_id} {self.mountpoint}"
                )
                self._remove_overlay()
                return 0
            except VolfsError as exc:
                log.error(
                    "FINAL COMMIT FAILED (attempt %d/%d): %s", attempt, FINAL_COMMIT_ATTEMPTS, exc
                )
                await trio.sleep(0.5 * attempt)
        log.critical(
            "uncommitted changes of %s are kept in %s: run `volfs recover` to commit them",
            self.mountpoint,
            self.overlay_dir,
        )
        self.final_result = {
            "snapshot": None,
            "error": "final commit failed; overlay kept for `volfs recover`",
        }
        return 1

    def _remove_overlay(self) -> None:
        self.overlay.close()
        shutil.rmtree(self.overlay_dir, ignore_errors=True)


def _field(request: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """A control request's field, of exactly this type (bool is no int here, nor int a bool)."""
    value = request.get(name, default)
    if type(value) is not kind:
        raise InvalidError(f"control request field {name!r} must be {kind.__name__}, not {value!r}")
    return value


def _check_sub_path(catalog: Catalog, root: Entry, sub_path: str | None, volume: str) -> str | None:
    """``sub_path`` normalized (None for the whole volume), refused unless it names a
    directory of the snapshot ``root``. A missing one is not created: a typo must not mount
    an empty directory and commit it into the volume."""
    if sub_path is None:
        return None
    parts = split_path(sub_path)
    entry: Entry | None = root
    for i, part in enumerate(parts):
        assert entry is not None
        if entry.kind is not Kind.DIR:
            raise NotADirectoryPathError(
                f"sub-path {sub_path!r} of volume {volume!r}: {'/'.join(parts[:i])!r} is not "
                "a directory"
            )
        entry = catalog.get_tree(entry.tree).get(part) if entry.tree is not None else None
        if entry is None:
            raise NotFoundError(f"sub-path {sub_path!r} does not exist in volume {volume!r}")
    assert entry is not None
    if entry.kind is not Kind.DIR:
        raise NotADirectoryPathError(
            f"sub-path {sub_path!r} of volume {volume!r} is not a directory"
        )
    return "/".join(parts) or None


def run_daemon(options: MountOptions, ready_fd: int | None = None) -> int:
    """Runs a mount in this process until it stops; returns the exit code."""
    logs.setup(options.log_level, options.log_file)
    _raise_fd_limit()
    try:
        check_mountpoint(options.path, nonempty=options.nonempty)
        daemon = MountDaemon(options)
    except VolfsError as exc:
        _report_failure(ready_fd, str(exc))
        raise
    logs.remove_expired(daemon.store.run_dir)  # the logs of mounts that ended long ago
    try:
        return trio.run(daemon.run, ready_fd)
    except VolfsError as exc:
        _report_failure(ready_fd, str(exc))
        raise


def _raise_fd_limit() -> None:
    """Soft fd limit up to the hard one: a commit holds an fd per written chunk it has
    yet to hash (Overlay.prepare_commit), and 1,024 is a common default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.info("could not raise the open-file limit from %d: %s", soft, exc)


def _report_failure(ready_fd: int | None, message: str) -> None:
    if ready_fd is not None:
        try:
            os.write(ready_fd, f"error {message}\n".encode())
            os.close(ready_fd)
        except OSError:
            pass


def check_mountpoint(path: str, *, nonempty: bool = False) -> None:
    real = os.path.realpath(path)
    if any(real == p or real.startswith(p + "/") for p in PROTECTED_PREFIXES):
        raise InvalidError(f"refusing to mount on {real}")
    if real in control.volfs_mountpoints():
        raise InvalidError(f"{real} is already a volfs mount")
    os.makedirs(real, exist_ok=True)
    if not os.path.isdir(real):
        raise InvalidError(f"{real} is not a directory")
    if not nonempty:
        with os.scandir(real) as entries:
            if next(entries, None) is not None:
                # The files would vanish from sight without a word (they are not lost).
                raise InvalidError(
                    f"{real} is not empty: the mount would hide its files "
                    "(use --nonempty to mount over them anyway)"
                )


_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: str) -> None:
    """syncfs(2) of the filesystem at ``path``, without the GIL.

    On a mount of this daemon the kernel answers it by sending cached pages as WRITE
    requests to this process's own loop, which needs the GIL; pyfuse3.syncfs keeps it for
    the whole call, and the daemon hangs (seen: an autocommit during a writer's close).
    ctypes releases it around the call.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)
