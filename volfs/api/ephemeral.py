"""The catalog names of ephemeral volumes, and the sweep of those whose process died.

An ephemeral volume (:meth:`Volume.ephemeral <volfs.api.volume.Volume.ephemeral>`) is
nameless to users, but the catalog keys volumes by name: it gets one users cannot type
(:data:`volfs.names.EPHEMERAL_NAME_RE`: a leading ``~``), which also says whose it is —
a token of the host, boot and PID namespace, and the owner's pid and start time. The block
deletes it when it ends; a process killed inside the block cannot, so the next
``ephemeral()`` of the same host, boot and PID namespace deletes those whose owner is gone
(Modal's server does the same when heartbeats stop). Volumes of other hosts, boots or
namespaces are never touched: their pids mean nothing here.

Must not: delete a volume whose owner may still run (same pid and start time), or one
that is not an ephemeral volume of this very token.
"""

from __future__ import annotations

import hashlib
import os
import secrets

from volfs.catalog import Catalog
from volfs.errors import NotFoundError
from volfs.names import EPHEMERAL_NAME_RE


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _owner_token() -> str:
    """Same host, same boot, same PID namespace: where a pid names the same process."""
    try:
        pid_ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pid_ns = ""
    seed = f"{os.uname().nodename}|{_read('/proc/sys/kernel/random/boot_id')}|{pid_ns}"
    return hashlib.sha256(seed.encode()).hexdigest()[:12]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    stat = _read(f"/proc/{pid}/stat")
    if ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def new_name() -> str:
    """A fresh catalog name for an ephemeral volume of this process."""
    pid = os.getpid()
    start = _start_time(pid) or "0"
    return f"~ephemeral-{_owner_token()}-{pid}-{start}-{secrets.token_hex(8)}"


def sweep_orphans(catalog: Catalog) -> int:
    """Deletes the ephemeral volumes of this token whose owner has exited; returns how many."""
    if _start_time(os.getpid()) is None:
        return 0  # no /proc: no way to tell a dead owner from a live one
    token = _owner_token()
    swept = 0
    for record in catalog.list_volumes():
        match = EPHEMERAL_NAME_RE.fullmatch(record.name)
        if match is None or match["token"] != token:
            continue
        if _start_time(int(match["pid"])) == match["start"]:
            continue  # its owner still runs
        try:
            catalog.delete_volume(record.environment, record.name)
            swept += 1
        except NotFoundError:
            pass  # its owner, or another sweep, was first
    return swept


__all__ = ["new_name", "sweep_orphans"]
