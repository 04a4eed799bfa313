"""A mount's counters: what its daemon did and how well, for ``volfs status``/``stats`` and
``/metrics``.

Owns :class:`MountStats` (one per daemon) and the fixed latency buckets. The FUSE adapter
(``fs.py``) and the daemon bump plain ints here; readers turn them into JSON
(:meth:`MountStats.snapshot`) or Prometheus families (``metrics.py``) only when asked.

Cost on the hot path, per FUSE request: one ``perf_counter_ns()`` pair, a ``bit_length``
for the bucket, and four integer increments on preallocated objects (no lock, no dict,
nothing allocated but the ints themselves).

Concurrency: written only from the trio loop's thread; read from there (control requests)
or from the metrics HTTP thread, which may see a request counted a moment before its
bucket: harmless for statistics, and no reader ever writes.

Must not: import pyfuse3 or trio; do I/O.
"""

from __future__ import annotations

import time
from typing import Any

#: Latency buckets by powers of two of 1,024 ns: bucket ``k`` holds requests that took less
#: than ``2**(k + 10)`` ns (``k = (ns >> 10).bit_length()``), from ~1 µs to ~34 s; the last
#: one is everything slower (Prometheus' ``+Inf``).
BUCKETS = 26
BUCKET_BOUNDS_SECONDS = tuple((1 << (k + 10)) / 1e9 for k in range(BUCKETS - 1))

#: The FUSE requests counted, by the name of the pyfuse3 handler that serves them (a
#: handler not named here gets its place when it is decorated: see :func:`op_index`).
OPS = [
    "lookup",
    "forget",
    "getattr",
    "setattr",
    "readlink",
    "statfs",
    "mkdir",
    "mknod",
    "rmdir",
    "opendir",
    "readdir",
    "releasedir",
    "fsyncdir",
    "unlink",
    "symlink",
    "rename",
    "link",
    "open",
    "create",
    "read",
    "write",
    "fsync",
    "flush",
    "release",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
]
OP_INDEX = {name: i for i, name in enumerate(OPS)}


def op_index(name: str) -> int:
    """The index of an opcode's counters; a new one is added (at import time, when fs.py's
    handlers are decorated: before any MountStats exists)."""
    if name not in OP_INDEX:
        OP_INDEX[name] = len(OPS)
        OPS.append(name)
    return OP_INDEX[name]


class OpStats:
    """One FUSE opcode: requests, errors (any errno answered), time spent, latency buckets."""

    __slots__ = ("buckets", "count", "errors", "total_ns")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.total_ns = 0
        self.buckets = [0] * BUCKETS


class MountStats:
    """Everything a mount counts. Fields are public ints written in place by their owners."""

    def __init__(self) -> None:
        self.started = time.time()
        self.ops = tuple(OpStats() for _ in OPS)
        #: Bytes answered to READ and taken from WRITE requests.
        self.bytes_read = 0
        self.bytes_written = 0
        #: READ requests of committed content: past the page cache, served from a blob.
        self.blob_reads = 0
        self.blob_read_bytes = 0
        # Commits: every attempt, by result ("published", "empty", "failed").
        self.commits = {"published": 0, "empty": 0, "failed": 0}
        self.commit_files = 0
        self.commit_bytes = 0
        self.commit_overwrites = 0
        self.last_commit_time: float | None = None
        self.last_commit_seconds: float | None = None
        self.last_commit_result: str | None = None
        self.last_commit_snapshot: str | None = None
        self.last_commit_error: str | None = None
        self.last_published_time: float | None = None
        # Reloads, by result ("ok", "refused": open files or a mount that keeps changing,
        # "failed": anything else).
        self.reloads = {"ok": 0, "refused": 0, "failed": 0}
        self.last_reload_time: float | None = None
        self.last_reload_ok_time: float | None = None
        self.last_reload_result: str | None = None

    # -- commits and reloads (not the hot path: a few per minute) ---------------------------
    def commit_finished(
        self,
        seconds: float,
        *,
        snapshot: str | None = None,
        files: int = 0,
        size: int = 0,
        overwrites: int = 0,
        error: str | None = None,
    ) -> None:
        result = "failed" if error is not None else "published" if snapshot else "empty"
        self.commits[result] += 1
        self.last_commit_time = time.time()
        self.last_commit_seconds = seconds
        self.last_commit_result = result
        self.last_commit_error = error
        if snapshot:
            self.last_commit_snapshot = snapshot
            self.last_published_time = self.last_commit_time
            self.commit_files += files
            self.commit_bytes += size
            self.commit_overwrites += overwrites

    def reload_finished(self, result: str) -> None:
        self.reloads[result] += 1
        self.last_reload_time = time.time()
        self.last_reload_result = result
        if result == "ok":
            self.last_reload_ok_time = self.last_reload_time

    # -- readers ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON (``volfs status --json``, the ``stats`` control request)."""
        requests = {}
        for name, op in zip(OPS, self.ops, strict=True):
            if op.count:
                requests[name] = {
                    "count": op.count,
                    "errors": op.errors,
                    "seconds": op.total_ns / 1e9,
                }
        return {
            "time": time.time(),
            "started": self.started,
            "requests": requests,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "blob_reads": self.blob_reads,
            "blob_read_bytes": self.blob_read_bytes,
            "commits": dict(self.commits),
            "commit_files": self.commit_files,
            "commit_bytes": self.commit_bytes,
            "commit_overwrites": self.commit_overwrites,
            "last_commit": {
                "time": self.last_commit_time,
                "seconds": self.last_commit_seconds,
                "result": self.last_commit_result,
                "error": self.last_commit_error,
            },
            "last_committed": self.last_published_time,
            "last_snapshot": self.last_commit_snapshot,
            "reloads": dict(self.reloads),
            "last_reload": {"time": self.last_reload_time, "result": self.last_reload_result},
            "last_reloaded": self.last_reload_ok_time,
        }


def cumulative(buckets: list[int]) -> list[tuple[str, int]]:
    """Prometheus' cumulative ``le`` buckets of one opcode, ending with ``+Inf``."""
    out = []
    total = 0
    for k, bound in enumerate(BUCKET_BOUNDS_SECONDS):
        total += buckets[k]
        out.append((repr(bound), total))
    out.append(("+Inf", total + buckets[BUCKETS - 1]))
    return out
