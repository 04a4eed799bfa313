"""Liveness by flock: a process proves it is alive by holding a lock file, not by its pid.

A pid means nothing outside its PID namespace: two containers sharing a store each have
a pid 7, and a pid recorded in one may be a kernel thread, an unrelated process or nobody
in the other. An exclusive ``flock`` on a file in the store is held by an open file
description, whichever namespace it lives in, and the kernel drops it when the holder
dies however it dies (kill -9 included). So a record that names a lock file answers
"is its writer still alive?" for every process that can open the store.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def hold(path: str | Path) -> int:
    """Creates ``path`` if needed and takes its exclusive lock; returns the fd holding it.

    Raises ``BlockingIOError`` if a live process already holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def held(path: str | Path) -> bool:
    """True if some live process holds the exclusive lock on ``path``.

    A missing file is not held. Probing takes the lock for an instant when nobody holds it;
    closing our fd drops it again."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
