"""The mount commands: ``volfs mount``, ``unmount``, ``commit``, ``reload``, ``status``,
``recover``.

Owns those commands and what they say. ``volfs mount`` starts its daemon through
:mod:`volfs.mount.launcher` (the same launcher :meth:`volfs.Volume.mount` uses) or, with
``--foreground``, serves in this process (:func:`volfs.mount.daemon.run_daemon`); the
others talk to running daemons over their control socket (:mod:`volfs.control`) and wait
for them through the launcher. The package's ``__init__`` registers them on the root group.

Must not: supervise processes itself (spawning, readiness, reaping are the launcher's);
hold mount behaviour (the daemon's); turn errors into exit codes (``_common.VolfsGroup``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from volfs import control
from volfs.cli import stats
from volfs.cli._common import (
    CliState,
    env_option,
    json_option,
    open_store,
    stdin_is_terminal,
    table,
)
from volfs.config import DEFAULT_AUTOCOMMIT_SECONDS, default_store_path
from volfs.errors import InvalidError, MountError, VolfsError
from volfs.names import check_volume_name
from volfs.remote import store_identity

#: How long ``volfs unmount`` waits for the daemon to exit before it only warns.
UNMOUNT_WAIT = 30.0


def _recorded_paths(root: Path) -> set[str]:
    """The mountpoints this store's mount records name (``overlays/*/mount.json``), read
    without opening the store: they tell which unanswering mounts are this store's."""
    paths = set()
    try:
        overlays = list((root / "overlays").iterdir())
    except OSError:  # no such store (yet), or not ours to read: it records no mount
        return set()
    for overlay in overlays:
        try:
            paths.add(json.loads((overlay / "mount.json").read_text())["path"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return paths


def _scope(
    ctx: click.Context, path: str | None, all_stores: bool
) -> list[control.MountInfo | control.Unreachable]:
    """What commit/reload/status act on: the mount holding PATH; else the mounts of the
    current store (``--store`` / ``VOLFS_STORE`` / the default) visible here; with --all,
    those of every store."""
    if path is not None:
        if all_stores:
            raise click.UsageError("give a PATH or --all, not both")
        return [control.mount_info(path)]
    if all_stores:
        return control.mounts(None)
    root = ctx.ensure_object(CliState).store_path or default_store_path()
    return control.mounts(store_identity(root), _recorded_paths(root))


def _targets(ctx: click.Context, path: str | None, all_stores: bool) -> list[control.MountInfo]:
    """The mounts to commit or reload; one that does not answer is skipped with a warning
    (`volfs status` shows it, `volfs recover` handles a dead one)."""
    out = []
    for m in _scope(ctx, path, all_stores):
        if isinstance(m, control.Unreachable):
            _warn(f"warning: skipped {m.path}: {m.error}")
        else:
            out.append(m)
    return out


def _none_found(all_stores: bool) -> str:
    # Plain commands see one store's mounts: say so, or "nothing" reads like a bug.
    return "no volfs mounts" if all_stores else "no volfs mounts of this store (--all: every store)"


def _all_option(f: Any) -> Any:
    return click.option(
        "--all",
        "all_stores",
        is_flag=True,
        help="Without PATH: the mounts of every store, not only the current store's.",
    )(f)


def _say(message: str) -> None:
    """A result: stdout (what a script captures)."""
    click.echo(message)


def _warn(message: str) -> None:
    """A diagnostic: stderr."""
    click.echo(message, err=True)


@click.command("mount")
@click.argument("name")
@click.argument("path", type=click.Path(file_okay=False))
@env_option
@click.option("--read-only", is_flag=True, help="Every write fails with EROFS.")
@click.option("--snapshot", metavar="ID", help="Mount this past snapshot (always read-only).")
@click.option(
    "--sub-path",
    metavar="DIR",
    help="Mount only this directory of the volume (it must exist); commits change only it.",
)
@click.option(
    "--autocommit",
    type=float,
    default=DEFAULT_AUTOCOMMIT_SECONDS,
    show_default=True,
    envvar="VOLFS_AUTOCOMMIT",
    metavar="SECONDS",
    help="Commit in the background this often; 0 turns it off (also VOLFS_AUTOCOMMIT).",
)
@click.option(
    "--nonempty", is_flag=True, help="Mount over a directory that has files (hiding them)."
)
@click.option(
    "--keep-open",
    is_flag=True,
    help="Reloads keep open files (each reads what it opened) instead of refusing.",
)
@click.option(
    "--follow",
    type=float,
    metavar="SECONDS",
    help="Reload (keeping open files) whenever the volume's head moves, checked this often.",
)
@click.option(
    "--foreground", is_flag=True, help="Serve in this process, logging to stderr (systemd)."
)
@stats.metrics_options
@click.option("--ready-fd", type=int, hidden=True)
@click.option("--mount-id", hidden=True)
@click.option("--log-file", hidden=True)
@click.pass_context
def mount_cmd(
    ctx: click.Context,
    name: str,
    path: str,
    environment: str,
    read_only: bool,
    snapshot: str | None,
    sub_path: str | None,
    autocommit: float,
    nonempty: bool,
    keep_open: bool,
    follow: float | None,
    foreground: bool,
    metrics: str | None,
    metrics_public: bool,
    log_level: str,
    ready_fd: int | None,
    mount_id: str | None,
    log_file: str | None,
) -> None:
    """Mount volume NAME at PATH; returns once the mount is ready."""
    # Here, not at the top: the commands that only talk to a daemon start without pyfuse3
    # and trio (`volfs commit` is run often, by scripts).
    from volfs.mount import daemon, launcher
    from volfs.mount import recover as recovery

    check_volume_name(name)
    if snapshot is not None and not snapshot.strip():  # an empty $VAR: not "the head, writable"
        raise InvalidError("--snapshot needs a snapshot id (see `volfs volume log NAME`)")
    if not autocommit >= 0:  # also refuses nan, which would end the daemon at its first sleep
        raise InvalidError("--autocommit must be 0 (off) or a positive number of seconds")
    store = open_store(ctx)
    store.catalog.get_volume(environment, name)  # fail here, not in the daemon's log
    if follow is not None and not (0 < follow < float("inf")):
        raise InvalidError("--follow must be a positive number of seconds")
    if follow is not None and snapshot is not None:
        raise InvalidError("--follow follows the head: it cannot be used with --snapshot")
    options = daemon.MountOptions(
        str(store.root),
        name,
        environment,
        path,
        read_only,
        snapshot,
        autocommit,
        sub_path=sub_path,
        nonempty=nonempty,
    )
    stats.apply_options(options, metrics, metrics_public, log_level, mount_id, log_file)
    options.keep_open, options.follow = keep_open, follow
    orphans = [
        o
        for o in recovery.find_orphans(store)
        if o.record
        and o.record.volume_name == name
        and o.record.environment == environment
        and not o.record.read_only
    ]
    if orphans and ready_fd is None:
        _warn(
            f"warning: {len(orphans)} crashed mount(s) of {name!r} left uncommitted changes; "
            "run `volfs recover` to commit them (or `volfs recover --discard`)"
        )
    if foreground:
        code = daemon.run_daemon(options, ready_fd)
        ctx.exit(code)
    served = launcher.start(options)
    _say(
        f"mounted {name} at {os.path.realpath(path)} (daemon pid {served.pid}, {served.mount_id}, "
        f"log {served.log_path})"
    )


@click.command("unmount")
@click.argument("path", type=click.Path())
@click.option("--no-commit", is_flag=True, help="Discard the changes not committed yet.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before discarding.")
@click.option("--force", is_flag=True, help="Unmount even with files open.")
def unmount_cmd(path: str, no_commit: bool, yes: bool, force: bool) -> None:
    """Commit, then unmount the volfs mount at PATH."""
    from volfs.mount import launcher
    from volfs.mount import recover as recovery

    real = os.path.realpath(path)
    if real not in control.volfs_mountpoints():
        raise InvalidError(f"{path} is not a volfs mount")
    try:
        info = control.mount_info(real)
    except MountError:
        if recovery.clean_stale_mount(real):
            _say(
                f"the daemon of {real} was gone; detached its stale mount "
                "(run `volfs recover` for its uncommitted changes)"
            )
            return
        raise
    if no_commit and not yes:
        if not stdin_is_terminal():
            raise InvalidError("--no-commit discards changes: add --yes to confirm")
        click.confirm(f"Discard the uncommitted changes of {real}?", abort=True)
    result = control.call(info.socket, "unmount", discard=no_commit, force=force, pid=os.getpid())
    if not launcher.Daemon(real, info.pid).wait_gone(UNMOUNT_WAIT):
        _warn(
            f"warning: the daemon of {real} (pid {info.pid}) has not exited after "
            f"{UNMOUNT_WAIT:.0f} s"
        )
    if result.get("error"):
        raise MountError(result["error"])
    snapshot = result.get("snapshot")
    if result.get("volume_deleted"):
        _say(f"unmounted {real}: its volume was deleted, so its uncommitted changes were discarded")
        return
    _say(f"unmounted {real}" + (f" (committed {snapshot})" if snapshot else ""))


@click.command("commit")
@click.argument("path", required=False, type=click.Path())
@click.option(
    "--if-unchanged",
    is_flag=True,
    help="Refuse (conflict) if a path this mount touched was changed by someone else.",
)
@_all_option
@json_option
@click.pass_context
def commit_cmd(
    ctx: click.Context, path: str | None, if_unchanged: bool, all_stores: bool, as_json: bool
) -> None:
    """Publish the changes of the mount holding PATH (no PATH: every mount of the current
    store visible to you; with --all, of every store)."""
    results = []
    for info in _targets(ctx, path, all_stores):
        result = control.call(info.socket, "commit", if_unchanged=if_unchanged)
        results.append({"path": info.path, **result})
        if not as_json:
            snapshot = result.get("snapshot")
            _say(f"{info.path}: " + (f"committed {snapshot}" if snapshot else "nothing to commit"))
            for overwritten in result.get("overwrites", []):
                # Someone else's newer version was replaced: say where it still is.
                _say(
                    f"  overwrote {overwritten}, changed by another writer; their version: "
                    f"volfs volume get {info.volume_name} {overwritten} - --snapshot "
                    f"{result.get('previous')}"
                )
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not results:
        _say(_none_found(all_stores))


@click.command("reload")
@click.argument("path", required=False, type=click.Path())
@_all_option
@click.option(
    "--keep-open/--no-keep-open",
    default=None,
    help="Reload with files open: each keeps what it opened (default: the mount's option).",
)
@json_option
@click.pass_context
def reload_cmd(
    ctx: click.Context, path: str | None, all_stores: bool, keep_open: bool | None, as_json: bool
) -> None:
    """Commit, then switch the mount holding PATH to the volume's newest version (no PATH:
    every mount of the current store; with --all, of every store)."""
    results = []
    for info in _targets(ctx, path, all_stores):
        flags = {} if keep_open is None else {"keep_open": keep_open}
        result = control.call(info.socket, "reload", pid=os.getpid(), **flags)
        results.append({"path": info.path, **result})
        if not as_json:
            _say(f"{info.path}: reloaded to {result['snapshot']}")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not results:
        _say(_none_found(all_stores))


@click.command("status")
@click.argument("path", required=False, type=click.Path())
@_all_option
@json_option
@click.pass_context
def status_cmd(ctx: click.Context, path: str | None, all_stores: bool, as_json: bool) -> None:
    """The mounts of the current store (or the one holding PATH; --all: of every store):
    volume, path, pid, base snapshot, dirty paths, open files, store, last commit and
    reload, and its counters (see `volfs stats`).

    A mount whose volume's head has moved past what its view holds (others committed; a
    `volfs reload` would show it) is marked "behind head sn-…".
    """
    rows: list[dict[str, Any]] = []
    for m in _scope(ctx, path, all_stores):
        if isinstance(m, control.Unreachable):
            rows.append({"path": m.path, "error": m.error})
            continue
        try:
            rows.append(control.call(m.socket, "status", timeout=10))
        except VolfsError as exc:
            rows.append({"path": m.path, "error": str(exc)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        _say(_none_found(all_stores))
        return
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["path"], "?", "?", "?", "?", "?", r["error"], *stats.NO_COLUMNS])
            continue
        base = r["base_snapshot"] + (f" (behind head {r['head']})" if r.get("behind") else "")
        lines.append(
            [
                r["path"],
                r["volume"],
                str(r["pid"]),
                base,
                "ro" if r["read_only"] else "rw",
                str(len(r["dirty_paths"])),
                ", ".join(r["open_files"][:3]) + (" …" if len(r["open_files"]) > 3 else ""),
                *stats.status_columns(r),
            ]
        )
    table(
        ["path", "volume", "pid", "base", "mode", "dirty", "open files", *stats.STATUS_HEADERS],
        lines,
    )


@click.command("recover")
@click.option("--discard", is_flag=True, help="Drop orphaned changes instead of committing them.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before discarding.")
@json_option
@click.pass_context
def recover_cmd(ctx: click.Context, discard: bool, yes: bool, as_json: bool) -> None:
    """Commit (or drop) what crashed mounts left uncommitted; detach their stale mounts."""
    from volfs.mount import recover as recovery

    store = open_store(ctx)
    if discard and not yes:
        orphans = recovery.find_orphans(store)
        if not orphans:
            _say("no orphaned overlays")
            return
        if not stdin_is_terminal():
            raise InvalidError("--discard drops uncommitted changes: add --yes to confirm")
        click.confirm(
            f"Discard the uncommitted changes of {len(orphans)} crashed mount(s)?", abort=True
        )
    results = [recovery.describe(r) for r in recovery.recover(store, discard=discard)]
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not results:
        _say("no orphaned overlays")
    for r in results:
        if not as_json:
            where = f"{r['volume']} at {r['path']}" if r["volume"] else r["mount_id"]
            line = f"{where}: {r['action']}"
            if r["snapshot"]:
                line += f" {r['snapshot']}"
            if r["detail"]:
                line += f" ({r['detail']})"
            if r["stale_mount_cleaned"]:
                line += "; stale FUSE mount detached"
            _say(line)
    if any(r["action"] == "failed" for r in results):
        ctx.exit(1)


__all__ = ["commit_cmd", "mount_cmd", "recover_cmd", "reload_cmd", "status_cmd", "unmount_cmd"]
