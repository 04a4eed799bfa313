"""``volfs volume …``: create, list and change volumes without mounting them (mirrors
``modal volume``).

Owns the :data:`volume_group` and its commands — create, list, ls, put, get, rm, cp,
rename, delete, info, log — and how ``get`` recreates a download locally: each file
written to a temporary name and renamed (a failure never leaves a half-written file),
holes kept, FIFOs and (as root) device nodes recreated, hard links between downloaded
names kept. ``volume retention`` and ``volume rollback`` are :mod:`volfs.cli.admin`'s;
the package's ``__init__`` adds them to this group.

Must not: hold behaviour of its own beyond the local side of a transfer (what a volume
does is :mod:`volfs.api`'s); turn errors into exit codes (``_common.VolfsGroup`` does).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click

from volfs.api import FileEntry, FileEntryType, Volume
from volfs.cli._common import (
    UserError,
    env_option,
    human_size,
    json_option,
    local_time,
    open_store,
    print_json,
    progress_bar,
    stdin_is_terminal,
    table,
)
from volfs.errors import (
    ConflictError,
    InvalidError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    NotFoundError,
    PathExistsError,
)
from volfs.maintenance.mounts import live_mounts
from volfs.names import split_path
from volfs.snapshots.history import get_retention


@click.group("volume")
def volume_group() -> None:
    """Create, list and change volumes without mounting them."""


def _volume(ctx: click.Context, name: str, environment: str) -> Volume:
    return Volume.from_name(name, environment, store=open_store(ctx)).hydrate()


#: ``modal volume ls``'s type names; a device (Modal volumes hold none) is named for itself.
_TYPE_NAMES = {
    FileEntryType.FILE: "file",
    FileEntryType.DIRECTORY: "dir",
    FileEntryType.SYMLINK: "link",
    FileEntryType.FIFO: "fifo",
    FileEntryType.SOCKET: "socket",
    FileEntryType.CHARACTER_DEVICE: "char-device",
    FileEntryType.BLOCK_DEVICE: "block-device",
}
_DEVICES = (FileEntryType.CHARACTER_DEVICE, FileEntryType.BLOCK_DEVICE)


def modal_time(dt: datetime | float, iso: bool) -> str | None:
    """A time as ``modal`` prints one (``timestamp_to_localized_str``): in local time,
    ``2026-12-01 13:05 CET`` in tables and ``ls --json``, ``2026-12-01 13:05:09+01:00``
    with ``iso`` (``list --json``); None for a time at or before the epoch, as modal."""
    ts = dt.timestamp() if isinstance(dt, datetime) else dt
    if ts <= 0:
        return None
    local = datetime.fromtimestamp(ts, tz=datetime.now().astimezone().tzinfo)
    return local.isoformat(sep=" ", timespec="seconds") if iso else f"{local:%Y-%m-%d %H:%M %Z}"


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _entry_json(e: FileEntry) -> dict[str, object]:
    """An entry as ``modal volume ls --json`` prints it: exactly its keys. A device, which a
    Modal volume cannot hold (so no consumer of modal's output meets one), adds its number."""
    out: dict[str, object] = {
        "filename": _listed_name(e),
        "type": _TYPE_NAMES.get(e.type, "file"),
        "created_modified": modal_time(e.mtime, iso=False),
        "size": human_size(e.size),
    }
    if e.type in _DEVICES:
        out["rdev"] = {"major": os.major(e.rdev), "minor": os.minor(e.rdev)}
    return out


def _listed_name(e: FileEntry) -> str:
    # modal escapes names (``unicode_escape``) so a newline cannot split a row.
    return e.path.encode("unicode_escape").decode("utf-8")


# -- volume commands ----------------------------------------------------------------------
@volume_group.command("create")
@click.argument("name")
@env_option
@click.option(
    "--version",
    type=click.IntRange(1, 2),
    default=None,
    help="Modal's VolumeFS version (1 or 2); accepted for compatibility: a volfs volume "
    "has one format, with what both versions offer.",
)
@click.pass_context
def create_cmd(ctx: click.Context, name: str, environment: str, version: int | None) -> None:
    """Create an empty volume NAME."""
    Volume.objects.create(name, environment_name=environment, store=open_store(ctx))
    vol = Volume.from_name(name, environment_name=environment, store=open_store(ctx))
    click.echo(f"Created volume {name!r} in environment {environment!r} ({vol.object_id}).")
    click.echo(f"Mount it with: volfs mount {name} PATH")


@volume_group.command("list")
@env_option
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, environment: str, as_json: bool) -> None:
    """List the volumes of an environment, newest first."""
    infos = [
        v.info() for v in Volume.objects.list(environment_name=environment, store=open_store(ctx))
    ]
    if as_json:
        # Exactly modal's keys and values (its table's columns, snake_cased); the rest of a
        # volume's record is `volfs volume info NAME --json`.
        print_json(
            [
                {
                    "name": i.name,
                    "created_at": modal_time(i.created_at, iso=True),
                    "created_by": i.created_by,
                }
                for i in infos
            ]
        )
        return
    table(
        ["Name", "Created at", "Created by", "Size", "Files"],
        [
            [
                i.name or "",
                modal_time(i.created_at, iso=False) or "",
                i.created_by,
                human_size(i.size),
                str(i.files),
            ]
            for i in infos
        ],
        right=frozenset({3, 4}),
    )


_snapshot_option = click.option(
    "--snapshot", metavar="ID", help="As it was in this past snapshot (see `volume log`)."
)


@volume_group.command("ls")
@click.argument("name")
@click.argument("path", default="/")
@env_option
@json_option
@_snapshot_option
@click.pass_context
def ls_cmd(
    ctx: click.Context,
    name: str,
    path: str,
    environment: str,
    as_json: bool,
    snapshot: str | None,
) -> None:
    """List the files in PATH of volume NAME (default: its root).

    Piped (stdout not a terminal) and without --json it prints bare paths, one a line, as
    `modal volume ls` does; --json prints modal's keys: filename, type, created_modified,
    size.
    """
    entries = _volume(ctx, name, environment).snapshot(snapshot).listdir(path)
    if not as_json and not _stdout_is_terminal():
        for e in entries:
            click.echo(e.path)
        return
    if as_json:
        print_json([_entry_json(e) for e in entries])
        return
    rows = []
    for e in entries:
        shown = _listed_name(e) + ("/" if e.type is FileEntryType.DIRECTORY else "")
        if e.type is FileEntryType.SYMLINK:
            shown += f" -> {e.target}"
        # A device shows its number where a file shows its size, as `ls -l` does.
        size = (
            f"{os.major(e.rdev)}, {os.minor(e.rdev)}" if e.type in _DEVICES else human_size(e.size)
        )
        rows.append(
            [shown, _TYPE_NAMES.get(e.type, "file"), modal_time(e.mtime, False) or "", size]
        )
    table(["Filename", "Type", "Created/Modified", "Size"], rows, right=frozenset({3}))


def _local_totals(path: Path) -> tuple[int, int]:
    """(files, bytes) that put_directory would upload: the names of regular files, FIFOs and
    devices (symlinks not followed); the bytes of each file once, however many names it has."""
    if not path.is_dir():
        return 1, path.stat().st_size
    files = size = 0
    seen: set[tuple[int, int]] = set()
    for root, _dirs, names in os.walk(path):  # os.walk does not follow symlinked dirs
        for n in names:
            st = os.lstat(os.path.join(root, n))
            if (
                stat.S_ISREG(st.st_mode)
                or stat.S_ISFIFO(st.st_mode)
                or stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode)
            ):
                files += 1
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    size += st.st_size
    return files, size


@volume_group.command("put")
@click.argument("name")
@click.argument("local_arg", metavar="LOCAL_PATH")
@click.argument("remote_path", default="/")
@click.option("--force", "-f", is_flag=True, help="Overwrite existing files.")
@env_option
@click.pass_context
def put_cmd(
    ctx: click.Context, name: str, local_arg: str, remote_path: str, force: bool, environment: str
) -> None:
    """Upload LOCAL_PATH (a file or a directory, recursively) into volume NAME.

    REMOTE_PATH names the upload (default /). Ending it with / joins it with the local
    path's last component as written, as `modal volume put` does: `put f.txt /x/` makes
    /x/f.txt, `put d /x/` makes /x/d, `put d/ /x/` (or `put . /x/`) puts d's content in /x.
    Missing parent directories are created. Existing files are kept unless --force; a
    directory is never replaced by a file.
    """
    vol = _volume(ctx, name, environment)
    local_path = Path(local_arg)
    if "*" in local_arg and not local_path.is_dir():
        raise click.UsageError("Glob uploads are currently not supported")
    if not local_path.exists():
        raise FileNotFoundError(2, "No such file or directory", local_arg)
    if remote_path.endswith("/"):
        remote_path += os.path.basename(local_arg)  # "" for "d/": the remote directory itself
    files, size = _local_totals(local_path)
    with (
        progress_bar(size, "Uploading") as progress,
        vol.batch_upload(force=force, progress=progress) as batch,
    ):
        if local_path.is_dir():
            batch.put_directory(local_path, remote_path)
        else:
            batch.put_file(local_path, remote_path)
    shown = "/" + "/".join(split_path(remote_path))
    click.echo(
        f"Uploaded {files} file{'s' if files != 1 else ''} ({human_size(size)}) to {name}:{shown}"
    )


class _Skipped:
    """Entries ``get`` cannot recreate here, counted for its one warning line."""

    def __init__(self) -> None:
        self.sockets = 0
        self.devices = 0

    def warn(self) -> None:
        if not (self.sockets or self.devices):
            return
        why = []
        if self.sockets:
            why.append(
                f"{self.sockets} socket{'s' if self.sockets != 1 else ''} (a socket node "
                "means nothing without its server)"
            )
        if self.devices:
            why.append(
                f"{self.devices} device node{'s' if self.devices != 1 else ''} (creating "
                "them needs root, with CAP_MKNOD)"
            )
        total = self.sockets + self.devices
        click.echo(
            f"warning: skipped {total} special file{'s' if total != 1 else ''}: " + ", ".join(why),
            err=True,
        )


def _write_local(
    vol: Volume,
    entry: FileEntry,
    dest: Path,
    force: bool,
    progress: Callable[[int], None] | None,
    *,
    link_to: Path | None = None,
    skipped: _Skipped | None = None,
) -> int | None:
    """Writes one entry atomically (temp name, then rename): a file (its bytes, written
    sparse where they are zeros), a symlink, a FIFO, a device node, or, with ``link_to``,
    another name of that local file (a hard link). Returns the bytes written, or None if
    the entry cannot be made here (a socket; a device without the privilege): counted in
    ``skipped``."""
    if not force and os.path.lexists(dest):
        raise PathExistsError(f"local file {str(dest)!r} already exists; use --force to overwrite")
    if _is_special(dest):
        # /dev/null, a FIFO, a device: written into as cp does; replacing the node with a
        # regular file would break whatever else uses it (found replacing /dev/full).
        if entry.type is not FileEntryType.FILE or link_to is not None:
            raise InvalidError(
                f"local path {str(dest)!r} is a device, FIFO or socket: only a file's "
                "content can be written into it"
            )
        return _write_into(vol, entry, dest, progress)
    written = 0
    # Short enough that the temp name stays under NAME_MAX whatever the UTF-8 length.
    tmp = dest.parent / f".{dest.name[:32]}.{os.urandom(4).hex()}.volfs-part"
    try:
        if link_to is not None:
            os.link(link_to, tmp, follow_symlinks=False)  # mode and mtime are the inode's
        elif entry.type is FileEntryType.SYMLINK:
            os.symlink(entry.target, tmp)
        elif entry.type is FileEntryType.SOCKET:
            if skipped is not None:
                skipped.sockets += 1
            return None
        elif entry.type in _DEVICES or entry.type is FileEntryType.FIFO:
            if entry.type is FileEntryType.FIFO:
                os.mkfifo(tmp, 0o600)
            else:
                kind = (
                    stat.S_IFCHR if entry.type is FileEntryType.CHARACTER_DEVICE else stat.S_IFBLK
                )
                try:
                    os.mknod(tmp, kind | 0o600, entry.rdev)
                except PermissionError:  # not root (or no CAP_MKNOD in this container)
                    if skipped is not None:
                        skipped.devices += 1
                    return None
            os.chmod(tmp, entry.mode & 0o777)
            os.utime(tmp, (entry.mtime, entry.mtime))
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                for chunk in vol.read_file(entry.path):
                    if chunk[:1] == b"\0" and chunk.count(0) == len(chunk):
                        f.seek(len(chunk), os.SEEK_CUR)  # zeros (a hole): leave one locally too
                    else:
                        f.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                f.truncate(written)  # the size, if the file ends in a hole
                os.fchmod(f.fileno(), entry.mode & 0o777)
            os.utime(tmp, (entry.mtime, entry.mtime))
        os.replace(tmp, dest)
        if link_to is not None and os.path.lexists(tmp):
            os.unlink(tmp)  # dest was that very file already: rename(2) did nothing
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return written


def _is_real_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def _is_special(p: Path) -> bool:
    """Whether ``p`` is (or, a symlink, names) a node that is not a file, directory or link."""
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _write_into(
    vol: Volume, entry: FileEntry, dest: Path, progress: Callable[[int], None] | None
) -> int:
    """A file's bytes written into an existing special node, in order, zeros included (a
    FIFO cannot seek), nothing of the node itself changed (no truncate, chmod or utime)."""
    written = 0
    # O_TRUNC as cp opens it: ignored by devices and FIFOs. Opening a FIFO waits for a
    # reader, as cp's does.
    fd = os.open(dest, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    with os.fdopen(fd, "wb") as f:
        for chunk in vol.read_file(entry.path):
            f.write(chunk)
            written += len(chunk)
            if progress is not None:
                progress(len(chunk))
    return written


@volume_group.command("get")
@click.argument("name")
@click.argument("remote_path")
@click.argument("local_dest", default=".")
@click.option("--force", "-f", is_flag=True, help="Overwrite existing local files.")
@env_option
@_snapshot_option
@click.pass_context
def get_cmd(
    ctx: click.Context,
    name: str,
    remote_path: str,
    local_dest: str,
    force: bool,
    environment: str,
    snapshot: str | None,
) -> None:
    """Download REMOTE_PATH of volume NAME (a file, or a directory recursively).

    LOCAL_DEST defaults to the current directory; an existing directory receives the
    download under its remote name; "-" writes a file to stdout. Existing local files are
    kept unless --force (then nothing is written); each file is written to a temporary
    name and renamed, so a failure never leaves a half-written file. FIFOs and (as root)
    device nodes are recreated, hard links between downloaded names kept; sockets, and
    devices without the privilege, are skipped with a warning.
    """
    # One snapshot for the whole download: commits landing meanwhile do not mix in.
    vol = _volume(ctx, name, environment).snapshot(snapshot)
    top = vol.stat(remote_path)
    if local_dest == "-":
        out = sys.stdout.buffer
        for chunk in vol.read_file(remote_path):
            out.write(chunk)
        out.flush()
        return
    parts = split_path(remote_path)
    dest = Path(local_dest)
    if _is_real_dir(dest) and parts:
        dest = dest / parts[-1]
    if top.type is not FileEntryType.DIRECTORY:
        if top.type is FileEntryType.SYMLINK:
            # Like cp without -r: a named symlink is followed (read_file resolves it).
            top = FileEntry(top.path, FileEntryType.FILE, top.mtime, 0, 0o644)
        if _is_real_dir(dest):
            raise IsADirectoryPathError(f"local path {str(dest)!r} is a directory")
        if not dest.parent.is_dir():
            raise FileNotFoundError(2, "No such directory", str(dest.parent))
        skipped = _Skipped()
        with progress_bar(top.size, "Downloading") as progress:
            written = _write_local(vol, top, dest, force, progress, skipped=skipped)
        skipped.warn()
        if written is not None:
            click.echo(f"Wrote {written} bytes to {str(dest)!r}")
        return
    _get_tree(vol, parts, dest, force)


def _get_tree(vol: Volume, parts: tuple[str, ...], dest: Path, force: bool) -> None:
    entries = vol.listdir("/".join(parts) or "/", recursive=True)
    plan = [(e, dest.joinpath(*e.path.split("/")[len(parts) :])) for e in entries]
    # Check everything before writing anything.
    if os.path.lexists(dest) and not _is_real_dir(dest):
        raise NotADirectoryPathError(f"local path {str(dest)!r} exists and is not a directory")
    if not dest.parent.is_dir():
        raise FileNotFoundError(2, "No such directory", str(dest.parent))
    for e, local in plan:
        if not os.path.lexists(local):
            continue
        if e.type is FileEntryType.DIRECTORY:
            if not _is_real_dir(local):
                raise NotADirectoryPathError(
                    f"local path {str(local)!r} exists and is not a directory"
                )
        elif _is_real_dir(local):
            raise IsADirectoryPathError(f"local path {str(local)!r} is a directory")
        elif not force:
            raise PathExistsError(
                f"local file {str(local)!r} already exists; use --force to overwrite"
            )
    # A hard-linked file's bytes are downloaded once, for its first name.
    groups: set[int] = set()
    total = 0
    for e, _ in plan:
        if e.type is FileEntryType.FILE and not (e.link and e.link in groups):
            total += e.size
        if e.link:
            groups.add(e.link)
    files = 0
    skipped = _Skipped()
    #: Link id -> the local name made for the first name of the group that could be made.
    made: dict[int, Path] = {}
    dest.mkdir(exist_ok=True)
    with progress_bar(total, "Downloading") as progress:
        for e, local in plan:
            if e.type is FileEntryType.DIRECTORY:
                local.mkdir(exist_ok=True)
                continue
            if e.type is FileEntryType.UNSPECIFIED:
                continue
            first = made.get(e.link) if e.link else None
            if first is not None:
                _write_local(vol, e, local, force, progress, link_to=first)
                files += 1
                continue
            done = _write_local(vol, e, local, force, progress, skipped=skipped)
            if e.link and done is not None:
                made[e.link] = local
            if done is not None:
                files += 1
    skipped.warn()
    click.echo(
        f"Downloaded {files} file{'s' if files != 1 else ''} ({human_size(total)}) to {str(dest)!r}"
    )


@volume_group.command("restore")
@click.argument("name")
@click.argument("path")
@click.option("--snapshot", metavar="ID", required=True, help="The past snapshot to take it from.")
@env_option
@click.pass_context
def restore_cmd(ctx: click.Context, name: str, path: str, snapshot: str, environment: str) -> None:
    """Bring PATH of volume NAME back as it was in snapshot ID, as a new commit.

    A file, link or directory (with everything in it) becomes exactly what it was then:
    undelete, or undo an overwrite. Parents deleted since come back too. Find the
    snapshot with `volfs volume log NAME`."""
    new = _volume(ctx, name, environment).restore(path, snapshot)
    if new is None:
        click.echo(f"{path} already is as it was in {snapshot}: nothing to commit")
    else:
        click.echo(f"restored {path} from {snapshot}: committed {new}")


@volume_group.command("rm")
@click.argument("name")
@click.argument("path")
@click.option("--recursive", "-r", is_flag=True, help="Remove a directory and what it holds.")
@env_option
@click.pass_context
def rm_cmd(ctx: click.Context, name: str, path: str, recursive: bool, environment: str) -> None:
    """Remove PATH (a file, or with -r a directory) from volume NAME."""
    _volume(ctx, name, environment).remove_file(path, recursive=recursive)
    click.echo(f"Removed {name}:/{'/'.join(split_path(path))}")


@volume_group.command("cp")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, metavar="SRC... DST")
@click.option("--recursive", "-r", is_flag=True, help="Copy directories recursively.")
@env_option
@click.pass_context
def cp_cmd(
    ctx: click.Context, name: str, paths: tuple[str, ...], recursive: bool, environment: str
) -> None:
    """Copy files within volume NAME, like cp (no content is copied, only references)."""
    if len(paths) < 2:
        raise click.UsageError("cp needs at least one SRC and a DST")
    *srcs, dst = paths
    _volume(ctx, name, environment).copy_files(srcs, dst, recursive=recursive)
    click.echo(
        f"Copied {len(srcs)} path{'s' if len(srcs) != 1 else ''} to {name}:"
        f"/{'/'.join(split_path(dst))}"
    )


@volume_group.command("rename")
@click.argument("old_name")
@click.argument("new_name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@env_option
@click.pass_context
def rename_cmd(
    ctx: click.Context, old_name: str, new_name: str, yes: bool, environment: str
) -> None:
    """Rename volume OLD_NAME to NEW_NAME (its content, id and history stay).

    On a terminal it asks first, as `modal volume rename` does, unless --yes; piped it
    does not ask (a rename loses nothing, and scripts written for volfs did not pass -y).
    """
    _volume(ctx, old_name, environment)  # a missing volume is an error before any question
    if not yes and stdin_is_terminal():
        click.confirm(
            f"Are you sure you want to rename volume {old_name!r}? Programs naming it by "
            "its old name will stop finding it.",
            default=False,
            abort=True,
            err=True,
        )
    Volume.rename(old_name, new_name, environment, store=open_store(ctx))
    click.echo(f"Renamed volume {old_name!r} to {new_name!r}.")


@volume_group.command("delete")
@click.argument("name")
@click.option("--allow-missing", is_flag=True, help="Do not fail if the volume does not exist.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--force",
    is_flag=True,
    help="Delete even while mounted (those mounts lose what they did not commit).",
)
@env_option
@click.pass_context
def delete_cmd(
    ctx: click.Context,
    name: str,
    allow_missing: bool,
    yes: bool,
    force: bool,
    environment: str,
) -> None:
    """Delete volume NAME (asks first, unless --yes; refuses while mounted, unless --force)."""
    try:
        volume = _volume(ctx, name, environment)  # missing: an error before any question
    except NotFoundError:
        if not allow_missing:
            raise
        click.echo(f"Volume {name!r} does not exist; nothing to delete.", err=True)
        return
    mounts = live_mounts(open_store(ctx), volume.object_id)
    if mounts and not force:
        raise ConflictError(
            f"volume {name!r} is mounted ({', '.join(mounts)}): unmount it first, or pass "
            "--force (its mounts then lose what they did not commit)"
        )
    if not yes:
        try:
            ok = click.confirm(
                f"Delete volume {name!r} (environment {environment!r}) and all its files?",
                default=False,
                err=True,
            )
        except click.Abort:  # no answer (stdin closed, or Ctrl-C)
            click.echo(err=True)  # end the prompt's line: the error gets a line of its own
            raise UserError(
                f"not deleting volume {name!r} without confirmation: answer the "
                "question, or pass --yes",
                1,
            ) from None
        if not ok:
            raise UserError(f"volume {name!r} was not deleted", 1)
    Volume.objects.delete(
        name, environment_name=environment, allow_missing=allow_missing, store=open_store(ctx)
    )
    click.echo(f"Deleted volume {name!r}.")


@volume_group.command("info")
@click.argument("name")
@env_option
@json_option
@click.pass_context
def info_cmd(ctx: click.Context, name: str, environment: str, as_json: bool) -> None:
    """Show what volume NAME is: id, creation, head snapshot, size, files, format."""
    i = _volume(ctx, name, environment).info()
    retention = get_retention(open_store(ctx).catalog, i.object_id)
    data = {
        "name": i.name,
        "id": i.object_id,
        "environment": i.environment,
        "created_at": i.created_at.isoformat(),
        "created_by": i.created_by,
        "head": i.head,
        "head_at": i.head_at.isoformat(),
        "size": i.size,
        "files": i.files,
        "format_version": i.format_version,
        "retention": None if retention.keeps_everything else retention.to_json(),
    }
    if as_json:
        print_json(data)
        return
    rows = [
        ("Name", i.name),
        ("Id", i.object_id),
        ("Environment", i.environment),
        ("Created at", local_time(i.created_at)),
        ("Created by", i.created_by),
        ("Head", f"{i.head} ({local_time(i.head_at)})"),
        ("Size", f"{human_size(i.size)} ({i.size} bytes)"),
        ("Files", str(i.files)),
        ("Format", f"volfs store format {i.format_version}"),
        ("Retention", retention.describe()),
    ]
    for key, value in rows:
        click.echo(f"{key + ':':<13}{value}")


@volume_group.command("log")
@click.argument("name")
@click.option(
    "--max-count",
    "-n",
    type=click.IntRange(min=1),
    default=None,
    help="Show at most this many snapshots.",
)
@env_option
@json_option
@click.pass_context
def log_cmd(
    ctx: click.Context, name: str, max_count: int | None, environment: str, as_json: bool
) -> None:
    """Show the history of volume NAME, newest first: what each commit changed."""
    vol = _volume(ctx, name, environment)
    history = vol.history(max_count)
    if as_json:
        print_json(
            [
                {
                    "id": s.id,
                    "parent": s.parent,
                    "time": s.time.isoformat(),
                    "origin": s.origin,
                    "changed_count": s.changed_count,
                    "changed": [{"op": op, "path": p} for op, p in s.changed],
                    "overwrites": [{"path": p, "previous": prev} for p, prev in s.overwrites],
                }
                for s in history
            ]
        )
        return
    for s in history:
        click.echo(
            f"{s.id}  {local_time(s.time)}  {s.origin}  "
            f"{s.changed_count} change{'s' if s.changed_count != 1 else ''}"
        )
        shown = 10
        for op, p in s.changed[:shown]:
            click.echo(f"    {op:<6}{p}")
        if s.changed_count > shown:
            click.echo(f"    … and {s.changed_count - shown} more")
        for p, prev in s.overwrites:
            click.echo(f"    overwrote {p} (unseen version kept in {prev})")
    if history and history[-1].parent and (max_count is None or len(history) < max_count):
        click.echo(f"(older history, from {history[-1].parent} back, was dropped by retention)")
    retention = get_retention(open_store(ctx).catalog, vol.object_id)
    if not retention.keeps_everything:
        click.echo(f"retention: {retention.describe()}")


__all__ = ["volume_group"]
