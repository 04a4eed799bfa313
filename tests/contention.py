"""Concurrent committers on one volume: the contention bench rows and their tests share this.

Each writer is its own process (a container's ``batch_upload``, without the container):
it opens the store, says ``ready``, waits for ``go`` on stdin so that all start together,
then commits ``commits`` new files of its own into one shared directory, one commit each,
and prints one JSON line: its commit latencies and the attempts each commit took.

    python tests/contention.py STORE VOLUME_ID WRITER COMMITS    (one writer, as
                                                                   run_writers starts it)
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from volfs.store import Store

ROOT = Path(__file__).resolve().parent.parent
DIRECTORY = "shared"


def file_name(writer: int, index: int) -> str:
    return f"w{writer:03d}-{index:04d}"


def content(writer: int, index: int) -> bytes:
    return f"written by {writer} as commit {index}\n".encode()


@dataclass
class Curve:
    """What ``writers`` concurrent committers achieved together."""

    writers: int
    commits: int
    seconds: float
    latencies: list[float]
    attempts: list[int]

    @property
    def commits_per_s(self) -> float:
        return self.commits / self.seconds

    def latency(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def retries_per_commit(self) -> float:
        return statistics.fmean(a - 1 for a in self.attempts)


def committed_files(store: Store, volume_id: str) -> dict[str, bytes]:
    """Every file of the volume's head, by path, with its content."""
    from volfs.core.tree import Kind, walk

    out = {}
    for path, entry in walk(store.catalog, store.catalog.head(volume_id).root):
        if entry.kind is Kind.FILE:
            out["/".join(path)] = b"".join(store.blobs.get(d) for _, d in entry.chunks)
    return out


def run_writers(stores: Sequence[Path], volume_id: str, writers: int, commits: int) -> Curve:
    """``writers`` processes (spread over ``stores``, one per machine) commit ``commits`` each."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                str(stores[w % len(stores)]),
                volume_id,
                str(w),
                str(commits),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == "ready\n", f"writer did not start: {line!r}"
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
        reports = []
        for proc in procs:
            assert proc.stdout is not None
            out = proc.stdout.read()
            assert proc.wait(timeout=600) == 0, f"writer exited {proc.returncode}"
            reports.append(json.loads(out))
        seconds = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
    return Curve(
        writers,
        writers * commits,
        seconds,
        [t for r in reports for t in r["latencies"]],
        [a for r in reports for a in r["attempts"]],
    )


def _writer(store_path: str, volume_id: str, writer: int, commits: int) -> None:
    sys.path.insert(0, str(ROOT))
    from volfs.blobs import put_stream
    from volfs.core.changes import ALL_META, Changes, Dir, Put
    from volfs.core.tree import Entry, Kind, dense, lookup
    from volfs.snapshots.commit import commit_changes
    from volfs.store import Store

    store = Store.open(store_path)
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\n"
    latencies, attempts = [], []
    for i in range(commits):
        digests, size = put_stream(store.blobs, io.BytesIO(content(writer, i)))
        entry = Entry(file_name(writer, i), Kind.FILE, 0o644, size=size, chunks=dense(digests))

        def build(head: Entry, entry: Entry = entry) -> Changes:
            # As batch_upload builds it: the directory passed through (or created), the file.
            parent = lookup(store.catalog, head, (DIRECTORY,))
            changes: Changes = {
                (DIRECTORY,): Dir(parent, parent, frozenset())
                if parent is not None
                else Dir(Entry(DIRECTORY, Kind.DIR, 0o755), None, ALL_META)
            }
            changes[(DIRECTORY, entry.name)] = Put(
                entry, lookup(store.catalog, head, (DIRECTORY, entry.name))
            )
            return changes

        t0 = time.perf_counter()
        result = commit_changes(store.catalog, volume_id, build, origin=f"writer {writer}")
        latencies.append(time.perf_counter() - t0)
        attempts.append(result.attempts)
    print(json.dumps({"latencies": latencies, "attempts": attempts}), flush=True)


if __name__ == "__main__":
    _writer(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
