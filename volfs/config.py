"""Where the store lives, and the tunables that are not worth a flag."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # every command imports this module; most never need a path object
    from pathlib import Path

DEFAULT_ENVIRONMENT = "main"
#: Files are split into chunks of this size. 8 MiB like Modal's blocks: large enough that a
#: 1 GiB file is 128 blobs (cheap to list in a tree entry), small enough that a random read
#: of a cold file verifies little more than it needs.
CHUNK_SIZE = 8 * 1024 * 1024
#: The largest file (EFBIG past it): the kernel's own limit for a FUSE file
#: (MAX_LFS_FILESIZE, 8 EiB - 1). Files are sparse, so a size costs nothing until written.
MAX_FILE_SIZE = (1 << 63) - 1
#: The longest name of one path component, in bytes (ENAMETOOLONG past it), as on ext4.
NAME_MAX = 255
#: Size of the pieces ``Volume.read_file`` yields.
READ_CHUNK = 1024 * 1024
DEFAULT_AUTOCOMMIT_SECONDS = 5.0
#: The nodes (inodes in memory, ~1 KB each) a mount holds before it asks the kernel to
#: forget the entries of the directories it listed longest ago (README, "What things
#: cost"); ``VOLFS_MAX_NODES`` sets another.
MAX_NODES = 200_000


def default_store_path() -> Path:
    from pathlib import Path

    explicit = os.environ.get("VOLFS_STORE")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/volfs")
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local/share"
    )
    return Path(data_home) / "volfs"


def default_environment() -> str:
    return os.environ.get("VOLFS_ENV") or DEFAULT_ENVIRONMENT


def max_nodes() -> int:
    """The mount's node cap: ``VOLFS_MAX_NODES`` or :data:`MAX_NODES`."""
    from volfs.errors import InvalidError

    value = os.environ.get("VOLFS_MAX_NODES", "").strip()
    if not value:
        return MAX_NODES
    if not value.isdigit() or int(value) < 1:
        raise InvalidError(f"VOLFS_MAX_NODES must be a positive number of nodes, not {value!r}")
    return int(value)


#: The levels ``volfs mount --log-level`` takes (the daemon's log, ``mount/logs.py``).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
