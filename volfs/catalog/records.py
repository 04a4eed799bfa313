"""The catalog's records: ids, volumes, snapshots, mounts, leases, pins, and their JSON.

This module owns what every catalog backend stores and returns — the frozen records, the
``NewType`` ids, the JSON of an entry (a snapshot's root, a mount's journalled view) and
the store format version — so that the LMDB catalog, the PostgreSQL catalog and their
callers speak one language. The schema these records are stored in is the docstring of
:mod:`volfs.catalog`.

Must not: open a database, do I/O beyond reading ``/proc`` (:func:`process_start`), or
know which backend stores a record.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NewType

from volfs.blobs import Digest
from volfs.core.tree import EMPTY_TREE, Entry, Kind, tree_digest
from volfs.errors import VolfsError

#: The store format this code writes (README, "Store format"); format 1 and 2 stores are
#: read and upgraded when opened (their trees stay as they are: tree.py decodes them all).
#: 2: sparse files, special kinds, hard links (VT2); 3: huge directories split (VX3).
FORMAT_VERSION = 3
VolumeId = NewType("VolumeId", str)
SnapshotId = NewType("SnapshotId", str)
MountId = NewType("MountId", str)
#: How many changed paths a snapshot record lists (``changed_count`` has the full number).
MAX_CHANGES_RECORDED = 1000

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def new_id(prefix: str) -> str:
    return prefix + "-" + "".join(secrets.choice(_ALPHABET) for _ in range(14))


class HeadMoved(VolfsError):
    """The compare-and-swap lost: someone else advanced the head first."""


def entry_to_json(e: Entry) -> dict[str, Any]:
    """An entry (without its name) as JSON: a snapshot's root, a mount's journalled view.

    ``chunks`` (as ``[[index, digest], …]``) and ``target`` appear only when set, so a
    directory's record reads as it did in format 1 plus the four fields format 2 added.
    """
    out: dict[str, Any] = {
        "kind": int(e.kind),
        "mode": e.mode,
        "uid": e.uid,
        "gid": e.gid,
        "mtime_ns": e.mtime_ns,
        "size": e.size,
        "tree": e.tree,
        "files": e.files,
        "xattrs": [[k, v.hex()] for k, v in e.xattrs],
        "link": e.link,
        "nlink": e.nlink,
        "rdev": e.rdev,
        "links": e.links,
    }
    if e.chunks:
        out["chunks"] = [[index, digest] for index, digest in e.chunks]
    if e.target:
        out["target"] = e.target
    return out


def entry_from_json(d: dict[str, Any]) -> Entry:
    """The entry :func:`entry_to_json` wrote; records from format 1 (no link, nlink, rdev,
    links) load with those fields' defaults."""
    tree = d.get("tree")
    return Entry(
        "",
        Kind(d["kind"]),
        d["mode"],
        d["uid"],
        d["gid"],
        d["mtime_ns"],
        d["size"],
        chunks=tuple((int(index), Digest(digest)) for index, digest in d.get("chunks", ())),
        tree=Digest(tree) if tree is not None else None,
        files=d.get("files", 0),
        target=d.get("target", ""),
        xattrs=tuple((k, bytes.fromhex(v)) for k, v in d.get("xattrs", [])),
        link=d.get("link", 0),
        nlink=d.get("nlink", 1),
        rdev=d.get("rdev", 0),
        links=d.get("links", 0),
    )


@dataclass(frozen=True)
class VolumeRecord:
    id: VolumeId
    name: str
    environment: str
    created_at: float
    created_by: str
    head: SnapshotId
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @staticmethod
    def from_json(raw: bytes) -> VolumeRecord:
        return VolumeRecord(**json.loads(bytes(raw)))


@dataclass(frozen=True)
class SnapshotRecord:
    id: SnapshotId
    volume_id: VolumeId
    root: Entry
    parent: SnapshotId | None
    time: float
    origin: str
    #: Paths whose content this commit replaced or removed without having seen it, with
    #: the snapshot that held the lost version: [{"path": "a/b", "previous": "sn-…"}].
    overwrites: list[dict[str, str]] = field(default_factory=list)
    #: What this commit changed: [[op, path], …] (op: put, mkdir, rm, meta), at most
    #: ``MAX_CHANGES_RECORDED``; ``changed_count`` is the full number.
    changed: list[list[str]] = field(default_factory=list)
    changed_count: int = 0

    def to_json(self) -> bytes:
        d = dataclasses.asdict(self)
        d["root"] = entry_to_json(self.root)
        return json.dumps(d, separators=(",", ":")).encode()

    @staticmethod
    def from_json(raw: bytes) -> SnapshotRecord:
        d = json.loads(raw)
        d["root"] = entry_from_json(d["root"])
        return SnapshotRecord(**d)


def new_volume_records(
    environment: str,
    name: str,
    created_by: str,
    *,
    root: Entry | None = None,
    origin: str = "create",
) -> tuple[VolumeRecord, SnapshotRecord]:
    """A new volume and its first snapshot (an empty root, or ``root``: a fork shares its
    source's), not stored yet. The snapshot has no parent: the volume's history starts here."""
    volume_id = VolumeId(new_id("vo"))
    now = time.time()
    if root is None:
        root = Entry(
            "",
            Kind.DIR,
            0o755,
            os.getuid(),
            os.getgid(),
            time.time_ns(),
            tree=tree_digest(EMPTY_TREE),
        )
    snapshot = SnapshotRecord(SnapshotId(new_id("sn")), volume_id, root, None, now, origin)
    return VolumeRecord(volume_id, name, environment, now, created_by, snapshot.id), snapshot


def follow_parents(
    first: SnapshotRecord, find: Callable[[str], SnapshotRecord | None], limit: int | None = None
) -> Iterator[SnapshotRecord]:
    """``first``, then its parents (looked up with ``find``); stops where retention dropped
    a parent, or after ``limit`` records. Every catalog's ``history`` is this walk."""
    snapshot: SnapshotRecord | None = first
    count = 0
    while snapshot is not None and (limit is None or count < limit):
        yield snapshot
        count += 1
        snapshot = find(snapshot.parent) if snapshot.parent else None


@dataclass(frozen=True)
class MountRecord:
    id: MountId
    volume_id: VolumeId
    volume_name: str
    environment: str
    path: str
    pid: int
    uid: int
    base: SnapshotId
    read_only: bool
    socket: str
    overlay: str
    started_at: float


@dataclass(frozen=True)
class Lease:
    """A process writing blobs for a commit that has not landed yet (see ``Catalog.lease``)."""

    id: str
    pid: int
    #: The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), so
    #: a reused pid is not taken for the lease holder; None where /proc is unreadable.
    start: int | None
    #: Every blob written since this time may be about to be referenced.
    since: float
    what: str
    #: A file the holder keeps flock'ed (``volfs.locks``): the lease is live while it is
    #: held, in whatever PID namespace the holder runs. None in leases of older versions.
    lock: str | None = None


@dataclass(frozen=True)
class Pin:
    """What a live mount on some machine needs kept (``Catalog.live_pins``): its base
    snapshot and, once it committed, the view it last committed."""

    mount_id: str
    machine: str
    volume_id: str
    snapshot_id: str
    view_tree: Digest | None


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot; None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (the command) may hold spaces and parentheses: count from the last ")".
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def process_alive(pid: int, start: int | None) -> bool:
    """True if ``pid`` runs and (when ``start`` is known) is the process that started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return start is None or process_start(pid) in (start, None)
