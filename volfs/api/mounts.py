"""``volfs.commit(path)`` / ``volfs.reload(path)``: one mount (or every mount of the current
store visible here), through its control socket."""

from __future__ import annotations

import os

from volfs.api.aio import Blocking


def _mount_paths(path: str | os.PathLike[str] | None) -> list[str]:
    from volfs import control  # lazy: keeps `import volfs` free of the mount machinery
    from volfs.config import default_store_path
    from volfs.remote import store_identity

    if path is not None:
        return [os.fspath(path)]
    # As plain `volfs commit`: the mounts of the current store (VOLFS_STORE or the
    # default) visible here, never another store's (another user's, on a shared host).
    mine = store_identity(default_store_path())
    return [m.path for m in control.mounts(mine) if isinstance(m, control.MountInfo)]


@Blocking
def commit(path: str | os.PathLike[str] | None = None) -> None:
    """Commits the pending changes of the mount at ``path`` (if None: every mount of the
    current store visible here)."""
    from volfs import control

    for mount_path in _mount_paths(path):
        control.commit(mount_path)


@Blocking
def reload(path: str | os.PathLike[str] | None = None, *, keep_open: bool | None = None) -> None:
    """Commits, then switches the mount at ``path`` (if None: every mount of the current
    store visible here) to head.

    Raises RuntimeError (:class:`OpenFilesError`) while files of that mount are open,
    unless ``keep_open`` (None: the mount's ``--keep-open``): open files then keep what
    they opened.
    """
    from volfs import control

    for mount_path in _mount_paths(path):
        control.reload(mount_path, keep_open=keep_open)
