"""Finding the overlays of dead daemons, and committing (or dropping) what they held.

A live daemon holds an exclusive flock on ``<overlay>/lock``; the kernel drops it when
the process dies, however it dies. An overlay whose lock can be taken is orphaned: its
journal is replayed onto the view it names and the result committed onto the head, the
same merge as any commit. A FUSE mount the dead daemon left behind (``ENOTCONN`` on
every access) is detached with ``fusermount3 -u -z``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volfs import locks
from volfs.catalog import MountRecord
from volfs.errors import NotFoundError, VolfsError
from volfs.mount import logs
from volfs.mount.journal import Journal
from volfs.mount.overlay import Overlay
from volfs.store import Store

log = logging.getLogger(__name__)


@dataclass
class Orphan:
    dir: Path
    record: MountRecord | None

    @property
    def mount_id(self) -> str:
        return self.dir.name


@dataclass
class Recovered:
    orphan: Orphan
    action: str  # "committed", "nothing to commit", "discarded", "failed"
    snapshot: str | None = None
    detail: str = ""
    stale_mount_cleaned: bool = False


def _locked_by_live_daemon(overlay_dir: Path) -> bool:
    return locks.held(overlay_dir / "lock")


def find_orphans(store: Store) -> list[Orphan]:
    orphans = []
    for overlay_dir in sorted(store.overlays_dir.iterdir()):
        if not overlay_dir.is_dir() or _locked_by_live_daemon(overlay_dir):
            continue
        record = None
        try:
            record = MountRecord(**json.loads((overlay_dir / "mount.json").read_text()))
        except (OSError, ValueError, TypeError):
            pass
        orphans.append(Orphan(overlay_dir, record))
    return orphans


def clean_stale_mount(path: str) -> bool:
    """Detaches a FUSE mount whose daemon is gone; True if there was one."""
    from volfs.control import XATTR_CONTROL, volfs_mountpoints

    if path not in volfs_mountpoints():
        return False
    try:
        # Not os.stat: the kernel answers that from its attribute cache long after the
        # daemon died. Extended attributes always reach the daemon.
        os.getxattr(path, XATTR_CONTROL)
        return False  # it answers: someone else serves it now
    except OSError:
        pass
    subprocess.run(
        ["fusermount3", "-u", "-z", path],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return True


def _claim(overlay_dir: Path) -> int | None:
    """An fd holding the overlay's lock, as its daemon did, or None if a daemon or another
    ``volfs recover`` holds it (or already finished with it): one recover per overlay."""
    try:
        fd = os.open(overlay_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:  # the whole overlay is gone
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still the overlay's lock file, not one another recover removed with the overlay.
        if os.stat(overlay_dir / "lock").st_ino == os.fstat(fd).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def recover(store: Store, *, discard: bool = False) -> list[Recovered]:
    results = []
    for orphan in find_orphans(store):
        claim = _claim(orphan.dir)
        if claim is None:
            continue
        try:
            outcome = _recover_one(store, orphan, discard)
            results.append(outcome)
        finally:
            os.close(claim)
        _note_in_log(store, outcome)
    return results


def _note_in_log(store: Store, outcome: Recovered) -> None:
    """The recovery, in the crashed mount's own log; once its changes are safe (committed or
    dropped on purpose), that log may go after the retention period like any other."""
    mount_id = outcome.orphan.mount_id
    message = f"recover {mount_id}: {outcome.action}"
    message += f" {outcome.snapshot}" if outcome.snapshot else ""
    message += f" ({outcome.detail})" if outcome.detail else ""
    log.info("%s", message)
    failed = outcome.action == "failed"
    logs.note(store.run_dir, mount_id, logging.ERROR if failed else logging.INFO, message)
    if not failed:
        logs.mark_ended(store.run_dir, mount_id)


def _recover_one(store: Store, orphan: Orphan, discard: bool) -> Recovered:
    stale = bool(orphan.record and clean_stale_mount(orphan.record.path))
    if discard:
        shutil.rmtree(orphan.dir, ignore_errors=True)
        store.catalog.unregister_mount(orphan.mount_id)
        return Recovered(orphan, "discarded", stale_mount_cleaned=stale)
    try:
        result = _commit_orphan(store, orphan)
    except (VolfsError, OSError, ValueError, IndexError) as exc:
        log.error("recovering %s failed: %s", orphan.dir, exc)
        return Recovered(orphan, "failed", detail=str(exc), stale_mount_cleaned=stale)
    shutil.rmtree(orphan.dir, ignore_errors=True)
    # The record is what made it stale: fsck would report it for ever otherwise.
    store.catalog.unregister_mount(orphan.mount_id)
    result.stale_mount_cleaned = stale
    return result


def _commit_orphan(store: Store, orphan: Orphan) -> Recovered:
    if orphan.record is None or orphan.record.read_only or not (orphan.dir / "journal").exists():
        return Recovered(orphan, "nothing to commit")
    records = Journal.read(orphan.dir / "journal")
    if not records:
        return Recovered(orphan, "nothing to commit")
    view, base_id = Overlay.view_from_journal(records)
    try:
        volume = store.catalog.get_volume_by_id(orphan.record.volume_id)
    except NotFoundError:
        raise NotFoundError(
            f"volume {orphan.record.volume_name!r} was deleted; its changes cannot be committed"
        ) from None
    base = store.catalog.get_snapshot(base_id)
    overlay = Overlay(store, volume, base, orphan.dir, view=view)
    try:
        overlay.replay(records[1:])
        result = overlay.commit_now(origin=f"recover {orphan.mount_id} {orphan.record.path}")
    finally:
        overlay.close()
    if result.committed:
        return Recovered(orphan, "committed", result.snapshot)
    return Recovered(orphan, "nothing to commit")


def describe(result: Recovered) -> dict[str, Any]:
    record = result.orphan.record
    return {
        "mount_id": result.orphan.mount_id,
        "volume": record.volume_name if record else None,
        "path": record.path if record else None,
        "action": result.action,
        "snapshot": result.snapshot,
        "detail": result.detail,
        "stale_mount_cleaned": result.stale_mount_cleaned,
    }
