"""The modal.Volume-shaped handle: :class:`Volume` and ``Volume.objects``.

Owns finding volumes (``from_name``/``hydrate``, ``objects.create``/``list``/``delete``,
``rename``, ``ephemeral``), the handle's variants (``read_only``, ``snapshot``), what a
volume is (``info``, ``history``), and the entry points of reads, writes and mounts — each
a thin call into the module that owns the job: :mod:`~volfs.api.reads`,
:mod:`~volfs.api.edits`, :mod:`~volfs.api.upload`, and for mounts
:mod:`volfs.mount.launcher` / :mod:`volfs.control`.

Every write goes through :func:`volfs.snapshots.commit.commit_changes` with a *build*
callback (:data:`~volfs.api.paths.Build`), and every validity check ("does the path
exist?", "is it a directory?") runs inside that callback, so it sees the very head the
change lands on; if another writer wins the compare-and-swap, the build runs again
against the new head.

Must not: import click, pyfuse3, trio or sockets at import time; print. The mount side
(:mod:`volfs.control`, :mod:`volfs.mount.launcher`) is imported lazily by
``commit()``/``reload()``/``mount()``, so ``import volfs`` stays free of FUSE.

Concurrency: a :class:`Volume` is a light handle (store, environment, name, id). Its
methods can run from several threads and processes at once; the catalog serialises head
moves. Reads see the head at the time of the call (or one pinned snapshot, see
:meth:`Volume.snapshot`).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar, Union

from volfs.api import edits, ephemeral, reads
from volfs.api.aio import Blocking, Managing, iterating_method, managing_method, method
from volfs.api.paths import Build, HeadView, lstat
from volfs.api.records import FileEntry, SnapshotChange, SnapshotInfo, VolumeInfo, file_entry
from volfs.api.upload import ProgressCallback, VolumeUploadContextManager
from volfs.catalog import SnapshotId, VolumeId, VolumeRecord
from volfs.config import DEFAULT_AUTOCOMMIT_SECONDS, default_environment
from volfs.core.tree import Entry
from volfs.errors import (
    READ_ONLY_MESSAGE,
    AlreadyExistsError,
    InvalidError,
    NotFoundError,
    ReadOnlyError,
    VolfsError,
)
from volfs.names import (
    check_environment_name,
    check_object_name,
    is_ephemeral_name,
    join_path,
    split_path,
)
from volfs.snapshots.commit import CommitResult, commit_changes
from volfs.store import Store

StoreLike = Union[Store, str, "os.PathLike[str]", None]
#: modal's ``progress_cb`` of ``read_file_into_fileobj``: called as ``progress_cb(advance=n)``.
DownloadProgress = Any


def _open_store(store: StoreLike) -> Store:
    if isinstance(store, Store):
        return store
    return Store.open(store)


def _environment(environment_name: str | None) -> str:
    # modal treats "" like None: the default environment.
    return check_environment_name(environment_name or default_environment())


def _whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for our uid, as in some containers
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def _local_tz() -> tzinfo:
    tz = datetime.now().astimezone().tzinfo
    assert tz is not None
    return tz


def _local_time(timestamp: float) -> datetime:
    """A timestamp as modal shows times: timezone-aware, in the local time zone
    (``modal._utils.time_utils.timestamp_to_localized_dt``)."""
    return datetime.fromtimestamp(timestamp, tz=_local_tz())


def _to_datetime(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.astimezone()  # naive means local time, as in modal's as_timestamp
    return value


def _check_version(version: int | None) -> None:
    """modal's VolumeFS versions: 1 or 2 (volfs has one format, which behaves as modal's v2:
    recursive copies; the number is accepted and checked, not stored)."""
    if version is not None and version not in (1, 2):
        raise InvalidError("VolumeFS version must be either 1 or 2")


def _check_options(create_options: Mapping[str, Any] | None, what: str) -> None:
    if create_options is not None and not isinstance(create_options, Mapping):
        raise InvalidError(f"{what} must be a dict, not {type(create_options).__name__}")


def _check_glob(path: str) -> None:
    # modal-client's Volume.iterdir, message for message.
    if path.endswith("**"):
        raise InvalidError(
            "Glob patterns in `volume get` and `Volume.listdir()` are deprecated. "
            "Please pass recursive=True instead. For the CLI, just remove the glob suffix."
        )
    if path.endswith("*"):
        raise InvalidError(
            "Glob patterns in `volume get` and `Volume.listdir()` are deprecated. "
            "Please remove the glob `*` suffix."
        )


@dataclass(frozen=True)
class VolumeMountOptions:
    """What :meth:`Volume.with_mount_options` sets for the mounts of a handle (modal's
    ``_VolumeMountOptions``)."""

    read_only: bool = False
    #: Mount only this directory of the volume (None: the whole volume).
    sub_path: str | None = None


class Volume:
    """A named, persistent volume in a store, shaped like ``modal.Volume``.

    Get one with :meth:`from_name` (lazy: the name is resolved on first use or by
    :meth:`hydrate`), :meth:`from_id`, :meth:`ephemeral`, or from
    :meth:`objects.list <_VolumeManager.list>`. Every method that changes the volume lands
    as one atomic commit onto its current head. Every public method has an ``.aio`` twin
    for async code (``await vol.listdir.aio("/")``), as modal's do: see :mod:`volfs.api.aio`.
    """

    objects: ClassVar[_VolumeManager]

    def __init__(
        self,
        store: Store,
        environment: str,
        name: str | None,
        *,
        volume_id: VolumeId | None = None,
        create_if_missing: bool = False,
        read_only: bool = False,
        snapshot: SnapshotId | None = None,
        mount_options: VolumeMountOptions | None = None,
    ) -> None:
        # Not public: use from_name / from_id / ephemeral / objects.list.
        self._store = store
        self._environment = environment
        #: The catalog name (an ephemeral volume's is internal); None until a from_id
        #: handle is hydrated.
        self._name = name
        self._id = volume_id
        #: A handle made with an id and a name is hydrated; from_name's and from_id's
        #: become so on first use.
        self._hydrated = volume_id is not None and name is not None
        self._create_if_missing = create_if_missing
        self._read_only = read_only
        self._snapshot = snapshot
        self._mount_options = mount_options

    def _copy(self, **changes: Any) -> Volume:
        fields: dict[str, Any] = {
            "volume_id": self._id,
            "create_if_missing": self._create_if_missing,
            "read_only": self._read_only,
            "snapshot": self._snapshot,
            "mount_options": self._mount_options,
        }
        fields.update(changes)
        other = Volume(self._store, self._environment, self._name, **fields)
        other._hydrated = self._hydrated and other._id == self._id
        return other

    def __repr__(self) -> str:
        extra = " read-only" if self._read_only else ""
        if self._snapshot:
            extra += f" at {self._snapshot}"
        if self._mount_options is not None:
            extra += f" {self._mount_options}"
        return f"<volfs.Volume {self.name!r} env={self._environment!r} id={self._id}{extra}>"

    # -- finding volumes ------------------------------------------------------------------
    @Blocking
    @staticmethod
    def from_name(
        name: str,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        *,
        version: int | None = None,
        create_options: Mapping[str, Any] | None = None,
        client: object = None,
        store: StoreLike = None,
    ) -> Volume:
        """A lazy handle on the volume ``name``; nothing is looked up until first use.

        ``version`` (1 or 2) and ``create_options`` are accepted as modal's and checked,
        not stored; ``client`` is ignored (the store is ``store``, or ``VOLFS_STORE``).
        """
        check_object_name(name, "Volume")
        _check_version(version)
        _check_options(create_options, "create_options")
        return Volume(
            _open_store(store),
            _environment(environment_name),
            name,
            create_if_missing=create_if_missing,
        )

    @Blocking
    @staticmethod
    def from_id(volume_id: str, client: object = None, *, store: StoreLike = None) -> Volume:
        """A lazy handle on the volume with this ``object_id`` (NotFoundError on first use
        if there is none); it works for ephemeral volumes too."""
        if not isinstance(volume_id, str) or not volume_id:
            raise InvalidError(f"invalid volume id {volume_id!r}")
        st = _open_store(store)
        return Volume(st, default_environment(), None, volume_id=VolumeId(volume_id))

    @method
    def hydrate(self, client: object = None) -> Volume:
        """Resolves the name (or id) to the volume, creating it if asked; raises NotFoundError."""
        if self._hydrated:
            return self
        catalog = self._store.catalog
        if self._id is not None:  # from_id
            record = catalog.get_volume_by_id(self._id)
            self._name, self._environment = record.name, record.environment
            self._hydrated = True
            return self
        assert self._name is not None
        record_or_none = catalog.find_volume(self._environment, self._name)
        if record_or_none is None and self._create_if_missing:
            try:
                record_or_none = catalog.create_volume(self._environment, self._name, _whoami())
            except AlreadyExistsError:  # created by someone else just now: use theirs
                record_or_none = catalog.find_volume(self._environment, self._name)
        if record_or_none is None:
            raise NotFoundError(
                f"volume {self._name!r} not found in environment {self._environment!r}"
            )
        self._id = record_or_none.id
        self._hydrated = True
        return self

    @property
    def is_hydrated(self) -> bool:
        """Whether the handle has been resolved to its volume (modal's ``is_hydrated``)."""
        return self._hydrated

    @property
    def name(self) -> str | None:
        """The volume's name; None for an ephemeral volume (and an unhydrated from_id)."""
        if self._name is None or is_ephemeral_name(self._name):
            return None
        return self._name

    @property
    def object_id(self) -> str:
        """The volume's id (hydrates the handle first: beyond modal, which raises)."""
        self.hydrate()
        assert self._id is not None
        return self._id

    @property
    def environment_name(self) -> str:
        return self._environment

    @Blocking
    @staticmethod
    def rename(
        old_name: str,
        new_name: str,
        environment_name: str | None = None,
        *,
        client: object = None,
        store: StoreLike = None,
    ) -> None:
        """Renames a volume; its id, content and history stay."""
        check_object_name(old_name, "Volume")
        check_object_name(new_name, "Volume")
        _open_store(store).catalog.rename_volume(_environment(environment_name), old_name, new_name)

    @Managing
    @staticmethod
    @contextmanager
    def ephemeral(
        client: object = None,
        environment_name: str | None = None,
        version: int | None = None,
        create_options: Mapping[str, Any] | None = None,
        *,
        store: StoreLike = None,
    ) -> Iterator[Volume]:
        """A fresh, nameless volume that is deleted when the block ends (even if it raised).

        As in modal it has no name (``vol.name`` and ``info().name`` are None) and
        ``objects.list()`` does not show it; its ``object_id`` reaches it
        (:meth:`from_id`), and it mounts like any volume. ``with`` and ``async with`` both
        work (also ``Volume.ephemeral.aio()``). One left behind by a killed process is
        deleted by the next ``ephemeral()`` on the same host (:mod:`volfs.api.ephemeral`).
        """
        _check_version(version)
        _check_options(create_options, "create_options")
        st = _open_store(store)
        env = _environment(environment_name)
        ephemeral.sweep_orphans(st.catalog)  # those left by killed processes
        record = st.catalog.create_volume(env, ephemeral.new_name(), _whoami())
        try:
            yield Volume(st, env, record.name, volume_id=record.id)
        finally:
            try:
                st.catalog.delete_volume(env, record.name)
            except NotFoundError:
                pass

    def read_only(self) -> Volume:
        """The same volume, through a handle whose every write raises
        ``InvalidError("Read-only Volume can not be written to")`` (volfs's
        :class:`~volfs.errors.ReadOnlyError`, a subclass), and whose mounts are read-only."""
        if self._mount_options is not None:
            raise InvalidError(
                "Cannot call read_only() on a Volume that has with_mount_options() applied. "
                "Use with_mount_options(read_only=True, ...) instead. Note that "
                "with_mount_options(read_only=True) only configures the server-side mount and "
                "does not block client-side Volume SDK methods."
            )
        return self._copy(read_only=True)

    def with_mount_options(
        self,
        *,
        read_only: bool | None = None,
        sub_path: str | PurePosixPath | None = None,
    ) -> Volume:
        """A handle whose mounts (:meth:`mount`) use these options, as modal's.

        ``read_only`` mounts read-only; it does not make this handle's own writes fail (as
        in modal: use :meth:`read_only` for that). ``sub_path`` mounts only that directory
        of the volume (``"/"``: the whole volume). Unset options keep this handle's.
        """
        if self._read_only and self._snapshot is None:
            raise InvalidError(
                "Cannot call with_mount_options() on a Volume that has .read_only() applied. "
                "Use with_mount_options(read_only=True, ...) instead. Note that "
                "with_mount_options(read_only=True) only configures the server-side mount and "
                "does not block client-side Volume SDK methods."
            )
        current = self._mount_options or VolumeMountOptions()
        normalized = current.sub_path
        if sub_path is not None:
            as_posix = PurePosixPath(sub_path).as_posix()
            normalized = None if as_posix == "/" else as_posix
            if normalized is not None:
                split_path(normalized)  # refuses "..", NUL and over-long paths now
        ro = current.read_only if read_only is None else read_only
        return self._copy(mount_options=VolumeMountOptions(read_only=ro, sub_path=normalized))

    @method
    def snapshot(self, snapshot_id: str | None = None) -> Volume:
        """A read-only handle pinned to one snapshot (default: the current head).

        Beyond modal: reads through it all see the same state, whatever commits land
        meanwhile (``volfs volume get`` of a directory uses it).
        """
        record = self._record()
        if snapshot_id is None:
            snapshot_id = record.head
        snap = self._store.catalog.get_snapshot(snapshot_id)
        if snap.volume_id != record.id:
            raise NotFoundError(f"snapshot {snapshot_id} does not belong to volume {self.name!r}")
        return self._copy(volume_id=record.id, read_only=True, snapshot=snap.id)

    @method
    def info(self) -> VolumeInfo:
        """modal's ``name`` (None for an ephemeral volume), ``created_at`` (aware, local
        time) and ``created_by``, then volfs's extra fields."""
        record = self._record()
        snap = self._store.catalog.get_snapshot(self._snapshot or record.head)
        return VolumeInfo(
            name=None if is_ephemeral_name(record.name) else record.name,
            created_at=_local_time(record.created_at),
            created_by=record.created_by,
            object_id=record.id,
            environment=record.environment,
            head=snap.id,
            head_at=_local_time(snap.time),
            size=snap.root.size,
            files=snap.root.files,
            format_version=record.format_version,
        )

    @method
    def history(self, limit: int | None = None) -> list[SnapshotInfo]:
        """The volume's snapshots, newest first (the head first)."""
        out = []
        for snap in self._store.catalog.history(self._record().id, limit):
            out.append(
                SnapshotInfo(
                    id=snap.id,
                    parent=snap.parent,
                    time=_local_time(snap.time),
                    origin=snap.origin,
                    changed=tuple((op, path) for op, path in snap.changed),
                    changed_count=snap.changed_count,
                    overwrites=tuple((o["path"], o["previous"]) for o in snap.overwrites),
                )
            )
        return out

    @method
    def fork(self, new_name: str, *, snapshot: str | None = None) -> Volume:
        """Beyond modal: a new volume ``new_name`` whose head has this volume's content at
        ``snapshot`` (default: the snapshot this handle is pinned to, else the head).

        Constant time: no content is copied, the two share every blob until they diverge
        (see :mod:`volfs.snapshots.fork`). NotFoundError, AlreadyExistsError, InvalidError.
        """
        from volfs.snapshots.fork import fork

        record = fork(
            self._store.catalog,
            self._record().name,
            new_name,
            snapshot=snapshot or self._snapshot,
            environment=self._environment,
            created_by=_whoami(),
        )
        return Volume(self._store, self._environment, record.name, volume_id=record.id)

    @method
    def diff(self, a: str, b: str | None = None) -> list[SnapshotChange]:
        """Beyond modal: what changed from snapshot ``a`` to snapshot ``b`` (default: the
        head) of this volume, one record per path, depth first."""
        from volfs.snapshots.diff import diff_snapshots

        found = diff_snapshots(
            self._store.catalog, self._record().name, a, b, environment=self._environment
        )
        return [
            SnapshotChange(
                join_path(d.path),
                str(d.change),
                file_entry(d.path, d.old) if d.old is not None else None,
                file_entry(d.path, d.new) if d.new is not None else None,
                d.fields,
            )
            for d in found.differences
        ]

    # -- mounts (the mount side implements them in volfs.control) ------------------------
    @method
    def commit(self) -> None:
        """Commits the pending changes of every mount of this volume (see DESIGN §2)."""
        from volfs import control  # lazy: it loads trio; `import volfs` stays free of it

        control.commit_volume(self.object_id)

    @method
    def reload(self, keep_open: bool | None = None) -> None:
        """Commits, then switches every mount of this volume to the current head.

        All of them commit before any of them switches, so that they all end up on one
        head holding every mount's changes (one after the other, the first to reload would
        miss what the later ones had not committed yet).

        Beyond Modal: ``keep_open=True`` reloads with files open (each keeps what it
        opened; ``volfs reload --keep-open``). None: as each mount was told at mount, which
        is Modal's refusal unless it was mounted with ``keep_open``.
        """
        from volfs import control

        control.commit_volume(self.object_id)
        control.reload_volume(self.object_id, keep_open=keep_open)

    @managing_method
    @contextmanager
    def mount(
        self,
        path: str | os.PathLike[str],
        read_only: bool = False,
        *,
        autocommit: float = DEFAULT_AUTOCOMMIT_SECONDS,
    ) -> Iterator[Path]:
        """Mounts this volume at ``path`` for a ``with`` block; yields the mount's real path.

        For scripts and tests that want a real filesystem without shelling out: a background
        daemon serves the mount exactly as ``volfs mount`` does, so the block may use plain
        file I/O, subprocesses and :func:`volfs.commit`/:func:`volfs.reload` on it.

        On exit — also when the block raised, as a container's changes survive its crash —
        the mount's changes are committed and it is unmounted; this returns only once the
        path is no longer mounted and the daemon has exited, so the next line can rely on
        the head. Files the block left open are committed with what was written and stop
        working afterwards. A handle from :meth:`read_only` or :meth:`snapshot` mounts
        read-only (that snapshot); one from :meth:`with_mount_options` mounts with those
        options (``sub_path``: only that directory). ``autocommit`` as
        ``volfs mount --autocommit``. ``async with vol.mount.aio(path)`` also works.

        Raises MountError when the mount cannot start, or when its changes could not be
        committed on exit (the daemon died, or the final commit failed: ``volfs recover``
        then finds them); the mount is gone either way.
        """
        # Lazy: pyfuse3 and trio load only in processes that mount.
        from volfs.mount import launcher

        record = self._record()  # NotFoundError here, not in the daemon's log
        mount_options = self._mount_options or VolumeMountOptions()
        options = launcher.MountOptions(
            str(self._store.root),
            record.name,
            self._environment,
            os.fspath(path),
            read_only=read_only or self._read_only or mount_options.read_only,
            snapshot=self._snapshot,
            autocommit=autocommit,
            sub_path=mount_options.sub_path,
        )
        served = launcher.start(options)  # logs to <store>/run/<mount id>.log
        try:
            yield Path(served.path)
        except BaseException as exc:
            try:
                served.stop()
            except (VolfsError, OSError) as cleanup_error:
                exc.add_note(f"volfs: while unmounting after this error: {cleanup_error}")
            raise
        served.stop()

    # -- reading --------------------------------------------------------------------------
    def _record(self) -> VolumeRecord:
        self.hydrate()
        assert self._id is not None
        return self._store.catalog.get_volume_by_id(self._id)

    def _root(self) -> Entry:
        if self._snapshot is not None:
            return self._store.catalog.get_snapshot(self._snapshot).root
        self.hydrate()
        assert self._id is not None
        return self._store.catalog.head(self._id).root

    def _view(self) -> HeadView:
        return HeadView(self._store, self._root())

    @method
    def stat(self, path: str) -> FileEntry:
        """The entry at ``path`` itself (a final symlink is not followed). Beyond modal."""
        parts = split_path(path)
        return file_entry(parts, lstat(self._view(), parts))

    # Batches of entries per trip to a worker thread under .aio: entries are small.
    @iterating_method(batch=256)
    def iterdir(self, path: str = "/", *, recursive: bool = True) -> Iterator[FileEntry]:
        """The entries of the directory ``path`` (of a file path: that file alone).

        Paths are relative to the volume root. ``recursive`` (the default, as in modal)
        lists everything below, parents before their children. Missing path:
        FileNotFoundError; a glob (a trailing ``*`` or ``**``): InvalidError, as in modal.
        """
        # A generator: the path is checked and the head read at the first next(), as before.
        _check_glob(path)
        parts = split_path(path)
        yield from reads.iter_entries(self._store, self._view(), parts, recursive)

    @method
    def listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        """Like :meth:`iterdir`, as a list; not recursive unless asked (modal's defaults)."""
        return list(self.iterdir(path, recursive=recursive))

    @iterating_method(batch=1)
    def read_file(self, path: str) -> Iterator[bytes]:
        """The file's bytes, as an iterator of chunks of at most 1 MiB.

        The path is resolved when this is called (FileNotFoundError, IsADirectoryError
        are raised here, not at the first ``next``); every chunk is verified against its
        digest as it is read (CorruptionError, never wrong bytes). Holes of a sparse file
        read as zeros, yielded a piece at a time (a 1 TiB hole never becomes one buffer).
        A FIFO, socket or device has no content: no bytes.
        """
        entry = reads.file_at(self._view(), split_path(path))
        return reads.iter_chunks(self._store, entry)

    @method
    def read_file_into_fileobj(
        self, path: str, fileobj: BinaryIO, progress_cb: DownloadProgress | None = None
    ) -> int:
        """Writes the file's bytes into ``fileobj``; returns how many. ``progress_cb`` is
        called as ``progress_cb(advance=n)`` for every ``n`` bytes written, as in modal."""
        written = 0
        for chunk in self.read_file(path):
            fileobj.write(chunk)
            written += len(chunk)
            if progress_cb is not None:
                progress_cb(advance=len(chunk))
        return written

    # -- writing --------------------------------------------------------------------------
    def _writable_id(self) -> str:
        if self._read_only:
            raise ReadOnlyError(READ_ONLY_MESSAGE)
        return self.object_id

    def _commit(self, build: Build, origin: str) -> CommitResult:
        volume_id = self._writable_id()
        return commit_changes(
            self._store.catalog,
            volume_id,
            lambda root: build(HeadView(self._store, root)),
            origin=origin,
        )

    @managing_method
    def batch_upload(
        self, force: bool = False, *, progress: ProgressCallback | None = None
    ) -> VolumeUploadContextManager:
        """A context manager collecting uploads that land as one commit when the block ends.

        ``with`` and ``async with`` (also ``vol.batch_upload.aio()``) both work; the
        read-only check runs as the block is entered, as in modal. Nothing is committed if
        the block raises. Without ``force``, an upload onto an existing file raises
        FileExistsError; a directory is never replaced by an upload. ``progress`` (beyond
        modal) is called with each byte count as content is stored.
        """
        self._writable_id()
        return VolumeUploadContextManager(self._store, self._view, self._commit, force, progress)

    @method
    def remove_file(self, path: str, recursive: bool = False) -> None:
        """Removes a file, symlink, or (with ``recursive``) a directory and what it holds."""
        self._commit(edits.remove(split_path(path, allow_root=False), recursive), "api:rm")

    @method
    def copy_files(self, src_paths: Sequence[str], dst_path: str, recursive: bool = False) -> None:
        """Copies within the volume with UNIX ``cp`` semantics; only metadata is written.

        ``dst_path`` an existing directory: each source goes inside it under its own name;
        otherwise it names the copy (and only one source is allowed). A directory source
        needs ``recursive`` (allowed, as in modal's v2 volumes); copying a directory onto
        an existing one merges into it.
        """
        self._commit(edits.copy(src_paths, dst_path, recursive), "api:cp")

    def restore(self, path: str, snapshot_id: str) -> str | None:
        """Brings ``path`` back as it was in snapshot ``snapshot_id`` (a file, or a
        directory with everything in it), as a new commit: undelete, or undo an overwrite.

        Returns the new snapshot's id, or None if ``path`` already is as it was then.
        Beyond Modal (which keeps no history)."""
        return _restore(self, path, snapshot_id).snapshot


def _restore(vol: Volume, path: str, snapshot_id: str) -> CommitResult:
    """``Volume.restore``'s body (beyond Modal: kept apart from the Modal-shaped methods)."""
    past = vol._store.catalog.get_snapshot(snapshot_id)
    if past.volume_id != vol._writable_id():
        raise InvalidError(f"snapshot {snapshot_id} does not belong to volume {vol.name!r}")
    return vol._commit(
        edits.restore(split_path(path), past.root, snapshot_id), f"restore {path} {snapshot_id}"
    )


class _VolumeManager:
    """``Volume.objects``: create, list and delete volumes by name."""

    @method
    def create(
        self,
        name: str,
        *,
        version: int | None = None,
        allow_existing: bool = False,
        environment_name: str | None = None,
        client: object = None,
        experimental_options: Mapping[str, Any] | None = None,
        store: StoreLike = None,
    ) -> None:
        """Creates an empty volume (AlreadyExistsError if taken, unless ``allow_existing``).

        Returns None, as modal does: :meth:`Volume.from_name` gives a handle.
        """
        check_object_name(name, "Volume")
        _check_version(version)
        _check_options(experimental_options, "experimental_options")
        st = _open_store(store)
        env = _environment(environment_name)
        try:
            st.catalog.create_volume(env, name, _whoami())
        except AlreadyExistsError:
            if not allow_existing:
                raise

    @method
    def list(
        self,
        *,
        max_objects: int | None = None,
        created_before: datetime | str | None = None,
        environment_name: str = "",
        client: object = None,
        store: StoreLike = None,
    ) -> list[Volume]:
        """The named volumes of an environment, newest first, as hydrated handles
        (ephemeral volumes are not listed, as in modal)."""
        if max_objects is not None and max_objects < 0:
            raise InvalidError("max_objects cannot be negative")
        st = _open_store(store)
        env = _environment(environment_name)
        records = sorted(
            (v for v in st.catalog.list_volumes(env) if not is_ephemeral_name(v.name)),
            key=lambda v: v.created_at,
            reverse=True,
        )
        if created_before is not None:
            limit = _to_datetime(created_before)
            # Compare as datetimes (microseconds), as info().created_at shows them: a float
            # timestamp can differ from its datetime in the last bits.
            records = [v for v in records if datetime.fromtimestamp(v.created_at, UTC) < limit]
        if max_objects is not None:
            records = records[:max_objects]
        return [Volume(st, env, v.name, volume_id=v.id) for v in records]

    @method
    def delete(
        self,
        name: str,
        *,
        allow_missing: bool = False,
        environment_name: str | None = None,
        client: object = None,
        store: StoreLike = None,
    ) -> None:
        """Deletes a volume by name (NotFoundError if missing, unless ``allow_missing``)."""
        check_object_name(name, "Volume")
        try:
            _open_store(store).catalog.delete_volume(_environment(environment_name), name)
        except NotFoundError:
            if not allow_missing:
                raise


Volume.objects = _VolumeManager()

__all__ = ["StoreLike", "Volume", "VolumeMountOptions"]
