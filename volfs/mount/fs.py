"""The pyfuse3 adapter: FUSE requests in, overlay calls, FUSE replies out. Nothing else.

Every handler translates its arguments, calls the :class:`~volfs.mount.overlay.Overlay`, and
builds the reply. Errors become errnos in one place (:func:`_errors`): ``OSError`` and
``VolfsError`` keep their errno; anything unexpected is logged once with its traceback
and answered with EIO, so a bug never ends ``pyfuse3.main`` (and never unmounts).

Which chunks a read has verified first, and which one ahead of it, is the view's policy
(:meth:`~volfs.mount.view.ViewReader.read_plan`); this adapter only carries it out: in
worker threads, one check per chunk however many reads wait for it.

Committed content is immutable, so every open keeps the kernel page cache and entries
and attributes are cached for minutes: the view only changes under the kernel at
reload, and reload invalidates what it changed.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from time import perf_counter_ns
from typing import Any, TypeVar

import pyfuse3
import trio

from volfs.blobs import Digest
from volfs.config import NAME_MAX, max_nodes
from volfs.core.tree import Kind, stored_bytes
from volfs.errors import CorruptionError, VolfsError
from volfs.mount.inodes import Node
from volfs.mount.listing import Cursor, Listing
from volfs.mount.overlay import Overlay
from volfs.mount.stats import BUCKETS, MountStats, op_index

log = logging.getLogger(__name__)

CACHE_TIMEOUT = 300.0
XATTR_CONTROL = "user.volfs.control"
#: Worker threads verifying (for remote blobs: fetching) chunks ahead of readers at once.
AHEAD_THREADS = 8
_KIND_BITS = {
    Kind.FILE: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.FIFO: stat.S_IFIFO,
    Kind.SOCKET: stat.S_IFSOCK,
    Kind.CHAR_DEVICE: stat.S_IFCHR,
    Kind.BLOCK_DEVICE: stat.S_IFBLK,
}
_SPECIAL_KINDS = {bits: kind for kind, bits in _KIND_BITS.items() if kind.is_special}

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_FORGET = op_index("forget")


def _errors(handler: F) -> F:
    index = op_index(handler.__name__)
    last = BUCKETS - 1

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The request's statistics (stats.py): ints bumped in place, nothing allocated.
        op = args[0].stats.ops[index]
        start = perf_counter_ns()
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            op.errors += 1
            raise
        except OSError as exc:
            op.errors += 1
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except VolfsError as exc:
            op.errors += 1
            if exc.errno == errno.EIO and not isinstance(
                exc, CorruptionError
            ):  # the store logged it
                log.error("%s failed: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            op.errors += 1
            log.exception("unexpected error in %s", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            elapsed = perf_counter_ns() - start
            op.count += 1
            op.total_ns += elapsed
            bucket = (elapsed >> 10).bit_length()
            op.buckets[bucket if bucket < last else last] += 1

    return wrapper  # type: ignore[return-value]


class _Handle:
    __slots__ = ("node", "write")

    def __init__(self, node: Node, write: bool) -> None:
        self.node = node
        self.write = write


class VolfsOperations(pyfuse3.Operations):
    supports_dot_lookup = True
    #: The kernel gathers small writes into large WRITE requests (measured: 4 KiB writes
    #: 0.11 -> ~0.5 of native). It then holds written data until it writes it back, so a
    #: commit first flushes the mount (``daemon.py``: syncfs before hashing).
    enable_writeback_cache = True

    def __init__(
        self,
        overlay: Overlay,
        *,
        control_info: bytes = b"",
        on_open: Callable[[int, Node, int, bool], None] | None = None,
        on_release: Callable[[int], None] | None = None,
        root_ino: int = pyfuse3.ROOT_INODE,
        stats: MountStats | None = None,
        node_cap: int | None = None,
    ) -> None:
        super().__init__()
        self.overlay = overlay
        #: Past this many nodes, the kernel is asked to forget entries (:meth:`_over_cap`).
        self.node_cap = node_cap if node_cap is not None else max_nodes()
        self._evict_above = self.node_cap
        #: The view's inode the kernel sees as the mount's root: the view's root, or the
        #: directory a sub-path mount serves (``MountOptions.sub_path``). Only the numbers are
        #: swapped; the view, its commits and reloads stay the whole volume's.
        self._root = root_ino
        self.stats = stats if stats is not None else MountStats()
        self.control_info = control_info
        self._handles: dict[int, _Handle] = {}
        #: Open directories: their ino and their listing at opendir.
        self._dirs: dict[int, tuple[int, list[tuple[str, int]] | Cursor]] = {}
        self._next_fh = 1
        self._on_open = on_open
        self._on_release = on_release
        #: Starts a background task (the daemon's nursery); None: verify inline, no read-ahead.
        self.spawn: Callable[..., Any] | None = None
        self._verifying: dict[Digest, trio.Event] = {}
        #: Bounds the checks run ahead of readers (each holds at most a chunk in memory).
        self._ahead_limiter = trio.CapacityLimiter(AHEAD_THREADS)

    # -- helpers -----------------------------------------------------------------------------
    def _ino(self, inode: int) -> int:
        """The view's inode for a kernel inode number."""
        return self._root if inode == pyfuse3.ROOT_INODE else inode

    def kernel_ino(self, ino: int) -> int:
        """The kernel's inode number for a view inode (the inverse of ``_ino``)."""
        return pyfuse3.ROOT_INODE if ino == self._root else ino

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self.kernel_ino(node.ino)
        a.generation = 0
        a.entry_timeout = CACHE_TIMEOUT
        a.attr_timeout = CACHE_TIMEOUT
        a.st_mode = _KIND_BITS[node.kind] | node.mode
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = node.rdev
        a.st_size = node.size
        a.st_blksize = 4096
        # What is not a hole: ``du`` and ``tar --sparse`` see a sparse file as sparse.
        if node.kind is not Kind.FILE:
            allocated = node.size
        elif node.scratch is not None:
            allocated = node.scratch.allocated()
        else:
            allocated = stored_bytes(node.size, node.chunks)
        a.st_blocks = (allocated + 511) // 512
        a.st_atime_ns = node.atime_ns
        a.st_mtime_ns = node.mtime_ns
        a.st_ctime_ns = node.ctime_ns
        return a

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        table = self.overlay.table
        table.looked_up(node)
        if len(table) > self._evict_above:
            self._over_cap()
        return self.attrs(node)

    def _over_cap(self) -> None:
        """The table passed its cap: asks the kernel to forget the entries of the directories
        listed longest ago (as it would under memory pressure), down to three quarters of
        the cap; their FORGETs then release the nodes. What the tree cannot give back (open
        files, changes, hard links) is never asked for, so the cap can be passed by that.
        Asked again only after the table grew by another eighth of the cap, or shrank."""
        table = self.overlay.table
        names = table.evictable(len(table) - self.node_cap * 3 // 4)
        for parent, name in names:
            pyfuse3.invalidate_entry_async(
                self.kernel_ino(parent), os.fsencode(name), ignore_enoent=True
            )
        self._evict_above = len(table) + max(1, self.node_cap // 8)
        log.info(
            "%d nodes held, cap %d: asked the kernel to forget %d",
            len(table),
            self.node_cap,
            len(names),
        )

    def _fh(self, node: Node, write: bool, ctx_pid: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(node, write)
        if self._on_open is not None:
            self._on_open(fh, node, ctx_pid, write)
        return fh

    @property
    def open_handles(self) -> dict[int, _Handle]:
        return self._handles

    # -- lookups and attributes ----------------------------------------------------------------
    @_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            parent = self._ino(parent_inode)
            if parent == self._root and name == b"..":
                return self._entry(self.overlay.node(parent))  # the mount's root has no parent
            node = self.overlay.lookup(parent, os.fsdecode(name))
        except FileNotFoundError:
            # A negative entry the kernel may cache: the view only changes under the kernel at
            # reload, which invalidates every name it adds.
            missing = pyfuse3.EntryAttributes()
            missing.st_ino = 0
            missing.entry_timeout = CACHE_TIMEOUT
            return missing
        return self._entry(node)

    def forget(self, inode_list: list[tuple[int, int]]) -> None:  # type: ignore[override]
        self.stats.ops[_FORGET].count += 1  # no reply, no latency worth a bucket
        try:
            for ino, count in inode_list:
                self.overlay.forget(self._ino(ino), count)
            if self.overlay.release_forgotten():
                self._evict_above = max(self.node_cap, len(self.overlay.table))
        except Exception:
            log.exception("forget failed")

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attrs(self.overlay.node(self._ino(inode)))

    @_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.overlay.node(self._ino(inode))
        mtime_ns = attr.st_mtime_ns if fields.update_mtime else None
        self.overlay.setattr(
            node,
            mode=stat.S_IMODE(attr.st_mode) if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=mtime_ns,
        )
        return self.attrs(node)

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(self.overlay.readlink(self.overlay.node(self._ino(inode))))

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        disk = os.statvfs(self.overlay.store.root)
        view = self.overlay.committed_view
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = disk.f_frsize
        used = (view.size + disk.f_frsize - 1) // disk.f_frsize
        s.f_blocks = used + disk.f_bavail
        s.f_bfree = s.f_bavail = disk.f_bavail
        s.f_files = view.files + disk.f_favail
        s.f_ffree = s.f_favail = disk.f_favail
        s.f_namemax = NAME_MAX
        return s

    # -- directories ------------------------------------------------------------------------------
    @_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self.overlay.mkdir(
            self._ino(parent_inode), os.fsdecode(name), mode & ~ctx.umask, ctx.uid, ctx.gid
        )
        return self._entry(node)

    @_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        kind = _SPECIAL_KINDS.get(stat.S_IFMT(mode))
        if kind is not None:
            node = self.overlay.mknod(
                self._ino(parent_inode),
                os.fsdecode(name),
                kind,
                mode & ~ctx.umask,
                rdev,
                ctx.uid,
                ctx.gid,
            )
        elif stat.S_ISREG(mode):
            node = self.overlay.create(
                self._ino(parent_inode), os.fsdecode(name), mode & ~ctx.umask, ctx.uid, ctx.gid
            )
        else:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return self._entry(node)

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.overlay.rmdir(self._ino(parent_inode), os.fsdecode(name))

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.overlay.node(self._ino(inode))
        children = self.overlay.children(node)
        listing: list[tuple[str, int]] | Cursor
        if isinstance(children, Listing) and not children.complete:
            listing = children.cursor()  # a huge directory: listed leaf by leaf
        else:
            listing = list(children.items())
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = (node.ino, listing)
        return fh

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        directory, listing = self._dirs[fh]
        if isinstance(listing, Cursor):
            names = self._streamed(directory, listing, start_id)
        else:
            names = ((i + 1, *listing[i]) for i in range(start_id, len(listing)))
        table = self.overlay.table
        for offset, name, ino in names:
            node = table.get(ino)
            if node is None:  # released since opendir (forgotten), removed, or not loaded
                try:
                    node = self.overlay.lookup(directory, name)
                except OSError:
                    continue
            elif not node.links:
                continue  # removed since opendir
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self.attrs(node), offset):
                break
            table.looked_up(node)
        if len(table) > self._evict_above:
            self._over_cap()

    def _streamed(
        self, directory: int, cursor: Cursor, start: int
    ) -> Iterator[tuple[int, str, int]]:
        """A huge directory's (offset, name, ino) from ``start``, a node made for each name
        as it is listed (0 if it is gone: the caller looks it up)."""
        # One readdir request runs to its end before any other: the listing stays the same.
        node = self.overlay.table.get(directory)
        children = node.children if node is not None else None
        for offset, name, entry in cursor.names_from(start):
            ino = None
            if isinstance(children, Listing):
                ino = children.node_of(name, entry, cursor.tree)
            yield offset, name, ino or 0

    @_errors
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    # -- names --------------------------------------------------------------------------------------
    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.overlay.unlink(self._ino(parent_inode), os.fsdecode(name))

    @_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self.overlay.symlink(
            self._ino(parent_inode), os.fsdecode(name), os.fsdecode(target), ctx.uid, ctx.gid
        )
        return self._entry(node)

    @_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self.overlay.rename(
            self._ino(parent_inode_old),
            os.fsdecode(name_old),
            self._ino(parent_inode_new),
            os.fsdecode(name_new),
            flags,
        )

    @_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self.overlay.link(
            self._ino(inode), self._ino(new_parent_inode), os.fsdecode(new_name)
        )
        return self._entry(node)

    # -- files ----------------------------------------------------------------------------------------
    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.overlay.node(self._ino(inode))
        write = (flags & os.O_ACCMODE) != os.O_RDONLY
        self.overlay.open(node, write=write, truncate=bool(flags & os.O_TRUNC))
        return pyfuse3.FileInfo(fh=self._fh(node, write, ctx.pid), keep_cache=True)

    @_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self.overlay.create(
            self._ino(parent_inode), os.fsdecode(name), mode & ~ctx.umask, ctx.uid, ctx.gid
        )
        self.overlay.open(node, write=True, truncate=False)
        fh = self._fh(node, True, ctx.pid)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), self._entry(node)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        node = self._handles[fh].node
        if self.spawn is not None:  # else no read-ahead: read() verifies inline
            plan = self.overlay.read_plan(node, off, size)
            for digest in plan.ahead:
                if digest not in self._verifying:
                    self.spawn(self._verify_quietly, digest)
            for digest in plan.first:
                await self._verify(digest)
        data = self.overlay.read(node, off, size)
        stats = self.stats
        stats.bytes_read += len(data)
        if node.scratch is None and node.chunks:
            stats.blob_reads += 1
            stats.blob_read_bytes += len(data)
        return data

    async def _verify(self, digest: Digest, limiter: trio.CapacityLimiter | None = None) -> None:
        """Verifies a chunk in a worker thread; concurrent readers of it wait for one check."""
        running = self._verifying.get(digest)
        if running is not None:
            await running.wait()
            if digest in self._verifying:  # that check failed: fail this read the same way
                return self.overlay.verify_chunk(digest)
            return None
        done = self._verifying[digest] = trio.Event()
        try:
            await trio.to_thread.run_sync(self.overlay.verify_chunk, digest, limiter=limiter)
            del self._verifying[digest]
        finally:
            done.set()
        return None

    async def _verify_quietly(self, digest: Digest) -> None:
        try:
            await self._verify(digest, self._ahead_limiter)
        except (VolfsError, OSError) as exc:
            # A read-ahead: the read that needs this chunk reports the error to its caller.
            log.debug("read-ahead check of chunk %s failed: %s", digest, exc)

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handles[fh]
        if not handle.write:
            raise pyfuse3.FUSEError(errno.EBADF)
        written = self.overlay.write(handle.node, off, buf)
        self.stats.bytes_written += written
        return written

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        self.overlay.fsync(self._handles[fh].node, datasync)

    @_errors
    async def flush(self, fh: int) -> None:
        # Nothing to do, but it must be answered: a filesystem that answers ENOSYS once is
        # never sent FLUSH again (the kernel's no_flush), and then a close(2) whose cached
        # writes the kernel could not send, because this daemon died, returns 0 and the
        # writer never learns its data is gone. Answered, the FLUSH that follows them fails
        # on the dead connection and close(2) reports it (ENOTCONN).
        return None

    @_errors
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if self._on_release is not None:
            self._on_release(fh)
        self.overlay.release(handle.node, write=handle.write)

    # -- extended attributes --------------------------------------------------------------------------
    @_errors
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        key = os.fsdecode(name)
        if key.startswith("user.volfs."):
            raise pyfuse3.FUSEError(errno.EPERM)
        self.overlay.setxattr(self.overlay.node(self._ino(inode)), key, value)

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        key = os.fsdecode(name)
        if key == XATTR_CONTROL and inode == pyfuse3.ROOT_INODE and self.control_info:
            return self.control_info
        return self.overlay.getxattr(self.overlay.node(self._ino(inode)), key)

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [os.fsencode(k) for k in self.overlay.listxattr(self.overlay.node(self._ino(inode)))]

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.overlay.removexattr(self.overlay.node(self._ino(inode)), os.fsdecode(name))
