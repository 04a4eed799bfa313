"""Publishing changes onto a volume's head: the one write path of every writer.

The order follows the store format's invariants (README, "Store format"):

1. the writer makes every blob its changes name durable (temp file, fsync, rename) —
   before calling here;
2. read the current head; build the changes against it (a callback, so checks such as
   "does this path exist" see the head the changes land on);
3. merge them onto that head (``merge.py``); the new trees stay in memory;
4. one LMDB write transaction stores the trees and the snapshot and moves the head, if it
   is still the one merged onto (compare-and-swap);
5. if another writer won the swap, go back to 2 with the new head.

Steps 2 to 4 run in the volume's *head turn* (``Catalog.head_turn``): committers of one
volume take turns, so a commit merges once instead of losing the swap again and again to
the others (with 32 writers, each merge would otherwise be redone several times over, and
the slowest writers starve). The swap stays the guard: a writer that moves the head
without a turn (a rollback) only costs the others a retry.

A crash before 4 leaves the old head; after 4, the new one. Nothing is ever half-applied.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from volfs.blobs import Digest
from volfs.catalog import (
    MAX_CHANGES_RECORDED,
    Catalog,
    HeadMoved,
    SnapshotId,
    SnapshotRecord,
    new_id,
)
from volfs.core.changes import Changes, Dir, Path, Put, Remove, SetMeta
from volfs.core.merge import merge
from volfs.core.tree import Entry, Tree, TreeStore, decode, lookup
from volfs.errors import ConflictError
from volfs.names import join_path

ChangeBuilder = Callable[[Entry], Changes]
MAX_ATTEMPTS = 200

#: The snapshots this process committed, in order: an interrupted CLI command says
#: whether anything landed before the interrupt (volfs.cli._common.interrupted_state).
landed: list[SnapshotId] = []


@dataclass
class CommitResult:
    snapshot: SnapshotId | None
    trees_written: int = 0
    overwrites: list[str] = field(default_factory=list)
    attempts: int = 0
    #: The head the changes were merged onto (the new snapshot's parent).
    parent: SnapshotId | None = None

    @property
    def committed(self) -> bool:
        return self.snapshot is not None


def describe(changes: Changes) -> list[list[str]]:
    ops = {Put: "put", Dir: "mkdir", Remove: "rm", SetMeta: "meta"}
    out = []
    for path, change in sorted(changes.items()):
        if isinstance(change, Dir) and not change.set_meta:
            continue  # only on the way to deeper changes
        op = ops[type(change)]
        if isinstance(change, Dir) and change.seen is not None and change.seen.is_dir:
            op = "meta"
        out.append([op, join_path(path) or "/"])  # () is the root itself
    return out


def changed_since_seen(store: TreeStore, root: Entry, changes: Changes) -> list[Path]:
    """Paths the changes touch whose content at ``root`` is not what the writer saw there.

    Wider than the merge's overwrites: it also names a path someone else deleted that the
    writer wrote, and a file whose content changed under a chmod. (Metadata others changed
    is not visible here: a change carries the writer's entry, not its base's metadata.)
    """
    out = []
    for path, change in changes.items():
        if isinstance(change, Dir):
            continue  # a directory on the way: what is below it is checked path by path
        seen = change.entry if isinstance(change, SetMeta) else change.seen
        head = lookup(store, root, path)
        if head is None and seen is None:
            continue
        if head is None or not head.same_content(seen):
            out.append(path)
    return out


class _WithExtra:
    """The catalog's trees plus ``extra`` (a mount's view, not stored yet): the merge reads
    the writer's own trees where it follows a link group into them."""

    def __init__(self, extra: Mapping[Digest, bytes], base: TreeStore) -> None:
        self.extra = extra
        self.base = base
        self._decoded: dict[Digest, Tree] = {}  # a link fix may read one tree more than once

    def get_tree(self, digest: Digest) -> Tree:
        tree = self._decoded.get(digest)
        if tree is not None:
            return tree
        raw = self.extra.get(digest)
        if raw is None:
            return self.base.get_tree(digest)
        tree = self._decoded[digest] = decode(raw, self.get_tree)
        return tree


_turns = threading.local()


@contextmanager
def _head_turn(catalog: Catalog, volume_id: str) -> Iterator[None]:
    """The volume's head turn, unless this thread holds it already: a commit made from
    inside a commit's build callback goes ahead (the outer one then retries on the new
    head) instead of waiting forever for the turn its own thread holds."""
    held: set[tuple[int, str]] = _turns.__dict__.setdefault("held", set())
    key = (id(catalog), volume_id)
    if key in held:
        yield
        return
    with catalog.head_turn(volume_id):
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)


def commit_changes(
    catalog: Catalog,
    volume_id: str,
    build: ChangeBuilder,
    *,
    origin: str,
    if_unchanged: bool = False,
    extra_trees: Mapping[Digest, bytes] | None = None,
) -> CommitResult:
    """Publishes ``build``'s changes; ``extra_trees`` (a mount's view) are stored with them.

    The extra trees land in the same transaction as the head when there is a commit, and
    on their own when there is nothing to commit: either way they are stored on return.
    """
    extra = dict(extra_trees or {})

    def nothing(attempt: int) -> CommitResult:
        if extra:
            catalog.put_trees(extra)
        return CommitResult(None, attempts=attempt)

    for attempt in range(1, MAX_ATTEMPTS + 1):
        with _head_turn(catalog, volume_id):
            head = catalog.head(volume_id)
            changes = build(head.root)
            if not changes:
                return nothing(attempt)
            result = merge(_WithExtra(extra, catalog) if extra else catalog, head.root, changes)
            if if_unchanged:
                conflicts = sorted(
                    set(result.overwrites) | set(changed_since_seen(catalog, head.root, changes))
                )
                if conflicts:
                    paths = ", ".join(join_path(p) for p in conflicts[:5])
                    raise ConflictError(
                        f"commit refused: changed by someone else since this mount's base: {paths}"
                    )
            if result.root == head.root:
                return nothing(attempt)
            described = describe(changes)
            snapshot = SnapshotRecord(
                SnapshotId(new_id("sn")),
                head.volume_id,
                result.root,
                head.id,
                time.time(),
                origin,
                overwrites=[{"path": join_path(p), "previous": head.id} for p in result.overwrites],
                changed=described[:MAX_CHANGES_RECORDED],
                changed_count=len(described),
            )
            try:
                catalog.advance_head(head.id, snapshot, {**extra, **result.writer.pending})
            except HeadMoved:
                moved = True  # a writer that does not take turns (a rollback) won the swap
            else:
                moved = False
        if moved:
            time.sleep(random.uniform(0, 0.002 * min(attempt, 20)))
            continue
        catalog.remember_trees(result.writer.decoded)
        landed.append(snapshot.id)
        return CommitResult(
            snapshot.id,
            len(result.writer.pending),
            [join_path(p) for p in result.overwrites],
            attempt,
            head.id,
        )
    raise ConflictError(f"commit gave up after {MAX_ATTEMPTS} attempts: the head keeps moving")
