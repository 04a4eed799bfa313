"""Committing a mount's view, in five phases the daemon spreads over the loop and threads.

Committing builds the view's Merkle tree, rebuilding only what changed since the last
build (each node caches its entry; a change clears the cache up to the root), diffs it
against the view the mount last committed (``changes.diff``) and publishes that diff
with ``commit.commit_changes``, which merges it onto the current head. The view itself
does not change. The phases, and where each runs:

1. :meth:`Publishing.prepare_commit` (loop): which scratch files need hashing; their
   segments are frozen for it.
2. :meth:`Publishing.hash_files` (any thread): their content stored as chunk blobs.
3. :meth:`Publishing.build_view` (loop, no await): the tree, with what phase 2 found.
4. :meth:`Publishing.publish` (any thread): the diff merged onto the head.
5. :meth:`Publishing.finish_commit` (loop): the committed view moves, the journal is
   rewritten, scratch files now fully committed go.

Owns the phases and the records they hand on (:class:`HashJob`, :class:`HashResult`,
:class:`PendingCommit`). Must not change the namespace (``namespace.py``) or know of
pyfuse3 or trio; phases 2 and 4 touch only the data handed to them, the catalog and the
blob store.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, replace
from typing import Any

from volfs.blobs import BlobBatch, Digest
from volfs.core.changes import Dir, Put, diff
from volfs.core.tree import Chunks, Entry, Kind, Tree, TreeWriter, chunk_span, lookup
from volfs.mount.inodes import ROOT_INO, Node
from volfs.mount.listing import Listing
from volfs.mount.orphans import Orphans
from volfs.mount.scratch import REMOVER, ScratchFile, has_data
from volfs.snapshots.commit import CommitResult, commit_changes


@dataclass
class HashJob:
    ino: int
    version: int
    #: (chunk index, fd, path) of each segment, frozen by ScratchFile.freeze; hashing closes them.
    segments: list[tuple[int, int, str]]
    base: Chunks  # the committed chunks the file still has: stored already
    size: int


@dataclass
class HashResult:
    version: int
    chunks: Chunks
    size: int
    frozen: frozenset[int] = frozenset()  # the segments hashed
    adopted: frozenset[int] = frozenset()  # of those, the ones now linked as blobs


@dataclass
class PendingCommit:
    view: Entry
    writer: TreeWriter
    results: dict[int, HashResult]
    result: CommitResult | None = None
    #: ``Namespace.shape_changes`` when the view was built.
    shape_changes: int = 0
    #: The journal as it will start once this view is committed: records by scratch file
    #: (see Namespace._journal_start); the changes made while it is published follow them.
    journal: list[tuple[str | None, list[list[Any]]]] | None = None


def freeze_budget() -> int:
    """How many segment fds one commit may hold frozen: a quarter of the fd limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(256, soft // 4) if soft != resource.RLIM_INFINITY else 1 << 20


class Publishing(Orphans):
    """The commit phases of :class:`~volfs.mount.overlay.Overlay`."""

    def prepare_commit(self, *, skip_writing: bool = False) -> list[HashJob]:
        """Phase 1 (loop): which scratch files need hashing, their segments frozen for it.

        Each frozen segment holds an fd until it is hashed: past ``freeze_budget()`` of them,
        the remaining files are hashed on the loop when the view is built (slower, same
        result). ``skip_writing``: files open for writing are left for a later commit (see
        :meth:`build_view`)."""
        jobs = []
        budget = freeze_budget()
        for ino in list(self._scratch_nodes):
            node = self.table.get(ino)
            if skip_writing and node is not None and node.writers:
                continue
            if node is not None and node.content_dirty and node.links and node.scratch:
                budget -= node.scratch.open_segments()
                if budget < 0:
                    break
                jobs.append(HashJob(ino, node.version, *node.scratch.freeze()))
        return jobs

    def hash_files(self, jobs: list[HashJob]) -> dict[int, HashResult]:
        """Phase 2 (any thread): stores each scratch file's content as chunk blobs."""
        results = {}
        batch = self.blobs.batch()
        try:
            for job in jobs:
                results[job.ino] = self._store_job(job, batch)
            batch.flush()
        except BaseException:
            batch.discard()
            for job in jobs:
                _close_all(job.segments)
                job.segments = []
            raise
        return results

    def _store_job(self, job: HashJob, batch: BlobBatch) -> HashResult:
        """Stores a file's frozen segments as its chunk blobs, adopting new ones (no copy);
        durable once ``batch`` is flushed. Closes the job's fds."""
        chunks = dict(job.base)  # unchanged committed chunks: stored already, not hashed again
        adopted = set()
        frozen = set()
        try:
            for index, fd, path in job.segments:
                frozen.add(index)
                # A chunk's blob is the segment's bytes, zeros after it implied: a segment
                # with no data at all (zeros written into a hole) is a hole in the tree too.
                length = min(os.fstat(fd).st_size, chunk_span(job.size, index))
                if length <= 0 or not has_data(fd):
                    continue
                digest, _ = batch.add_range(fd, 0, length, adopt=path)
                if not digest:
                    continue
                if os.fstat(fd).st_nlink > 1:  # a blob's inode now (or since an earlier commit)
                    adopted.add(index)
                chunks[index] = digest
        finally:
            _close_all(job.segments)
            job.segments = []
        self.stats.files_hashed += 1
        return HashResult(
            job.version,
            tuple(sorted(chunks.items())),
            job.size,
            frozenset(frozen),
            frozenset(adopted),
        )

    def build_view(
        self, results: dict[int, HashResult], *, skip_writing: bool = False
    ) -> PendingCommit:
        """Phase 3 (loop, no await): the view's Merkle tree, rebuilt where it changed.

        ``skip_writing`` (background commits): a file open for writing goes into the tree as
        it was last committed, or not at all if it never was, so a reader never gets half a
        checkpoint; it stays dirty and goes out with the first commit after it is closed (or
        an explicit one). Modal leaves such files out of its background commits too."""
        writer = TreeWriter(self.catalog)
        root = self.table[ROOT_INO]
        held = _Held(self, writer) if skip_writing else None
        entry, _ = self._entry(root, "", writer, results, held=held)
        pending = PendingCommit(entry, writer, results, shape_changes=self.shape_changes)
        if self.journal is not None:
            # Here, on the loop, with no await since the view was built: the journal's next
            # start and the view agree, and every later change is captured for after it.
            pending.journal = self._journal_start(entry)
            self.journal.capture()
        return pending

    def dirty_paths(self) -> list[str]:
        """What the next commit would publish, without hashing or changing anything."""
        if not self.dirty:
            return []
        writer = TreeWriter(self.catalog)
        view, _ = self._entry(self.table[ROOT_INO], "", writer, {}, dry=True)
        changes = diff(writer, self.committed_view, view)
        # A directory whose only change is its mtime changed because of its entries: the
        # entries are what a user wants to see listed.
        return sorted(
            "/".join(path) or "/"
            for path, change in changes.items()
            if not (isinstance(change, Dir) and change.set_meta <= {"mtime_ns"})
        )

    def _entry(
        self,
        node: Node,
        name: str,
        writer: TreeWriter,
        results: dict[int, HashResult],
        dry: bool = False,
        held: _Held | None = None,
        path: tuple[str, ...] = (),
    ) -> tuple[Entry, bool]:
        """This node as a tree entry, and whether it is clean (cacheable).

        ``dry``: stands in a placeholder digest for unhashed content and caches nothing.
        ``held``: files open for writing stand as last committed (see :meth:`build_view`).
        """
        cached = node.cached
        if cached is not None:
            return (cached if cached.name == name else cached.with_(name=name)), True
        xattrs = tuple(sorted(node.xattrs.items()))
        clean = True
        if node.kind is Kind.DIR:
            meta = Entry(
                name, Kind.DIR, node.mode, node.uid, node.gid, node.mtime_ns, xattrs=xattrs
            )
            if node.children is None:
                assert node.base is not None
                entry = meta.with_(
                    tree=node.base.tree,
                    size=node.base.size,
                    files=node.base.files,
                    links=node.base.links,
                )
            elif isinstance(node.children, Listing) and not node.children.complete:
                entry, clean = self._listing_entry(
                    meta, node.children, writer, results, dry, held, path
                )
            else:
                entries = []
                for child_name, child_ino in node.children.items():
                    child = self.table[child_ino]
                    child_path = (*path, child_name)
                    if held is not None and child.writers and child.kind is Kind.FILE:
                        clean = False  # this directory is not what the mount holds
                        last = held.committed(child_path)
                        if last is not None:
                            entries.append(last.with_(name=child_name))
                        continue
                    child_entry, child_clean = self._entry(
                        child, child_name, writer, results, dry, held, child_path
                    )
                    entries.append(child_entry)
                    clean = clean and child_clean
                entry = writer.dir_entry(meta, Tree.of(entries))
        elif node.kind is Kind.FILE:
            chunks, size = node.chunks, node.size
            if node.content_dirty and dry:
                chunks, clean = ((0, Digest(f"{node.ino:016x}{node.version:016x}")),), False
            elif node.content_dirty:
                result = results.get(node.ino)
                if result is None:  # written after the hashing phase began: hash it now
                    assert node.scratch is not None
                    batch = self.blobs.batch()
                    try:
                        result = results[node.ino] = self._store_job(
                            HashJob(node.ino, node.version, *node.scratch.freeze()), batch
                        )
                        batch.flush()
                    except BaseException:
                        batch.discard()
                        raise
                chunks, size = result.chunks, result.size
                if result.version == node.version:
                    node.chunks = chunks
                    node.content_dirty = False
                else:
                    clean = False
            entry = Entry(
                name,
                Kind.FILE,
                node.mode,
                node.uid,
                node.gid,
                node.mtime_ns,
                size,
                chunks,
                xattrs=xattrs,
            )
        elif node.kind is Kind.SYMLINK:
            entry = Entry(
                name,
                Kind.SYMLINK,
                node.mode,
                node.uid,
                node.gid,
                node.mtime_ns,
                node.size,
                target=node.target,
                xattrs=xattrs,
            )
        else:
            entry = Entry(
                name,
                node.kind,
                node.mode,
                node.uid,
                node.gid,
                node.mtime_ns,
                rdev=node.rdev,
                xattrs=xattrs,
            )
        if node.kind is not Kind.DIR:
            nlink = node.nlink
            if nlink > 1 and node.link_id:
                entry = entry.with_(link=node.link_id, nlink=nlink)
        if clean and not dry:
            node.cached = entry
        return entry, clean

    def _listing_entry(
        self,
        meta: Entry,
        listing: Listing,
        writer: TreeWriter,
        results: dict[int, HashResult],
        dry: bool,
        held: _Held | None,
        path: tuple[str, ...],
    ) -> tuple[Entry, bool]:
        """A huge directory as an entry: its tree with only the names this mount loaded,
        added or removed put in (the leaves they fall in rewritten, no more)."""
        names, removed = listing.changes()
        changes: dict[str, Entry | None] = dict.fromkeys(removed)
        clean = True
        for child_name in names:
            child = self.table[listing.loaded[child_name]]
            child_path = (*path, child_name)
            if held is not None and child.writers and child.kind is Kind.FILE:
                clean = False
                changes[child_name] = held.committed(child_path)
                continue
            cached = child.cached
            if cached is not None and cached.with_(name=child_name) == listing.tree.get(child_name):
                continue  # as loaded: the tree has it
            child_entry, child_clean = self._entry(
                child, child_name, writer, results, dry, held, child_path
            )
            changes[child_name] = child_entry
            clean = clean and child_clean
        return writer.dir_entry(meta, listing.tree.updated(changes, writer)), clean

    def publish(
        self, pending: PendingCommit, *, if_unchanged: bool = False, origin: str = "mount"
    ) -> CommitResult:
        """Phase 4 (any thread): merge the diff since the last commit onto the head."""
        changes = diff(pending.writer, self.committed_view, pending.view)
        for path, seen in self.overwrite_seen.items():
            # An adopted orphan overwrites the version the reload brought, which its
            # descriptor never saw: the merge records that overwrite (it must walk down to
            # it, not take the directories above as whole).
            change = changes.get(path)
            if not isinstance(change, Put):
                continue
            changes[path] = Put(change.entry, seen)
            for depth in range(len(path)):
                above = changes.get(path[:depth])
                if isinstance(above, Dir) and above.whole:
                    changes[path[:depth]] = replace(above, whole=False)
        try:
            result = commit_changes(
                self.catalog,
                self.volume.id,
                lambda head: changes,
                origin=origin,
                if_unchanged=if_unchanged,
                extra_trees=pending.writer.pending,
            )
        except BaseException:
            # Not published (a backend unreachable, a conflict): build_view cached the view's
            # root, which would make the mount look clean; the next commit must try again.
            self.table[ROOT_INO].cached = None
            if self.journal is not None:
                self.journal.captured()  # the journal goes on from the view it had
            raise
        self.catalog.remember_trees(pending.writer.decoded)
        pending.result = result
        return result

    def finish_commit(self, pending: PendingCommit) -> None:
        """Phase 5 (loop): the committed view moves; closed scratch files become blobs."""
        self.committed_view = pending.view
        self.shape_changes_committed = pending.shape_changes
        self.overwrite_seen.clear()
        self.stats.commits += 1
        for (
            ino,
            hashed,
        ) in pending.results.items():  # segments not adopted may change in place again
            node = self.table.get(ino)
            if node is not None and node.scratch is not None:
                node.scratch.unfreeze(hashed.frozen - hashed.adopted)
        done: list[ScratchFile] = []
        for ino in list(self._scratch_nodes):
            node = self.table.get(ino)
            if node is None or not node.links or node.scratch is None:
                continue
            if node.opens == 0 and not node.content_dirty and node.cached is not None:
                done.append(node.scratch)
                node.scratch = None
                self._scratch_nodes.discard(ino)
        # The journal first: until it names the view just committed, its records name these
        # scratch files, and a crash in between would have recover replay them as empty files.
        # It starts at the view published, then the changes made while it was published
        # (the view does not hold them), less the records of the scratch files let go.
        self._rewrite_journal(pending.journal, frozenset(scratch.name for scratch in done))
        for scratch in done:
            scratch.unlink()

    def commit_now(self, *, if_unchanged: bool = False, origin: str = "mount") -> CommitResult:
        """All phases in a row: for recovery, tests and the final commit."""
        if self.read_only:
            return CommitResult(None)
        with self.catalog.lease(f"{origin} commit"):  # gc keeps what it writes or reuses
            pending = self.build_view(self.hash_files(self.prepare_commit()))
            result = self.publish(pending, if_unchanged=if_unchanged, origin=origin)
            self.finish_commit(pending)
        REMOVER.wait()  # run to its end: the committed files' scratch files are gone too
        return result


class _Held:
    """Where a background commit finds what a file open for writing last committed."""

    def __init__(self, overlay: Publishing, writer: TreeWriter) -> None:
        self._root = overlay.committed_view
        self._writer = writer

    def committed(self, path: tuple[str, ...]) -> Entry | None:
        entry = lookup(self._writer, self._root, path)
        return entry if entry is not None and entry.kind is Kind.FILE else None


def _close_all(segments: list[tuple[int, int, str]]) -> None:
    for _, fd, _ in segments:
        os.close(fd)
