"""The clock a mount stamps inode times with: the kernel's own.

The kernel stamps a FUSE inode's times itself where it can (with the writeback cache it
sets a regular file's mtime on every write, and the time of a ``touch``) and uses the
*coarse* realtime clock for that (``current_time()``: the time at the last tick, up to a
jiffy behind ``CLOCK_REALTIME``). A daemon that stamped creates, renames and writes with
the fine clock would hand out times up to a jiffy *ahead* of the kernel's, so a file
touched right after it was created could get an mtime older than its creation's, and
``make`` and other tools that compare mtimes would see time run backwards. Every time
volfs stamps comes from here.
"""

from __future__ import annotations

import time

#: Linux's CLOCK_REALTIME_COARSE (the time module does not name it).
_COARSE = 5


def now_ns() -> int:
    """Now, as the kernel stamps inode times."""
    return time.clock_gettime_ns(_COARSE)
