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
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ClassVar, Union

from volfs.api import edits, reads
from volfs.api.paths import Build, HeadView, lstat
from volfs.api.records import FileEntry, SnapshotInfo, VolumeInfo, file_entry
from volfs.api.upload import ProgressCallback, VolumeUploadContextManager
from volfs.catalog import SnapshotId, VolumeId, VolumeRecord
from volfs.config import DEFAULT_AUTOCOMMIT_SECONDS, default_environment
from volfs.core.tree import Entry
from volfs.errors import AlreadyExistsError, InvalidError, NotFoundError, ReadOnlyError, VolfsError
from volfs.names import check_environment_name, check_volume_name, split_path
from volfs.snapshots.commit import CommitResult, commit_changes
from volfs.store import Store

StoreLike = Union[Store, str, "os.PathLike[str]", None]


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


def _to_datetime(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.astimezone()  # naive means local time, as datetime.now() gives it
    return value


class Volume:
    """A named, persistent volume in a store, shaped like ``modal.Volume``.

    Get one with :meth:`from_name` (lazy: the name is resolved on first use or by
    :meth:`hydrate`), :meth:`objects.create <_VolumeManager.create>`, or
    :meth:`ephemeral`. Every method that changes the volume lands as one atomic commit
    onto its current head.
    """

    objects: ClassVar[_VolumeManager]

    def __init__(
        self,
        store: Store,
        environment: str,
        name: str,
        *,
        volume_id: VolumeId | None = None,
        create_if_missing: bool = False,
        read_only: bool = False,
        snapshot: SnapshotId | None = None,
    ) -> None:
        # Not public: use from_name / objects.create / ephemeral.
        self._store = store
        self._environment = environment
        self._name = name
        self._id = volume_id
        self._create_if_missing = create_if_missing
        self._read_only = read_only
        self._snapshot = snapshot

    def __repr__(self) -> str:
        extra = " read-only" if self._read_only else ""
        if self._snapshot:
            extra += f" at {self._snapshot}"
        return f"<volfs.Volume {self._name!r} env={self._environment!r} id={self._id}{extra}>"

    # -- finding volumes ------------------------------------------------------------------
    @staticmethod
    def from_name(
        name: str,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        *,
        store: StoreLike = None,
    ) -> Volume:
        """A lazy handle on the volume ``name``; nothing is looked up until first use."""
        check_volume_name(name)
        return Volume(
            _open_store(store),
            _environment(environment_name),
            name,
            create_if_missing=create_if_missing,
        )

    def hydrate(self) -> Volume:
        """Resolves the name to the volume (creating it if asked); raises NotFoundError."""
        if self._id is not None:
            return self
        catalog = self._store.catalog
        record = catalog.find_volume(self._environment, self._name)
        if record is None and self._create_if_missing:
            try:
                record = catalog.create_volume(self._environment, self._name, _whoami())
            except AlreadyExistsError:  # created by someone else just now: use theirs
                record = catalog.find_volume(self._environment, self._name)
        if record is None:
            raise NotFoundError(
                f"volume {self._name!r} not found in environment {self._environment!r}"
            )
        self._id = record.id
        return self

    @property
    def name(self) -> str:
        return self._name

    @property
    def object_id(self) -> str:
        self.hydrate()
        assert self._id is not None
        return self._id

    @property
    def environment_name(self) -> str:
        return self._environment

    @staticmethod
    def rename(
        old_name: str,
        new_name: str,
        environment_name: str | None = None,
        *,
        store: StoreLike = None,
    ) -> None:
        """Renames a volume; its id, content and history stay."""
        check_volume_name(old_name)
        check_volume_name(new_name)
        _open_store(store).catalog.rename_volume(_environment(environment_name), old_name, new_name)

    @staticmethod
    @contextmanager
    def ephemeral(
        environment_name: str | None = None, *, store: StoreLike = None
    ) -> Iterator[Volume]:
        """A fresh volume that is deleted when the block ends (even if it raised).

        It has a generated name (``ephemeral-…``) so that ``volfs volume list`` shows it
        while it lives — and shows it, deletable, if the process dies before the cleanup.
        """
        st = _open_store(store)
        env = _environment(environment_name)
        record = st.catalog.create_volume(env, "ephemeral-" + secrets.token_hex(8), _whoami())
        try:
            yield Volume(st, env, record.name, volume_id=record.id)
        finally:
            try:
                st.catalog.delete_volume(env, record.name)
            except NotFoundError:
                pass

    def read_only(self) -> Volume:
        """The same volume, through a handle whose every write raises ReadOnlyError."""
        return Volume(
            self._store,
            self._environment,
            self._name,
            volume_id=self._id,
            create_if_missing=self._create_if_missing,
            read_only=True,
            snapshot=self._snapshot,
        )

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
            raise NotFoundError(f"snapshot {snapshot_id} does not belong to volume {self._name!r}")
        return Volume(
            self._store,
            self._environment,
            self._name,
            volume_id=record.id,
            read_only=True,
            snapshot=snap.id,
        )

    def info(self) -> VolumeInfo:
        record = self._record()
        snap = self._store.catalog.get_snapshot(self._snapshot or record.head)
        return VolumeInfo(
            name=record.name,
            object_id=record.id,
            created_at=datetime.fromtimestamp(record.created_at, UTC),
            created_by=record.created_by,
            environment=record.environment,
            head=snap.id,
            head_at=datetime.fromtimestamp(snap.time, UTC),
            size=snap.root.size,
            files=snap.root.files,
            format_version=record.format_version,
        )

    def history(self, limit: int | None = None) -> list[SnapshotInfo]:
        """The volume's snapshots, newest first (the head first)."""
        out = []
        for snap in self._store.catalog.history(self._record().id, limit):
            out.append(
                SnapshotInfo(
                    id=snap.id,
                    parent=snap.parent,
                    time=datetime.fromtimestamp(snap.time, UTC),
                    origin=snap.origin,
                    changed=tuple((op, path) for op, path in snap.changed),
                    changed_count=snap.changed_count,
                    overwrites=tuple((o["path"], o["previous"]) for o in snap.overwrites),
                )
            )
        return out

    # -- mounts (the mount side implements them in volfs.control) ------------------------
    def commit(self) -> None:
        """Commits the pending changes of every mount of this volume (see DESIGN §2)."""
        from volfs import control  # lazy: it loads trio; `import volfs` stays free of it

        control.commit_volume(self.object_id)

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
        read-only (that snapshot). ``autocommit`` as ``volfs mount --autocommit``.

        Raises MountError when the mount cannot start, or when its changes could not be
        committed on exit (the daemon died, or the final commit failed: ``volfs recover``
        then finds them); the mount is gone either way.
        """
        # Lazy: pyfuse3 and trio load only in processes that mount.
        from volfs.mount import launcher

        record = self._record()  # NotFoundError here, not in the daemon's log
        options = launcher.MountOptions(
            str(self._store.root),
            record.name,
            self._environment,
            os.fspath(path),
            read_only=read_only or self._read_only,
            snapshot=self._snapshot,
            autocommit=autocommit,
        )
        log_name = f"daemon-{int(time.time())}-{os.getpid()}-{secrets.token_hex(3)}.log"
        served = launcher.start(options, self._store.run_dir / log_name)
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

    def stat(self, path: str) -> FileEntry:
        """The entry at ``path`` itself (a final symlink is not followed). Beyond modal."""
        parts = split_path(path)
        return file_entry(parts, lstat(self._view(), parts))

    def iterdir(self, path: str = "/", *, recursive: bool = False) -> Iterator[FileEntry]:
        """The entries of the directory ``path`` (of a file path: that file alone).

        Paths are relative to the volume root. ``recursive`` lists everything below,
        parents before their children. Missing path: FileNotFoundError.
        """
        # A generator: the path is checked and the head read at the first next(), as before.
        parts = split_path(path)
        yield from reads.iter_entries(self._store, self._view(), parts, recursive)

    def listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        """Like :meth:`iterdir`, as a list."""
        return list(self.iterdir(path, recursive=recursive))

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

    def read_file_into_fileobj(
        self, path: str, fileobj: BinaryIO, progress_cb: ProgressCallback | None = None
    ) -> int:
        """Writes the file's bytes into ``fileobj``; returns how many."""
        written = 0
        for chunk in self.read_file(path):
            fileobj.write(chunk)
            written += len(chunk)
            if progress_cb is not None:
                progress_cb(len(chunk))
        return written

    # -- writing --------------------------------------------------------------------------
    def _writable_id(self) -> str:
        if self._read_only:
            raise ReadOnlyError(f"volume {self._name!r} is read-only through this handle")
        return self.object_id

    def _commit(self, build: Build, origin: str) -> CommitResult:
        volume_id = self._writable_id()
        return commit_changes(
            self._store.catalog,
            volume_id,
            lambda root: build(HeadView(self._store, root)),
            origin=origin,
        )

    def batch_upload(
        self, force: bool = False, *, progress: ProgressCallback | None = None
    ) -> VolumeUploadContextManager:
        """A context manager collecting uploads that land as one commit when the block ends.

        Nothing is committed if the block raises. Without ``force``, an upload onto an
        existing file raises FileExistsError; a directory is never replaced by an upload.
        ``progress`` (beyond modal) is called with each byte count as content is stored.
        """
        self._writable_id()
        return VolumeUploadContextManager(self._store, self._view, self._commit, force, progress)

    def remove_file(self, path: str, recursive: bool = False) -> None:
        """Removes a file, symlink, or (with ``recursive``) a directory and what it holds."""
        self._commit(edits.remove(split_path(path, allow_root=False), recursive), "api:rm")

    def copy_files(self, src_paths: Sequence[str], dst_path: str, recursive: bool = False) -> None:
        """Copies within the volume with UNIX ``cp`` semantics; only metadata is written.

        ``dst_path`` an existing directory: each source goes inside it under its own name;
        otherwise it names the copy (and only one source is allowed). A directory source
        needs ``recursive``; copying a directory onto an existing one merges into it.
        """
        self._commit(edits.copy(src_paths, dst_path, recursive), "api:cp")


class _VolumeManager:
    """``Volume.objects``: create, list and delete volumes by name."""

    def create(
        self,
        name: str,
        *,
        allow_existing: bool = False,
        environment_name: str | None = None,
        store: StoreLike = None,
    ) -> Volume:
        """Creates an empty volume (AlreadyExistsError if taken, unless ``allow_existing``)."""
        check_volume_name(name)
        st = _open_store(store)
        env = _environment(environment_name)
        try:
            record = st.catalog.create_volume(env, name, _whoami())
        except AlreadyExistsError:
            if not allow_existing:
                raise
            record = st.catalog.get_volume(env, name)
        return Volume(st, env, record.name, volume_id=record.id)

    def list(
        self,
        *,
        max_objects: int | None = None,
        created_before: datetime | str | None = None,
        environment_name: str | None = None,
        store: StoreLike = None,
    ) -> list[Volume]:
        """The volumes of an environment, newest first."""
        if max_objects is not None and max_objects < 0:
            raise InvalidError("max_objects must be >= 0")
        st = _open_store(store)
        env = _environment(environment_name)
        records = sorted(st.catalog.list_volumes(env), key=lambda v: v.created_at, reverse=True)
        if created_before is not None:
            limit = _to_datetime(created_before)
            # Compare as datetimes (microseconds), as info().created_at shows them: a float
            # timestamp can differ from its datetime in the last bits.
            records = [v for v in records if datetime.fromtimestamp(v.created_at, UTC) < limit]
        if max_objects is not None:
            records = records[:max_objects]
        return [Volume(st, env, v.name, volume_id=v.id) for v in records]

    def delete(
        self,
        name: str,
        *,
        allow_missing: bool = False,
        environment_name: str | None = None,
        store: StoreLike = None,
    ) -> None:
        """Deletes a volume by name (NotFoundError if missing, unless ``allow_missing``)."""
        check_volume_name(name)
        try:
            _open_store(store).catalog.delete_volume(_environment(environment_name), name)
        except NotFoundError:
            if not allow_missing:
                raise


Volume.objects = _VolumeManager()

__all__ = ["StoreLike", "Volume"]
