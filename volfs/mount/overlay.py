"""A mount's view: its base snapshot plus a private scratch area, and how it commits.

:class:`Overlay` is what the FUSE adapter, the daemon and recovery hold. It is composed
of one part per job, each in its own module:

- ``view.py`` (:class:`~volfs.mount.view.ViewReader`): reading the view — lookups,
  children, paths, reads through the blob fd cache with chunk verification and its
  read-ahead plan, xattrs;
- ``namespace.py`` (:class:`~volfs.mount.namespace.Namespace`): changing it — names,
  metadata, file content in scratch files, node lifetimes — and the journal of it;
- ``publish.py`` (:class:`~volfs.mount.publish.Publishing`): the five commit phases;
- ``rebase.py`` (:class:`~volfs.mount.rebase.Rebasing`): reloading onto a new head;
- ``orphans.py`` (:class:`~volfs.mount.orphans.Orphans`): files a keep-open reload took
  out of the view while open, and how their writes reach the next commit;
- ``replay.py`` (:class:`~volfs.mount.replay.Replaying`): recovery from the journal.

The parts are mixins over one state rather than collaborator objects because they are
phases of one object, not separate things: every one of them reads and moves the same
inode table, scratch files and committed view, and the callers (daemon, recover, tests)
drive them as one object. Each mixin builds only on ``Namespace`` (and it on
``ViewReader``), so no part calls another sideways and the imports point one way.

This module holds no code of its own: it composes the parts and re-exports the names
the rest of volfs imports from here. No pyfuse3 and no trio: every method is synchronous
and must be called from one thread (the trio loop), except
:meth:`~volfs.mount.publish.Publishing.hash_files`,
:meth:`~volfs.mount.publish.Publishing.publish` and
:meth:`~volfs.mount.view.ViewReader.verify_chunk`, which are made to run in a worker
thread on data handed to them. Errors are ``OSError`` with the errno a filesystem gives
(the FUSE adapter passes them on) or :class:`~volfs.errors.VolfsError`.
"""

from __future__ import annotations

from volfs.mount.namespace import (
    MAX_XATTR_VALUE,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    OverlayStats,
    new_link_id,
)
from volfs.mount.publish import HashJob, HashResult, PendingCommit, Publishing, freeze_budget
from volfs.mount.rebase import Invalidation, Rebasing
from volfs.mount.replay import Replaying
from volfs.mount.view import BLOB_FD_CACHE, INLINE_READ, ReadPlan

__all__ = [
    "BLOB_FD_CACHE",
    "INLINE_READ",
    "MAX_XATTR_VALUE",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "HashJob",
    "HashResult",
    "Invalidation",
    "Overlay",
    "OverlayStats",
    "PendingCommit",
    "ReadPlan",
    "freeze_budget",
    "new_link_id",
]


class Overlay(Publishing, Rebasing, Replaying):
    """A mount's view; constructed as :class:`~volfs.mount.namespace.Namespace` is:
    ``Overlay(store, volume, base, overlay_dir, read_only=..., view=...)`` (``view``: the
    committed view a crashed mount's journal names, for recovery)."""
