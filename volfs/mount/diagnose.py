"""Why FUSE cannot mount here, in words a user can act on.

libfuse says only ``fuse_session_mount failed`` (the reason goes to the daemon's stderr,
a log the user has not opened). The usual causes are few and each can be checked.
"""

from __future__ import annotations

import os
import shutil
import stat

CAP_SYS_ADMIN = 21


def _effective_caps() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


def why_fuse_cannot_mount() -> str | None:
    """The likely reason a FUSE mount fails for this process, with the fix; None if none
    of the known causes applies."""
    if not os.path.exists("/dev/fuse"):
        return (
            "/dev/fuse is missing: load the fuse module (modprobe fuse), or in a container "
            "pass --device /dev/fuse"
        )
    if os.geteuid() == 0:
        caps = _effective_caps()
        if caps is not None and not caps & (1 << CAP_SYS_ADMIN):
            return (
                "this process lacks CAP_SYS_ADMIN, which mounting needs: in a container, "
                "run it with --cap-add SYS_ADMIN"
            )
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            return "cannot open /dev/fuse: in a container, pass --device /dev/fuse"
        return None
    # Not root: libfuse mounts through the setuid helper fusermount3.
    helper = shutil.which("fusermount3")
    if helper is None:
        return "fusermount3 is not installed (Debian: apt install fuse3), or mount as root"
    st = os.stat(helper)
    if not (st.st_mode & stat.S_ISUID and st.st_uid == 0):
        return f"{helper} is not setuid root (chmod u+s {helper}), or mount as root"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return (
            "/dev/fuse is not open to you (mode "
            f"{stat.filemode(os.stat('/dev/fuse').st_mode)}): mount as root, or ask for "
            "access to /dev/fuse (chmod 666 /dev/fuse, as Debian's default is)"
        )
    return None
