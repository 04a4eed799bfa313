"""Verifying a store (``volfs fsck``): every head, snapshot, tree and blob, and what is left over.

What it checks, for every volume and every snapshot history still keeps:

- the catalog: each name maps to a volume and back; each head names a snapshot (a head
  naming none is *torn*); each snapshot record decodes, belongs to a volume, its root is a
  directory, its parent chain has no cycle and stays in its volume (a parent retention
  dropped ends the chain: a note, not damage);
- every tree reachable from them: stored, its bytes match its digest and decode; each
  directory entry's totals (bytes, files, link-group names) match its tree's;
- every file's chunk list: indexes strictly ascending and below ``ceil(size / CHUNK_SIZE)``
  (files are sparse: a missing index is a hole); every chunk blob it names: stored, its
  content matches its digest (read in full; ``quick`` only checks it is there and its
  size), and no longer than the span its index covers (a shorter one reads as padded with
  zeros);
- special entries (FIFOs, sockets, devices): no content (size 0, no chunks, no target),
  a device number only on devices;
- hard links, per snapshot: the names sharing one link id (found through the directories'
  link counts) hold the same content, and each says the group has as many names as it has;
- left-overs: blobs and trees nothing keeps, snapshots of deleted volumes and temp files
  (the same rule as ``volfs gc`` without retention: gc.py), and overlays of crashed
  mounts (``volfs recover`` handles those).

Each tree digest and each blob is read once, however many snapshots share it: a first
pass walks every snapshot and records, per tree, whether anything below it is damaged;
only if something is does a second pass walk down the damaged subtrees of each snapshot
to name the affected paths as (volume, snapshot, path).

``repair`` does only what is safe and says what it did: it deletes what gc would
(orphans older than the grace window: blobs, trees, temp files, deleted volumes'
snapshots — not when trees are damaged, since what cannot be read might reference
anything), and marks damaged snapshots in the catalog (``Catalog.mark_damaged``),
clearing the mark of those now found clean. It never deletes anything a snapshot
references, and never touches a crashed mount's overlay.

A distributed store (PostgreSQL + a bucket) is checked the same way against one listing
of the bucket (``_BucketChecker``): every kept snapshot's trees must be in the bucket and
verify, its blobs must be there with the right sizes (their contents are verified on
every read). Orphans are counted, and with ``repair`` deleted, by bucket_gc.py (under the
gc lock); damage marks go to PostgreSQL. Which checker runs is the store's declared
``bucket`` capability (plan.bucket_of), never its backend's type.

Must not: write anything unless ``repair``; import click.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from volfs.blobs import Digest, ObjectStore
from volfs.catalog import SnapshotRecord, VolumeRecord
from volfs.config import CHUNK_SIZE
from volfs.core.tree import Entry, Kind, Tree, chunk_span, decode_verified
from volfs.errors import CorruptionError, VolfsError
from volfs.maintenance import gc as collect
from volfs.maintenance.plan import DEFAULT_GRACE, EMPTY_TREE_DIGEST, Marked, bucket_of
from volfs.mount.recover import find_orphans
from volfs.store import Store

READ_SIZE = 1 << 20


@dataclass
class Affected:
    volume: str
    volume_id: str
    snapshot: str
    head: bool
    path: str


@dataclass(eq=False)  # compared (and hashed) by identity: one object per piece of damage
class Problem:
    """One piece of damage. ``kind`` is one of :data:`KINDS`."""

    kind: str
    subject: str  # a digest, a snapshot or volume id
    detail: str
    affected: list[Affected] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return f"{self.kind} {self.subject}: {self.detail}"


KINDS = {
    "head-missing": "a volume's head names no snapshot (torn head)",
    "name-index": "the name index and the volume records disagree",
    "snapshot-unreadable": "a snapshot record does not decode",
    "snapshot-chain": "a parent chain loops or leaves its volume",
    "root-not-dir": "a snapshot's root is not a directory",
    "tree-missing": "a tree a snapshot reaches is not in the catalog",
    "tree-damaged": "a stored tree fails its digest or does not decode",
    "blob-missing": "a chunk a file names is not in the blob store",
    "blob-damaged": "a blob's content fails its digest",
    "chunk-index": "a file's chunk indexes are out of order or past its size",
    "file-size": "a chunk's blob is longer than the part of the file its index covers",
    "special-entry": "a FIFO, socket or device carries content, or a non-device a device number",
    "link-group": "the names of one hard-link group disagree in content or in their count",
    "dir-totals": "a directory's bytes/files/links totals do not match its tree",
}


@dataclass
class FsckReport:
    store: str
    quick: bool
    volumes: int = 0
    snapshots: int = 0
    trees: int = 0
    blobs: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: Snapshot id -> summaries of the problems below its root.
    damaged_snapshots: dict[str, list[str]] = field(default_factory=dict)
    orphans: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["clean"] = self.clean
        return out


class _Checker:
    """The first pass: each tree and blob checked once; damage recorded where it is."""

    def __init__(self, store: Store, report: FsckReport) -> None:
        self.store = store
        self.report = report
        #: Tree digest -> True if it or anything below it is damaged.
        self.bad: dict[Digest, bool] = {}
        #: Tree digest -> (bytes, files, links) its entries add up to; None if unreadable.
        self.totals: dict[Digest, tuple[int, int, int] | None] = {}
        #: Damaged trees, decoded (for the second pass); None where unreadable.
        self.bad_trees: dict[Digest, Tree | None] = {}
        #: Blob digest -> its size; None if missing or damaged.
        self.blob_size: dict[Digest, int | None] = {}
        self.blob_problem: dict[Digest, Problem] = {}
        #: (tree, entry name or None for the tree itself) -> problems found there.
        self.at: dict[tuple[Digest, str | None], list[Problem]] = {}
        self.tree_problems = 0
        self._open: dict[Digest, Tree] = {}
        #: Tree digest -> the link-group names below it (see link_names).
        self._link_names: dict[Digest, list[tuple[tuple[str, ...], Entry]]] = {}
        #: One problem per broken group, however many snapshots hold it.
        self._link_problems: dict[tuple[int, tuple[str, ...], tuple[str, ...]], Problem] = {}

    def _problem(self, problem: Problem, where: tuple[Digest, str | None] | None) -> Problem:
        self.report.problems.append(problem)
        if where is not None:
            self.at.setdefault(where, []).append(problem)
        return problem

    # -- blobs ---------------------------------------------------------------------------------
    def blob(self, digest: Digest) -> int | None:
        if digest in self.blob_size:
            return self.blob_size[digest]
        size: int | None = None
        path = self.store.blobs.path(digest)
        try:
            if self.report.quick:
                size = os.stat(path).st_size
            else:
                size = self._hash(path, digest)
        except FileNotFoundError:
            self.blob_problem[digest] = self._problem(
                Problem("blob-missing", digest, "the blob is missing from the store"), None
            )
        except OSError as exc:
            self.blob_problem[digest] = self._problem(
                Problem("blob-damaged", digest, f"the blob cannot be read ({exc.strerror or exc})"),
                None,
            )
        self.blob_size[digest] = size
        return size

    def _hash(self, path: os.PathLike[str] | str, digest: Digest) -> int | None:
        hasher = xxhash.xxh3_128()
        size = 0
        with open(path, "rb", buffering=0) as f:
            while data := f.read(READ_SIZE):
                hasher.update(data)
                size += len(data)
        self.report.bytes_read += size
        if hasher.hexdigest() != digest:
            self.blob_problem[digest] = self._problem(
                Problem(
                    "blob-damaged", digest, f"the content fails its digest ({size} bytes on disk)"
                ),
                None,
            )
            return None
        return size

    # -- trees -----------------------------------------------------------------------------------
    def _read(self, digest: Digest) -> Tree | None:
        """The directory ``digest`` names, verified; a split one with all its leaves read,
        verified and checked against its index (each leaf counts as a tree checked)."""
        tree = self._read_block(digest)
        if tree is None or tree.leaves is None:
            return tree
        entries: list[Entry] = []
        for ref in tree.leaves:
            leaf = self._read_block(ref.digest)
            if leaf is None:  # reported; where it is found is the directory's path
                self.at.setdefault((digest, None), []).extend(self.at.pop((ref.digest, None), []))
                return None
            self.bad[ref.digest] = False
            first = leaf.entries[0].name if len(leaf) else None
            if leaf.is_split or (first, len(leaf), leaf.totals()) != (
                ref.first,
                ref.count,
                (ref.size, ref.files, ref.links),
            ):
                self._problem(
                    Problem(
                        "tree-damaged",
                        digest,
                        f"leaf {ref.digest} does not hold what the index says of it",
                    ),
                    (digest, None),
                )
                return None
            entries += leaf.entries
        return Tree(tuple(entries))

    def _read_block(self, digest: Digest) -> Tree | None:
        raw = self.store.catalog.get_tree_raw(digest)
        if raw is None:
            self._problem(
                Problem("tree-missing", digest, "the tree is missing from the catalog"),
                (digest, None),
            )
            return None
        try:
            return decode_verified(raw, digest)
        except ValueError as exc:
            self._problem(
                Problem("tree-damaged", digest, f"the stored tree is damaged: {exc}"),
                (digest, None),
            )
            return None

    def tree(self, root: Digest) -> None:
        """Checks the tree ``root`` and everything below it (post-order, no recursion)."""
        stack: list[tuple[Digest, bool]] = [(root, False)]
        while stack:
            digest, expanded = stack.pop()
            if digest in self.bad:
                continue
            if not expanded:
                if digest in self._open:
                    continue  # already on the stack (a shared subtree)
                tree = self._read(digest)
                if tree is None:
                    self.tree_problems += 1
                    self.bad[digest] = True
                    self.totals[digest] = None
                    self.bad_trees[digest] = None
                    continue
                self._open[digest] = tree
                stack.append((digest, True))
                for e in tree.entries:
                    if e.kind is Kind.DIR and e.tree is not None and e.tree not in self.bad:
                        stack.append((e.tree, False))
                continue
            tree = self._open.pop(digest)
            self.bad[digest] = self._check_entries(digest, tree)
            self.totals[digest] = tree.totals()
            if self.bad[digest]:
                self.bad_trees[digest] = tree

    def _check_file(self, digest: Digest, e: Entry) -> bool:
        """A file's chunk list and blobs; True if something is wrong."""
        where = (digest, e.name)
        count = -(-e.size // CHUNK_SIZE)  # the chunks a file of this size has room for
        indexes = [index for index, _ in e.chunks]
        if any(a >= b for a, b in itertools.pairwise(indexes)):
            self._problem(
                Problem(
                    "chunk-index",
                    digest,
                    f"{e.name!r}: chunk indexes are not strictly ascending ({_few(indexes)})",
                ),
                where,
            )
            return True
        if indexes and (indexes[0] < 0 or indexes[-1] >= count):
            self._problem(
                Problem(
                    "chunk-index",
                    digest,
                    f"{e.name!r} says {e.size} bytes (chunks "
                    f"0 to {count - 1}) but names chunk {indexes[-1]}",
                ),
                where,
            )
            return True
        bad = False
        for index, blob in e.chunks:
            size = self.blob(blob)
            if size is None:
                self.at.setdefault(where, [])
                if self.blob_problem[blob] not in self.at[where]:
                    self.at[where].append(self.blob_problem[blob])
                bad = True
            elif size > chunk_span(e.size, index):
                self._problem(
                    Problem(
                        "file-size",
                        digest,
                        f"{e.name!r}: chunk {index} covers "
                        f"{chunk_span(e.size, index)} of its {e.size} bytes, its "
                        f"blob {blob} holds {size}",
                    ),
                    where,
                )
                bad = True
        return bad

    def _check_special(self, digest: Digest, e: Entry) -> bool:
        """No content on a FIFO, socket or device; a device number only on a device."""
        wrong = []
        if e.size or e.chunks or e.tree is not None or e.target or e.files:
            wrong.append(f"content (size {e.size}, {len(e.chunks)} chunks)")
        if e.rdev and e.kind not in (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE):
            wrong.append(f"a device number ({e.rdev:#x})")
        if not wrong:
            return False
        self._problem(
            Problem(
                "special-entry",
                digest,
                f"{e.name!r} is a {e.kind.name.lower()} but carries {' and '.join(wrong)}",
            ),
            (digest, e.name),
        )
        return True

    def _check_entries(self, digest: Digest, tree: Tree) -> bool:
        bad = False
        for e in tree.entries:
            if e.kind is Kind.FILE:
                bad = self._check_file(digest, e) or bad
            elif e.kind.is_special:
                bad = self._check_special(digest, e) or bad
            elif e.kind is Kind.DIR:
                if e.tree is None or e.tree not in self.bad:
                    self._problem(
                        Problem("tree-missing", digest, f"{e.name!r} names no tree"),
                        (digest, e.name),
                    )
                    bad = True
                    continue
                bad = bad or self.bad[e.tree]
                totals = self.totals[e.tree]
                if totals is not None and totals != (e.size, e.files, e.links):
                    self._problem(
                        Problem(
                            "dir-totals",
                            digest,
                            f"{e.name!r} says {e.size} bytes in "
                            f"{e.files} files and {e.links} link names, its tree holds "
                            f"{totals[0]} in {totals[1]} and {totals[2]}",
                        ),
                        (digest, e.name),
                    )
                    bad = True
        return bad

    # -- hard links ------------------------------------------------------------------------------
    def link_names(self, digest: Digest) -> list[tuple[tuple[str, ...], Entry]]:
        """Every name with a link id below the tree ``digest``, as (path below it, entry).

        Descends only into directories whose ``links`` count says there are some, and
        remembers each tree's answer: the snapshots of one volume share most subtrees.
        Post-order without recursion, as pass 1 (paths may be thousands of levels deep).
        """
        opened: dict[Digest, Tree | None] = {}
        stack: list[Digest] = [digest]
        while stack:
            current = stack[-1]
            if current in self._link_names:
                stack.pop()
                continue
            if current not in opened:
                opened[current] = tree = self._open_tree(current)
                below = [
                    e.tree
                    for e in (tree.entries if tree is not None else ())
                    if e.kind is Kind.DIR
                    and e.links
                    and e.tree is not None
                    and e.tree not in self._link_names
                ]
                if below:
                    stack += below
                    continue
            stack.pop()
            out: list[tuple[tuple[str, ...], Entry]] = []
            tree = opened.pop(current)
            for e in tree.entries if tree is not None else ():
                if e.kind is Kind.DIR:
                    if e.links and e.tree is not None:
                        out += [
                            ((e.name, *path), member) for path, member in self._link_names[e.tree]
                        ]
                elif e.link:
                    out.append(((e.name,), e))
            self._link_names[current] = out
        return self._link_names[digest]

    def _open_tree(self, digest: Digest) -> Tree | None:
        """A tree pass 1 checked, read again (None if it is unreadable: reported already)."""
        if digest in self.bad_trees:
            return self.bad_trees[digest]
        try:
            return self.store.catalog.get_tree(digest)  # verified; cached in memory
        except VolfsError:
            return None

    def link_groups(self, snapshot: SnapshotRecord, volume: VolumeRecord) -> list[Problem]:
        """The hard-link groups of one snapshot whose names disagree (module docstring)."""
        if not snapshot.root.links or snapshot.root.tree is None:
            return []
        groups: dict[int, list[tuple[tuple[str, ...], Entry]]] = {}
        for path, entry in self.link_names(snapshot.root.tree):
            groups.setdefault(entry.link, []).append((path, entry))
        found = []
        for link, members in groups.items():
            first = members[0][1]
            why = []
            if any(not first.same_content(e) for _, e in members[1:]):
                why.append("their content differs")
            counts = sorted({e.nlink for _, e in members})
            if counts != [len(members)]:
                why.append(f"they say nlink {', '.join(map(str, counts))}")
            if not why:
                continue
            paths = ["/".join(parts) for parts, _ in members]
            key = (link, tuple(paths), tuple(why))
            problem = self._link_problems.get(key)
            if problem is None:
                problem = self._link_problems[key] = self._problem(
                    Problem(
                        "link-group",
                        f"{link:#x}",
                        f"{len(members)} names ({_few(paths)}): " + "; ".join(why),
                    ),
                    None,
                )
            for shown in paths:
                problem.affected.append(
                    Affected(volume.name, volume.id, snapshot.id, snapshot.id == volume.head, shown)
                )
            found.append(problem)
        return found

    # -- the second pass ---------------------------------------------------------------------------
    def name_paths(self, snapshot: SnapshotRecord, volume: VolumeRecord) -> list[Problem]:
        """Adds (volume, snapshot, path) to each problem below ``snapshot``'s root."""
        found: list[Problem] = []

        def hit(problems: list[Problem], path: tuple[str, ...]) -> None:
            for p in problems:
                p.affected.append(
                    Affected(
                        volume.name,
                        volume.id,
                        snapshot.id,
                        snapshot.id == volume.head,
                        "/".join(path) or "/",
                    )
                )
                found.append(p)

        assert snapshot.root.tree is not None
        stack: list[tuple[Digest, tuple[str, ...]]] = [(snapshot.root.tree, ())]
        while stack:
            digest, path = stack.pop()
            hit(self.at.get((digest, None), []), path)
            tree = self.bad_trees.get(digest)
            if tree is None:
                continue
            for e in tree.entries:
                child = path + (e.name,)
                hit(self.at.get((digest, e.name), []), child)
                if e.kind is Kind.DIR and e.tree is not None and self.bad.get(e.tree):
                    stack.append((e.tree, child))
        return list(dict.fromkeys(found))


class _BucketChecker(_Checker):
    """Distributed mode: presence and sizes from one listing of the bucket, trees verified.

    A blob's content is not downloaded (every read verifies it against its digest); a
    tree must be in the bucket (a copy in this machine's cache does not count) and is
    verified — the bucket's copy, or with ``quick`` the cached copy where there is one.
    """

    def __init__(self, store: Store, report: FsckReport, bucket: ObjectStore) -> None:
        super().__init__(store, report)
        self.bucket = bucket
        self.listed_blobs = {d: size for d, size, _ in bucket.list("blobs")}
        self.listed_trees = {d for d, _, _ in bucket.list("trees")}
        report.notes.append(
            f"checked {bucket.describe()}: {len(self.listed_blobs)} blobs and "
            f"{len(self.listed_trees)} trees listed; blob contents are verified "
            "on every read, not here"
        )

    def blob(self, digest: Digest) -> int | None:
        if digest in self.blob_size:
            return self.blob_size[digest]
        size = self.listed_blobs.get(digest)
        if size is None:
            self.blob_problem[digest] = self._problem(
                Problem("blob-missing", digest, "the blob is missing from the object store"), None
            )
        self.blob_size[digest] = size
        return size

    def _read_block(self, digest: Digest) -> Tree | None:
        if digest == EMPTY_TREE_DIGEST:  # built into every catalog, never uploaded
            return super()._read_block(digest)
        if digest not in self.listed_trees:
            self._problem(
                Problem("tree-missing", digest, "the tree is missing from the object store"),
                (digest, None),
            )
            return None
        raw = self.store.catalog.get_tree_raw(digest) if self.report.quick else None
        if raw is None:
            raw = self.bucket.get("trees", digest)
            if raw is None:  # deleted since the listing
                self._problem(
                    Problem("tree-missing", digest, "the tree is missing from the object store"),
                    (digest, None),
                )
                return None
            self.report.bytes_read += len(raw)
        try:
            return decode_verified(raw, digest)
        except ValueError as exc:
            self._problem(
                Problem("tree-damaged", digest, f"the tree in the object store is damaged: {exc}"),
                (digest, None),
            )
            return None


def fsck(
    store: Store, *, repair: bool = False, quick: bool = False, grace: float = DEFAULT_GRACE
) -> FsckReport:
    catalog = store.catalog
    report = FsckReport(str(store.root), quick)
    bucket = bucket_of(store, "`volfs fsck`")
    checker = _Checker(store, report) if bucket is None else _BucketChecker(store, report, bucket)

    # The catalog's records.
    volumes: dict[str, VolumeRecord] = {v.id: v for v in catalog.list_volumes()}
    report.volumes = len(volumes)
    names = catalog.iter_names()
    for environment, name, volume_id in names:
        v = volumes.get(volume_id)
        if v is None or (v.environment, v.name) != (environment, name):
            report.problems.append(
                Problem(
                    "name-index",
                    volume_id,
                    f"name {environment}/{name} points at {volume_id}, "
                    "which is not a volume of that name",
                )
            )
    named = {volume_id for _, _, volume_id in names}
    for v in volumes.values():
        if v.id not in named:
            report.problems.append(
                Problem("name-index", v.id, f"volume {v.name!r} has no name entry")
            )
    snapshots: dict[str, SnapshotRecord] = {}
    for snapshot_id, raw in catalog.iter_snapshots_raw():
        try:
            snapshots[snapshot_id] = SnapshotRecord.from_json(raw)
        except (ValueError, TypeError, KeyError) as exc:
            report.problems.append(
                Problem("snapshot-unreadable", snapshot_id, f"the record does not decode: {exc}")
            )
    for v in volumes.values():
        if v.head not in snapshots:
            report.problems.append(
                Problem(
                    "head-missing",
                    v.id,
                    f"the head of volume {v.name!r} names {v.head}, which does not exist",
                    [Affected(v.name, v.id, v.head, True, "/")],
                )
            )
        _check_chain(v, snapshots, report)

    # Pass 1: every snapshot of every volume, each tree and blob once.
    verified = [s for s in snapshots.values() if s.volume_id in volumes]
    verified.sort(key=lambda s: (volumes[s.volume_id].name, -s.time))
    root_problems: dict[str, Problem] = {}
    for s in verified:
        if s.root.kind is not Kind.DIR or s.root.tree is None:
            root_problems[s.id] = Problem(
                "root-not-dir", s.id, "the snapshot's root is not a directory"
            )
            report.problems.append(root_problems[s.id])
            continue
        checker.tree(s.root.tree)
        totals = checker.totals.get(s.root.tree)
        if totals is not None and totals != (s.root.size, s.root.files, s.root.links):
            root_problems[s.id] = Problem(
                "dir-totals",
                s.id,
                f"the root says {s.root.size} bytes in "
                f"{s.root.files} files and {s.root.links} link names, its "
                f"tree holds {totals[0]} in {totals[1]} and {totals[2]}",
            )
            report.problems.append(root_problems[s.id])
    report.snapshots = len(verified)
    report.trees = len(checker.bad) - checker.tree_problems
    report.blobs = len(checker.blob_size)

    # Pass 2: only if something is damaged, name the paths.
    for s in verified:
        volume = volumes[s.volume_id]
        found = []
        if s.id in root_problems:
            p = root_problems[s.id]
            p.affected.append(Affected(volume.name, volume.id, s.id, s.id == volume.head, "/"))
            found.append(p)
        if s.root.tree is not None and checker.bad.get(s.root.tree):
            found += checker.name_paths(s, volume)
        if s.id not in root_problems:
            found += checker.link_groups(s, volume)
        if found:
            report.damaged_snapshots[s.id] = [p.summary for p in found]

    _orphans(store, report, checker, verified, repair=repair, grace=grace)
    if repair:
        _mark_damage(store, report, {s.id for s in verified})
    return report


def _few(items: list[object] | list[int] | list[str], shown: int = 4) -> str:
    """The first few items of a list, for a one-line message."""
    head = ", ".join(str(i) for i in items[:shown])
    return head + (f", … ({len(items)} in all)" if len(items) > shown else "")


def _check_chain(
    volume: VolumeRecord, snapshots: dict[str, SnapshotRecord], report: FsckReport
) -> None:
    seen: set[str] = set()
    current = snapshots.get(volume.head)
    while current is not None:
        seen.add(current.id)
        parent_id = current.parent
        if parent_id is None:
            return
        parent = snapshots.get(parent_id)
        if parent is None:
            report.notes.append(
                f"history of {volume.name!r} starts at {current.id}: its parent "
                f"{parent_id} is no longer kept"
            )
            return
        if parent.volume_id != volume.id or parent.id in seen:
            why = "loops" if parent.id in seen else f"leaves the volume at {parent.id}"
            report.problems.append(
                Problem(
                    "snapshot-chain",
                    current.id,
                    f"the history of {volume.name!r} {why}",
                    [Affected(volume.name, volume.id, current.id, current.id == volume.head, "/")],
                )
            )
            return
        current = parent


def _orphans(
    store: Store,
    report: FsckReport,
    checker: _Checker,
    verified: list[SnapshotRecord],
    *,
    repair: bool,
    grace: float,
) -> None:
    orphans: dict[str, Any] = {"overlays": [], "temp_files": []}
    for orphan in find_orphans(store):
        record = orphan.record
        orphans["overlays"].append(
            {
                "mount_id": orphan.mount_id,
                "volume": record.volume_name if record else None,
                "path": record.path if record else None,
            }
        )
    stale = [
        m
        for m in store.catalog.list_mounts()
        # A live daemon holds its overlay (and a dead one's waits for recover): the pid is
        # no witness, it may be another PID namespace's.
        if not os.path.exists(m.overlay)
    ]
    for m in stale:
        report.notes.append(
            f"stale mount record {m.id} ({m.volume_name} at {m.path}, its overlay is gone)"
        )
    if checker.tree_problems:
        orphans["skipped"] = "trees are missing or damaged: what they referenced is unknown"
        report.orphans = orphans
        if repair:
            report.repairs.append(
                "deleted no orphans: trees are missing or damaged, and what they "
                "referenced cannot be known"
            )
        return
    marked = Marked({s.id for s in verified}, set(checker.bad), set(checker.blob_size))
    try:
        gc = collect.collect(
            store, grace=grace, dry_run=not repair, apply_retention=False, premarked=marked
        )
    except CorruptionError as exc:  # a torn head or an unreadable snapshot record
        orphans["skipped"] = str(exc)
        report.orphans = orphans
        if repair:
            report.repairs.append(f"deleted no orphans: {exc}")
        return
    orphans.update(
        {
            "snapshots": gc.snapshots_dropped,
            "trees": gc.trees_deleted,
            "trees_young": gc.trees_young,
            "blobs": gc.blobs_deleted,
            "blob_bytes": gc.bytes_freed,
            "blobs_young": gc.blobs_young,
            "temp_files": gc.temp_files_deleted,
            "temp_files_young": gc.temp_files_young,
        }
    )
    report.orphans = orphans
    report.notes += gc.notes
    if repair:
        done = (
            f"deleted {gc.blobs_deleted} orphan blobs ({gc.bytes_freed} bytes), "
            f"{gc.trees_deleted} orphan trees, {gc.temp_files_deleted} temp files"
        )
        if gc.snapshots_dropped:
            done += f" and {len(gc.snapshots_dropped)} snapshots of deleted volumes"
        report.repairs.append(done)
        if gc.blobs_young or gc.trees_young or gc.temp_files_young:
            report.repairs.append(
                f"kept {gc.blobs_young} blobs, {gc.trees_young} trees and "
                f"{gc.temp_files_young} temp files younger than the grace window"
            )


def _mark_damage(store: Store, report: FsckReport, verified: set[str]) -> None:
    catalog = store.catalog
    marked = catalog.damaged()
    newly = [s for s in report.damaged_snapshots if s not in marked]
    for snapshot_id, problems in report.damaged_snapshots.items():
        catalog.mark_damaged(snapshot_id, problems)
    cleared = [s for s in marked if s in verified and s not in report.damaged_snapshots]
    for snapshot_id in cleared:
        catalog.clear_damaged(snapshot_id)
    if report.damaged_snapshots:
        report.repairs.append(
            f"marked {len(report.damaged_snapshots)} snapshots damaged"
            f" ({len(newly)} newly): " + ", ".join(report.damaged_snapshots)
        )
    if cleared:
        report.repairs.append(
            f"cleared the damage mark of {len(cleared)} snapshots now found clean: "
            + ", ".join(cleared)
        )
