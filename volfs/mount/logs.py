"""A mount daemon's log: where it goes, how big it grows, and when it is removed.

Owns:

- :func:`log_path`: a background mount logs to ``<store>/run/<mount id>.log`` (the launcher
  points the daemon's stdout and stderr there too, for what is not a log record: a crash's
  traceback, libfuse's own messages);
- :func:`setup`: the daemon's handler. To that file: rotated by size (``MAX_BYTES``), with
  at most ``BACKUPS`` older files (``<id>.log.1`` …), stdout and stderr following each
  rotation onto the new file; or, in the foreground, to stderr (journald);
- :func:`mark_ended` / :func:`remove_expired`: a mount that ended cleanly (its changes
  committed or deliberately discarded) leaves ``<id>.ended``; its log files go once that
  is older than ``RETENTION_SECONDS``. Checked when a mount starts and when one ends (no
  background sleeper). A mount that crashed leaves no marker: its log stays for the
  operator, and ``volfs recover`` (:func:`note`) adds what it did to it, then marks it.

Must not: import pyfuse3 or trio; remove a log without a marker.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from volfs.config import LOG_LEVELS

#: A log file is rotated past this size ...
MAX_BYTES = 10 << 20
#: ... and at most this many older ones are kept: a mount's logs never exceed ~60 MiB.
BACKUPS = 5
#: How long the logs of a mount that ended cleanly are kept.
RETENTION_SECONDS = 7 * 86400
FORMAT = "%(asctime)s volfs[%(process)d] %(levelname)s %(message)s"
LEVELS = LOG_LEVELS
_ENDED = ".ended"


def log_path(run_dir: Path, mount_id: str) -> Path:
    return run_dir / f"{mount_id}.log"


class _RotatingLog(logging.handlers.RotatingFileHandler):
    """Rotates by size; the process's stdout and stderr follow onto the new file."""

    def __init__(self, path: str, max_bytes: int, backups: int, follow: bool) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._follow = follow
        self._redirect()

    def doRollover(self) -> None:
        super().doRollover()
        self._redirect()

    def _redirect(self) -> None:
        if self._follow and self.stream is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self.stream.fileno(), 1)
            os.dup2(self.stream.fileno(), 2)


def setup(
    level: str = "INFO",
    file: str | os.PathLike[str] | None = None,
    *,
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
    follow_stdio: bool = True,
    logger: logging.Logger | None = None,
) -> logging.Handler:
    """Sends the log records of ``logger`` (the root: the whole process) to ``file``
    (rotated) or to stderr; returns the handler (the logger's only one)."""
    handler: logging.Handler
    if file is not None:
        handler = _RotatingLog(os.fspath(file), max_bytes, backups, follow_stdio)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logger if logger is not None else logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def _files_of(run_dir: Path, mount_id: str) -> list[Path]:
    base = log_path(run_dir, mount_id)
    return [base, *(p for p in run_dir.glob(f"{mount_id}.log.*") if p.suffix[1:].isdigit())]


def mark_ended(run_dir: Path, mount_id: str, clock: Callable[[], float] = time.time) -> None:
    """Records that this mount ended cleanly: its logs may go after the retention period."""
    marker = run_dir / f"{mount_id}{_ENDED}"
    try:
        marker.touch(mode=0o600)
        now = clock()
        os.utime(marker, (now, now))
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot mark the log of %s ended: %s", mount_id, exc)


def remove_expired(
    run_dir: Path,
    *,
    retention: float = RETENTION_SECONDS,
    clock: Callable[[], float] = time.time,
) -> list[Path]:
    """Removes the logs of mounts that ended cleanly more than ``retention`` seconds ago;
    returns the files removed."""
    now = clock()
    removed = []
    for marker in run_dir.glob(f"*{_ENDED}"):
        try:
            if now - marker.stat().st_mtime <= retention:
                continue
        except FileNotFoundError:
            continue  # another mount's cleanup got there first
        mount_id = marker.name[: -len(_ENDED)]
        for path in [*_files_of(run_dir, mount_id), marker]:
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logging.getLogger(__name__).warning("cannot remove old log %s: %s", path, exc)
    return removed


def note(run_dir: Path, mount_id: str, level: int, message: str) -> None:
    """Adds one line to a (usually crashed) mount's log, from another process."""
    record = logging.LogRecord(__name__, level, __file__, 0, message, None, None)
    try:
        with open(log_path(run_dir, mount_id), "a", encoding="utf-8") as f:
            f.write(logging.Formatter(FORMAT).format(record) + "\n")
    except OSError:
        pass  # only a courtesy to whoever reads that log; the caller reports the outcome
