"""The Python-FUSE ceiling: a minimal in-memory pyfuse3 + trio filesystem.

It does nothing a filesystem could skip — no store, no journal, no overlay: files are
bytearrays in a dict — so what it reaches on a workload is the most any pyfuse3 daemon
can reach on this machine. ``scripts/bench`` runs every comparative workload on it beside
native and volfs (the ``ceiling`` column), so volfs's ratios can be read against it.

    python scripts/fuse_ceiling.py MOUNTPOINT     (serves until unmounted)
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

import pyfuse3
import trio

TIMEOUT = 300.0


class Node:
    __slots__ = ("ino", "mode", "data", "children", "mtime")

    def __init__(self, ino: int, mode: int) -> None:
        self.ino = ino
        self.mode = mode
        self.data = bytearray()
        self.children: dict[bytes, int] = {}
        self.mtime = time.time_ns()


class CeilingFS(pyfuse3.Operations):
    #: The kernel-side settings volfs uses (and keep_cache, long timeouts below), so the
    #: ceiling differs from volfs only in the work its handlers do.
    enable_writeback_cache = True

    def __init__(self) -> None:
        super().__init__()
        self.nodes = {pyfuse3.ROOT_INODE: Node(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755)}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.dirs: dict[int, list[tuple[bytes, int]]] = {}

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.st_mode = node.mode
        a.st_nlink = 1
        a.st_size = len(node.data)
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
        raise pyfuse3.FUSEError(errno.ENODATA)

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
        return bytes(self.nodes[fh].data[off : off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        data = self.nodes[fh].data
        data[off : off + len(buf)] = buf
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
            del node.data[attr.st_size :]
            node.data.extend(b"\0" * (attr.st_size - len(node.data)))
        return self.attrs(node)

    async def symlink(
        self, parent: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self._new(parent, name, stat.S_IFLNK | 0o777)
        node.data[:] = target
        return self.attrs(node)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return bytes(self.nodes[inode].data)

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


def main() -> None:
    mountpoint = sys.argv[1]
    pyfuse3.init(CeilingFS(), mountpoint, {"fsname=ceiling", "default_permissions", "allow_other"})
    try:
        trio.run(pyfuse3.main, 1, 1)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    os.umask(0)
    main()
