"""Helpers shared by the reliability campaigns (crash, load, model, faults, bad input).

Not a pytest plugin: the campaign tests import it like ``mounting``.

- Sizes: the campaigns run a CI size by default and their full size with
  ``VOLFS_CAMPAIGN=full`` in the environment (``campaign_size(ci, full)``).
- Reading a store from the test process: :func:`read_tree` walks a snapshot's trees and
  reads every file through the blob store (digest-verified), so a check sees exactly the
  bytes a reader would get. ``DIR`` stands for a directory.
- Several real mounts at once: :func:`mounts` starts every daemon before waiting for any
  (8 daemons on 2 cores start in ~4 s instead of ~10 s) and stops them all, in parallel,
  whatever happens — unmount by path, then the daemon by pid.
- ``fsck``: runs ``volfs fsck`` (exit code 0 = clean).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mounting import MOUNT_DEADLINE, Mount, answers, run_volfs, stop_daemon, volfs_mountpoints

from volfs.config import CHUNK_SIZE
from volfs.core.tree import Entry, Kind
from volfs.store import Store

FULL = os.environ.get("VOLFS_CAMPAIGN", "").lower() == "full"
DIR = "<dir>"
Content = bytes | str  # file bytes, or DIR


def campaign_size(ci: int, full: int) -> int:
    return full if FULL else ci


# -- reading what a store holds --------------------------------------------------------------------
def entry_bytes(store: Store, entry: Entry) -> bytes:
    """A committed file's bytes: its chunks, holes and short blobs read as zeros."""
    content = bytearray(entry.size)
    for index, digest in entry.chunks:
        data = store.blobs.get(digest)[: max(0, entry.size - index * CHUNK_SIZE)]
        content[index * CHUNK_SIZE : index * CHUNK_SIZE + len(data)] = data
    return bytes(content)


def read_entry_tree(store: Store, root: Entry) -> dict[str, Content]:
    """path -> bytes (files) or DIR, below a directory entry."""
    out: dict[str, Content] = {}

    def walk(entry: Entry, prefix: str) -> None:
        assert entry.tree is not None
        for child in store.catalog.get_tree(entry.tree).entries:
            path = f"{prefix}{child.name}"
            if child.kind is Kind.DIR:
                out[path] = DIR
                walk(child, path + "/")
            elif child.kind is Kind.FILE:
                out[path] = entry_bytes(store, child)
            else:
                out[path] = "symlink:" + child.target

    walk(root, "")
    return out


def volume_id(store: Store, name: str, environment: str = "main") -> str:
    return store.catalog.get_volume(environment, name).id


def head_id(store: Store, name: str) -> str:
    return store.catalog.get_volume("main", name).head


def read_tree(store: Store, snapshot_id: str) -> dict[str, Content]:
    return read_entry_tree(store, store.catalog.get_snapshot(snapshot_id).root)


def read_local(root: Path) -> dict[str, Content]:
    """The same shape for a local directory (a mount, say)."""
    out: dict[str, Content] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + "/"
        for d in dirs:
            out[prefix + d] = DIR
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[prefix + f] = fh.read()
    return out


def describe_diff(expected: dict[str, Content], actual: dict[str, Content], limit: int = 8) -> str:
    lines = []
    for path in sorted(set(expected) | set(actual)):
        want, got = expected.get(path), actual.get(path)
        if want != got:
            lines.append(f"  {path}: expected {_short(want)}, got {_short(got)}")
    more = f"\n  … and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def _short(value: Content | None) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return value
    head = value[:24]
    return f"{len(value)} bytes {head!r}{'…' if len(value) > 24 else ''}"


def fsck(store: Path) -> subprocess.CompletedProcess[str]:
    return run_volfs(store, "fsck", check=False, timeout=300)


# -- several mounts at once ------------------------------------------------------------------------
def stop_mount(mount: Mount) -> None:
    """Unmounts by path (lazily if it must), then ends the daemon by pid."""
    stop_daemon(mount.proc, mount.path)


@contextlib.contextmanager
def mounts(
    store: Path, specs: list[tuple[str, Path]], *extra: str, autocommit: str = "0"
) -> Iterator[list[Mount]]:
    """Mounts (volume name, path) pairs all at once; always stops every one of them."""
    env = {**os.environ, "VOLFS_STORE": str(store)}
    started: list[Mount] = []
    try:
        for name, path in specs:
            path.mkdir(parents=True, exist_ok=True)
            log = path.parent / f"{path.name}.daemon.log"
            with open(log, "ab") as log_file:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "volfs",
                        "mount",
                        name,
                        str(path),
                        "--foreground",
                        "--autocommit",
                        autocommit,
                        *extra,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    env=env,
                )
            started.append(Mount(path, store, proc, log))
        deadline = time.monotonic() + MOUNT_DEADLINE * 2
        for m in started:
            while str(m.path) not in volfs_mountpoints() or not answers(m.path):
                if m.proc.poll() is not None:
                    raise AssertionError(
                        f"the daemon of {m.path} exited with {m.proc.returncode}:\n{m.log_text()}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(f"{m.path} was not ready in time:\n{m.log_text()}")
                time.sleep(0.02)
        yield started
    except BaseException:
        for m in started:
            sys.stderr.write(f"--- daemon log of {m.path} ---\n{m.log_text()[-4000:]}\n")
        raise
    finally:
        with ThreadPoolExecutor(max(1, len(started))) as pool:
            list(pool.map(stop_mount, started))


def control_socket(path: Path) -> str:
    return json.loads(os.getxattr(path, "user.volfs.control"))["socket"]


def summary(line: str) -> None:
    """A figure for the closing note: printed (pytest -s shows it) and kept in the report."""
    print(f"\n{line}")
    sys.stdout.flush()


def kill9(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def as_json(value: Any) -> str:
    return json.dumps(value, default=str)
