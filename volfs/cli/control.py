"""The commands that only talk to running mounts: ``volfs commit``, ``reload``, ``status``.

Each asks the daemon of each mount it acts on over its control socket
(:mod:`volfs.control`: connect, one request, one reply) and says what it answered. They
are run often (by scripts, after every step of a job; ``volfs reload`` by a container's
entrypoint), so what one costs is mostly the interpreter's start-up and this module's
imports: it imports no store, catalog, API or FUSE layer, nothing that logs (the root
group installs no log handler for it, so the logging module is never imported), and the
store's directory only to tell which mounts are the current store's (no PATH).
``tests/test_cli_start.py`` counts what they import.

Must not: open the store; import :mod:`volfs.mount` or anything that logs; turn errors
into exit codes (``_common.VolfsGroup``).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from volfs import control
from volfs.cli import stats
from volfs.cli._common import CliState, json_option, say, table, warn
from volfs.config import default_store_path
from volfs.errors import VolfsError

if TYPE_CHECKING:
    from pathlib import Path


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
    # Only here (a plain `volfs commit`): telling a store's mounts takes its directory.
    from pathlib import Path

    from volfs.remote import store_identity

    root = Path(ctx.ensure_object(CliState).store_path or default_store_path())
    return control.mounts(store_identity(root), _recorded_paths(root))


def _targets(ctx: click.Context, path: str | None, all_stores: bool) -> list[control.MountInfo]:
    """The mounts to commit or reload; one that does not answer is skipped with a warning
    (`volfs status` shows it, `volfs recover` handles a dead one)."""
    out = []
    for m in _scope(ctx, path, all_stores):
        if isinstance(m, control.Unreachable):
            warn(f"warning: skipped {m.path}: {m.error}")
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
            say(f"{info.path}: " + (f"committed {snapshot}" if snapshot else "nothing to commit"))
            for overwritten in result.get("overwrites", []):
                # Someone else's newer version was replaced: say where it still is.
                say(
                    f"  overwrote {overwritten}, changed by another writer; their version: "
                    f"volfs volume get {info.volume_name} {overwritten} - --snapshot "
                    f"{result.get('previous')}"
                )
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not results:
        say(_none_found(all_stores))


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
            say(f"{info.path}: reloaded to {result['snapshot']}")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not results:
        say(_none_found(all_stores))


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
        say(_none_found(all_stores))
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


__all__ = ["commit_cmd", "reload_cmd", "status_cmd"]
