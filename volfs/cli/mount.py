"""The mount side of the ``volfs`` command line: mount, unmount, commit, reload, status, recover.

Registered on :data:`volfs.cli.cli` (``cli.py`` imports this module). Like the volume
commands, these parse, call the daemon (``daemon.py``) or its control socket
(``control.py``), and format; errors become one line and an exit code in ``cli.py``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from volfs import control
from volfs.mount import daemon
from volfs.mount import recover as recovery
from volfs.cli import _table, cli, env_option, json_option, open_store
from volfs.config import DEFAULT_AUTOCOMMIT_SECONDS
from volfs.errors import InvalidError, MountError, VolfsError
from volfs.names import check_volume_name


def _targets(path: str | None) -> list[control.MountInfo]:
    if path is not None:
        return [control.mount_info(path)]
    return control.all_mounts()


def _say(message: str) -> None:
    click.echo(message, err=True)


@cli.command("mount")
@click.argument("name")
@click.argument("path", type=click.Path(file_okay=False))
@env_option
@click.option("--read-only", is_flag=True, help="Every write fails with EROFS.")
@click.option("--snapshot", metavar="ID", help="Mount this past snapshot (always read-only).")
@click.option("--autocommit", type=float, default=DEFAULT_AUTOCOMMIT_SECONDS, show_default=True,
              metavar="SECONDS", help="Commit in the background this often; 0 turns it off.")
@click.option("--foreground", is_flag=True, help="Serve in this process (systemd, containers).")
@click.option("--ready-fd", type=int, hidden=True)
@click.pass_context
def mount_cmd(ctx: click.Context, name: str, path: str, environment: str, read_only: bool,
              snapshot: str | None, autocommit: float, foreground: bool, ready_fd: int | None) -> None:
    """Mount volume NAME at PATH; returns once the mount is ready."""
    check_volume_name(name)
    if snapshot is not None and not snapshot.strip():  # an empty $VAR: not "the head, writable"
        raise InvalidError("--snapshot needs a snapshot id (see `volfs volume log NAME`)")
    if not autocommit >= 0:  # also refuses nan, which would end the daemon at its first sleep
        raise InvalidError("--autocommit must be 0 (off) or a positive number of seconds")
    store = open_store(ctx)
    store.catalog.get_volume(environment, name)  # fail here, not in the daemon's log
    options = daemon.MountOptions(str(store.root), name, environment, path, read_only, snapshot, autocommit)
    orphans = [o for o in recovery.find_orphans(store) if o.record and o.record.volume_name == name
               and o.record.environment == environment and not o.record.read_only]
    if orphans and ready_fd is None:
        _say(f"warning: {len(orphans)} crashed mount(s) of {name!r} left uncommitted changes; "
             "run `volfs recover` to commit them (or `volfs recover --discard`)")
    if foreground:
        code = daemon.run_daemon(options, ready_fd)
        ctx.exit(code)
    log_path = store.run_dir / f"daemon-{int(time.time())}-{os.getpid()}.log"
    pid, mount_id = daemon.start_daemon(options, log_path)
    _say(f"mounted {name} at {os.path.realpath(path)} (daemon pid {pid}, {mount_id}, log {log_path})")


@cli.command("unmount")
@click.argument("path", type=click.Path())
@click.option("--no-commit", is_flag=True, help="Discard the changes not committed yet.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before discarding.")
@click.option("--force", is_flag=True, help="Unmount even with files open.")
def unmount_cmd(path: str, no_commit: bool, yes: bool, force: bool) -> None:
    """Commit, then unmount the volfs mount at PATH."""
    real = os.path.realpath(path)
    if real not in control.volfs_mountpoints():
        raise InvalidError(f"{path} is not a volfs mount")
    try:
        info = control.mount_info(real)
    except MountError:
        if recovery.clean_stale_mount(real):
            _say(f"the daemon of {real} was gone; detached its stale mount "
                 "(run `volfs recover` for its uncommitted changes)")
            return
        raise
    if no_commit and not yes:
        if not click.get_text_stream("stdin").isatty():
            raise InvalidError("--no-commit discards changes: add --yes to confirm")
        click.confirm(f"Discard the uncommitted changes of {real}?", abort=True)
    result = control.call(info.socket, "unmount", discard=no_commit, force=force, pid=os.getpid())
    _wait_gone(real, info.pid)
    if result.get("error"):
        raise MountError(result["error"])
    snapshot = result.get("snapshot")
    _say(f"unmounted {real}" + (f" (committed {snapshot})" if snapshot else ""))


def _wait_gone(path: str, pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.reap(pid)
        if path not in control.volfs_mountpoints() and not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.02)
    _say(f"warning: the daemon of {path} (pid {pid}) has not exited after {timeout:.0f} s")


@cli.command("commit")
@click.argument("path", required=False, type=click.Path())
@click.option("--if-unchanged", is_flag=True,
              help="Refuse (conflict) if a path this mount touched was changed by someone else.")
@json_option
def commit_cmd(path: str | None, if_unchanged: bool, as_json: bool) -> None:
    """Publish a mount's changes (no PATH: every volfs mount visible to you)."""
    results = []
    for info in _targets(path):
        result = control.call(info.socket, "commit", if_unchanged=if_unchanged)
        results.append({"path": info.path, **result})
        if not as_json:
            snapshot = result.get("snapshot")
            _say(f"{info.path}: " + (f"committed {snapshot}" if snapshot else "nothing to commit"))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not results:
        _say("no volfs mounts")


@cli.command("reload")
@click.argument("path", required=False, type=click.Path())
@json_option
def reload_cmd(path: str | None, as_json: bool) -> None:
    """Commit, then switch a mount to the volume's newest version (no PATH: every mount)."""
    results = []
    for info in _targets(path):
        result = control.call(info.socket, "reload", pid=os.getpid())
        results.append({"path": info.path, **result})
        if not as_json:
            _say(f"{info.path}: reloaded to {result['snapshot']}")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not results:
        _say("no volfs mounts")


@cli.command("status")
@json_option
def status_cmd(as_json: bool) -> None:
    """Every volfs mount: volume, path, pid, base snapshot, dirty paths, open files.

    A mount whose volume's head has moved past what its view holds (others committed; a
    `volfs reload` would show it) is marked "behind head sn-…".
    """
    rows: list[dict[str, Any]] = []
    for point in control.volfs_mountpoints():
        try:
            rows.append(control.call_mount(point, "status", timeout=10))
        except VolfsError as exc:
            rows.append({"path": point, "error": str(exc)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        _say("no volfs mounts")
        return
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["path"], "?", "?", "?", "?", "?", r["error"]])
            continue
        base = r["base_snapshot"] + (f" (behind head {r['head']})" if r.get("behind") else "")
        table.append([r["path"], r["volume"], str(r["pid"]), base,
                      "ro" if r["read_only"] else "rw", str(len(r["dirty_paths"])),
                      ", ".join(r["open_files"][:3]) + (" …" if len(r["open_files"]) > 3 else "")])
    _table(["path", "volume", "pid", "base", "mode", "dirty", "open files"], table)


@cli.command("recover")
@click.option("--discard", is_flag=True, help="Drop orphaned changes instead of committing them.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before discarding.")
@json_option
@click.pass_context
def recover_cmd(ctx: click.Context, discard: bool, yes: bool, as_json: bool) -> None:
    """Commit (or drop) what crashed mounts left uncommitted; detach their stale mounts."""
    store = open_store(ctx)
    if discard and not yes:
        orphans = recovery.find_orphans(store)
        if not orphans:
            _say("no orphaned overlays")
            return
        if not click.get_text_stream("stdin").isatty():
            raise InvalidError("--discard drops uncommitted changes: add --yes to confirm")
        click.confirm(f"Discard the uncommitted changes of {len(orphans)} crashed mount(s)?", abort=True)
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
