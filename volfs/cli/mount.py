"""The commands that start and stop mounts: ``volfs mount``, ``unmount``, ``recover``.

Owns those commands and what they say. ``volfs mount`` starts its daemon through
:mod:`volfs.mount.launcher` (the same launcher :meth:`volfs.Volume.mount` uses) or, with
``--foreground``, serves in this process (:func:`volfs.mount.daemon.run_daemon`);
``unmount`` asks the daemon over its control socket (:mod:`volfs.control`) and waits for it
through the launcher; ``recover`` handles the overlays of daemons that died. The commands
that only talk to running daemons (``commit``, ``reload``, ``status``) are
:mod:`volfs.cli.control`'s. The package's ``__init__`` registers them on the root group.

Must not: supervise processes itself (spawning, readiness, reaping are the launcher's);
hold mount behaviour (the daemon's); turn errors into exit codes (``_common.VolfsGroup``).
"""

from __future__ import annotations

import json
import os

import click

from volfs import control
from volfs.cli import stats
from volfs.cli._common import env_option, json_option, open_store, say, stdin_is_terminal, warn
from volfs.config import DEFAULT_AUTOCOMMIT_SECONDS
from volfs.errors import InvalidError, MountError
from volfs.names import check_volume_name

#: How long ``volfs unmount`` waits for the daemon to exit before it only warns.
UNMOUNT_WAIT = 30.0


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
        warn(
            f"warning: {len(orphans)} crashed mount(s) of {name!r} left uncommitted changes; "
            "run `volfs recover` to commit them (or `volfs recover --discard`)"
        )
    if foreground:
        code = daemon.run_daemon(options, ready_fd)
        ctx.exit(code)
    served = launcher.start(options)
    say(
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
            say(
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
        warn(
            f"warning: the daemon of {real} (pid {info.pid}) has not exited after "
            f"{UNMOUNT_WAIT:.0f} s"
        )
    if result.get("error"):
        raise MountError(result["error"])
    snapshot = result.get("snapshot")
    if result.get("volume_deleted"):
        say(f"unmounted {real}: its volume was deleted, so its uncommitted changes were discarded")
        return
    say(f"unmounted {real}" + (f" (committed {snapshot})" if snapshot else ""))


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
            say("no orphaned overlays")
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
        say("no orphaned overlays")
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
            say(line)
    if any(r["action"] == "failed" for r in results):
        ctx.exit(1)


__all__ = ["mount_cmd", "recover_cmd", "unmount_cmd"]
