"""The Python-FUSE ceiling: a minimal in-memory pyfuse3 + trio filesystem.

It does nothing a filesystem could skip — no store, no journal, no overlay: files are
bytearrays in a dict — so what it reaches on a workload is the most any pyfuse3 daemon
can reach on this machine. ``scripts/bench`` runs every comparative workload on it beside
native and volfs (the ``ceiling`` column), so volfs's ratios can be read against it.

    python scripts/fuse_ceiling.py [--no-xattrs] [--count FILE] MOUNTPOINT
                                                  (serves until unmounted)

``--no-xattrs`` answers GETXATTR with ENOSYS, after which the kernel sends none: every
write(2) then skips its ``security.capability`` round trip, as it would for a daemon that
asked for FUSE_HANDLE_KILLPRIV_V2 (which pyfuse3 3.5 on libfuse 3.14 cannot).
``--count FILE`` writes the number of requests of each kind to FILE (JSON) when it ends:
the kernel sends volfs the same requests for the same workload.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

TIMEOUT = 300.0
BLOCK = 1 << 20


class Content:
    """A file's bytes in blocks of BLOCK: a write copies its bytes once, whatever the size
    of the file (one bytearray would be copied whole each time it grows)."""

    __slots__ = ("blocks", "size")

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self.size = 0

    def read(self, off: int, size: int) -> bytes:
        end = min(off + size, self.size)
        parts = []
        while off < end:
            index, within = divmod(off, BLOCK)
            count = min(end - off, BLOCK - within)
            block = self.blocks.get(index, b"")
            parts.append(bytes(block[within : within + count]).ljust(count, b"\0"))
            off += count
        return b"".join(parts)

    def write(self, off: int, buf: bytes) -> None:
        view, done = memoryview(buf), 0
        while done < len(buf):
            index, within = divmod(off + done, BLOCK)
            count = min(len(buf) - done, BLOCK - within)
            block = self.blocks.setdefault(index, bytearray())
            if len(block) < within:
                block.extend(bytes(within - len(block)))
            block[within : within + count] = view[done : done + count]
            done += count
        self.size = max(self.size, off + len(buf))

    def truncate(self, size: int) -> None:
        for index in [i for i in self.blocks if i * BLOCK >= size]:
            del self.blocks[index]
        last = self.blocks.get(size // BLOCK)
        if last is not None:
            del last[size % BLOCK :]
        self.size = size


class Node:
    __slots__ = ("ino", "mode", "data", "children", "mtime")

    def __init__(self, ino: int, mode: int) -> None:
        self.ino = ino
        self.mode = mode
        self.data = Content()
        self.children: dict[bytes, int] = {}
        self.mtime = time.time_ns()


class CeilingFS(pyfuse3.Operations):
    #: The kernel-side settings volfs uses (and keep_cache, long timeouts below), so the
    #: ceiling differs from volfs only in the work its handlers do.
    enable_writeback_cache = True

    def __init__(self, xattrs: bool = True) -> None:
        super().__init__()
        self.xattrs = xattrs
        self.nodes = {pyfuse3.ROOT_INODE: Node(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755)}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.dirs: dict[int, list[tuple[bytes, int]]] = {}

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.st_mode = node.mode
        a.st_nlink = 1
        a.st_size = node.data.size
        a.st_blksize = 4096
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = node.mtime
        a.entry_timeout = a.attr_timeout = TIMEOUT
        return a

    async def lookup(
        self, parent: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        ino = self.nodes[parent].children.get(name)
        if ino is None:
            missing = pyfuse3.EntryAttributes()
            missing.st_ino = 0
            missing.entry_timeout = TIMEOUT
            return missing
        return self.attrs(self.nodes[ino])

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attrs(self.nodes[inode])

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.ENODATA if self.xattrs else errno.ENOSYS)

    def _new(self, parent: int, name: bytes, mode: int) -> Node:
        node = Node(self.next_ino, mode)
        self.next_ino += 1
        self.nodes[node.ino] = node
        self.nodes[parent].children[name] = node.ino
        return node

    async def mkdir(
        self, parent: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self.attrs(self._new(parent, name, stat.S_IFDIR | (mode & 0o7777)))

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self._new(parent, name, stat.S_IFREG | (mode & 0o7777))
        return pyfuse3.FileInfo(fh=node.ino, keep_cache=True), self.attrs(node)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self.nodes[fh].data.read(off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.nodes[fh].data.write(off, buf)
        return len(buf)

    async def release(self, fh: int) -> None:
        return None

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.nodes[inode]
        if fields.update_mode:
            node.mode = (node.mode & ~0o7777) | (attr.st_mode & 0o7777)
        if fields.update_mtime:
            node.mtime = attr.st_mtime_ns
        if fields.update_size:
            node.data.truncate(attr.st_size)
        return self.attrs(node)

    async def symlink(
        self, parent: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self._new(parent, name, stat.S_IFLNK | 0o777)
        node.data.write(0, target)
        return self.attrs(node)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.nodes[inode]
        return node.data.read(0, node.data.size)

    async def unlink(self, parent: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        # The node stays: the kernel may still hold it (open, or dirty pages to write back).
        del self.nodes[parent].children[name]

    async def rmdir(self, parent: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if self.nodes[self.nodes[parent].children[name]].children:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        await self.unlink(parent, name, ctx)

    async def rename(
        self,
        parent_old: int,
        name_old: bytes,
        parent_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self.nodes[parent_new].children[name_new] = self.nodes[parent_old].children.pop(name_old)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self.dirs[inode] = list(self.nodes[inode].children.items())
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.dirs[fh]
        for index in range(start_id, len(listing)):
            name, ino = listing[index]
            if not pyfuse3.readdir_reply(token, name, self.attrs(self.nodes[ino]), index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    def forget(self, inode_list: list[tuple[int, int]]) -> None:  # type: ignore[override]
        return None


def counting(fs: CeilingFS, counts: Counter[str]) -> None:
    """Counts every request ``fs`` answers (or refuses), by kind."""

    def wrap(name: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(handler):  # forget: pyfuse3 calls it, no reply

            @functools.wraps(handler)
            def counted_now(*args: Any) -> Any:
                counts[name] += 1
                return handler(*args)

            return counted_now

        @functools.wraps(handler)
        async def counted(*args: Any) -> Any:
            counts[name] += 1
            return await handler(*args)

        return counted

    for name, handler in vars(pyfuse3.Operations).items():
        if inspect.iscoroutinefunction(handler):  # a request handler
            setattr(fs, name, wrap(name, getattr(fs, name)))


def tune_bdi(mountpoint: str) -> None:
    """The backing-device tuning volfs's daemon applies (read-ahead 1 MiB, the dirty-page
    share 1% -> 100%): without it the kernel throttles a FUSE writer to 1% (strictlimit)."""
    os.stat(mountpoint)  # answered: INIT is done, so the values set now stick
    device = os.stat(mountpoint).st_dev
    bdi = f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}"
    for name, value in (("read_ahead_kb", 1024), ("max_ratio", 100)):
        with open(f"{bdi}/{name}", "w") as f:
            f.write(str(value))


async def serve(mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pyfuse3.main, 1, 1)
        if os.getuid() == 0:
            await trio.to_thread.run_sync(tune_bdi, mountpoint)


def main() -> None:
    args, mountpoint = sys.argv[1:-1], sys.argv[-1]
    fs = CeilingFS(xattrs="--no-xattrs" not in args)
    counts: Counter[str] = Counter()
    if "--count" in args:
        counting(fs, counts)
    pyfuse3.init(fs, mountpoint, {"fsname=ceiling", "default_permissions", "allow_other"})
    try:
        trio.run(serve, mountpoint)
    finally:
        pyfuse3.close(unmount=True)
        if "--count" in args:
            with open(args[args.index("--count") + 1], "w") as f:
                json.dump(dict(counts), f)


if __name__ == "__main__":
    os.umask(0)
    main()
