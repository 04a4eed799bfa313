"""The maintenance commands: ``volfs fsck``, ``volfs gc``, ``volfs volume retention`` and
``volfs volume rollback``.

Owns those commands and how their reports read (``volfs fsck`` prints its report, then
fails with exit code 8 — :class:`~volfs.errors.CorruptionError` — if it found damage). The
package's ``__init__`` registers them: fsck and gc on the root group, retention and rollback
on the ``volume`` group.

Must not: hold behaviour of its own — they parse, call the module that owns it
(:mod:`volfs.maintenance.fsck`, :mod:`volfs.maintenance.gc`, :mod:`volfs.snapshots.history`)
and format; turn errors into exit codes (``_common.VolfsGroup`` does).
"""

from __future__ import annotations

from typing import Any

import click

from volfs.cli._common import (
    env_option,
    human_size,
    json_option,
    local_time,
    open_store,
    print_json,
)
from volfs.errors import CorruptionError
from volfs.maintenance import gc as collect
from volfs.maintenance.fsck import FsckReport, fsck
from volfs.snapshots import history

_GRACE_HELP = (
    "Keep unreferenced blobs and trees younger than this (seconds, or 30s, 10m, 1h, "
    "2d): a commit in flight writes them before its head names them."
)


def _grace_option(f: Any) -> Any:
    return click.option(
        "--grace", default="1h", show_default=True, metavar="DURATION", help=_GRACE_HELP
    )(f)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- fsck -----------------------------------------------------------------------------------------
@click.command("fsck")
@click.option(
    "--repair",
    is_flag=True,
    help="Delete orphans older than the grace window and mark damaged snapshots; "
    "never deletes anything a snapshot references.",
)
@click.option(
    "--quick", is_flag=True, help="Check that blobs exist and their sizes, without reading them."
)
@_grace_option
@json_option
@click.pass_context
def fsck_cmd(ctx: click.Context, repair: bool, quick: bool, grace: str, as_json: bool) -> None:
    """Verify every head, snapshot, tree and blob of the store; report damage and orphans.

    Exits 0 when no damage is found, 8 when some is (orphans are not damage).
    """
    report = fsck(open_store(ctx), repair=repair, quick=quick, grace=collect.parse_duration(grace))
    if as_json:
        print_json(report.to_json())
    else:
        _print_fsck(report)
    if not report.clean:
        raise CorruptionError(
            f"fsck found {_plural(len(report.problems), 'problem')}, affecting "
            f"{_plural(len(report.damaged_snapshots), 'snapshot')}"
            + ("" if repair else "; `volfs fsck --repair` marks them damaged")
        )


def _print_fsck(report: FsckReport) -> None:
    read = f", {human_size(report.bytes_read)} read" if not report.quick else ", sizes only"
    click.echo(
        f"Checked {_plural(report.volumes, 'volume')}, {_plural(report.snapshots, 'snapshot')}, "
        f"{_plural(report.trees, 'tree')} and {_plural(report.blobs, 'blob')}{read}."
    )
    for problem in report.problems:
        click.echo(f"DAMAGE {problem.kind} {problem.subject}: {problem.detail}")
        where: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        for a in problem.affected:
            where.setdefault((a.volume, a.path), []).append((a.snapshot, a.head))
        for shown, ((vol, path), snaps) in enumerate(sorted(where.items())):
            if shown == 20:
                click.echo(f"    … and {len(where) - 20} more paths")
                break
            heads = [s for s, head in snaps if head]
            first = f"head {heads[0]}" if heads else snaps[0][0]
            more = len(snaps) - 1
            also = f" and {_plural(more, 'older snapshot')}" if more else ""
            click.echo(f"    {vol}:/{path.lstrip('/')}  in {first}{also}")
    o = report.orphans
    if "skipped" in o:
        click.echo(f"Orphans: not counted ({o['skipped']}).")
    elif o:
        parts = [
            f"{_plural(o['blobs'], 'blob')} ({human_size(o['blob_bytes'])})",
            _plural(o["trees"], "tree"),
            _plural(o["temp_files"], "temp file"),
        ]
        if o["snapshots"]:
            parts.append(_plural(len(o["snapshots"]), "snapshot") + " of deleted volumes")
        verb = "Orphans removed" if report.repairs else "Orphans"
        click.echo(f"{verb}: " + ", ".join(parts) + ".")
        young = o["blobs_young"] + o["trees_young"] + o["temp_files_young"]
        if young:
            click.echo(
                f"Younger than the grace window (kept): {_plural(o['blobs_young'], 'blob')}, "
                f"{_plural(o['trees_young'], 'tree')}, {_plural(o['temp_files_young'], 'temp file')}."
            )
    for overlay in o.get("overlays", []):
        where_ = (
            f"{overlay['volume']} at {overlay['path']}" if overlay["volume"] else "unknown volume"
        )
        click.echo(
            f"Crashed mount {overlay['mount_id']} ({where_}) left changes: run `volfs recover`."
        )
    for note in report.notes:
        click.echo(f"Note: {note}")
    for repair in report.repairs:
        click.echo(f"Repair: {repair}")
    if report.clean:
        click.echo("No damage found.")


# -- gc -------------------------------------------------------------------------------------------
@click.command("gc")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be deleted.")
@_grace_option
@json_option
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, grace: str, as_json: bool) -> None:
    """Delete snapshots retention drops, and blobs and trees nothing needs any more.

    Kept: every snapshot retention keeps (`volfs volume retention`), the base and view of
    every live or crashed mount, and whatever is younger than the grace window.
    """
    report = collect.collect(open_store(ctx), grace=collect.parse_duration(grace), dry_run=dry_run)
    if as_json:
        print_json(report.to_json())
        return
    would = "Would drop" if dry_run else "Dropped"
    by_volume: dict[tuple[str, str], int] = {}
    for d in report.snapshots_dropped:
        key = (d["volume"], d["reason"])
        by_volume[key] = by_volume.get(key, 0) + 1
    for (vol, reason), n in sorted(by_volume.items()):
        click.echo(f"{would} {_plural(n, 'snapshot')} of {vol} ({reason}).")
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(
        f"{verb} {_plural(report.blobs_deleted, 'blob')} ({human_size(report.bytes_freed)}), "
        f"{_plural(report.trees_deleted, 'tree')} and {_plural(report.temp_files_deleted, 'temp file')}."
    )
    if report.blobs_young or report.trees_young or report.temp_files_young:
        click.echo(
            f"Kept as younger than the grace window: {_plural(report.blobs_young, 'blob')}, "
            f"{_plural(report.trees_young, 'tree')}, {_plural(report.temp_files_young, 'temp file')}."
        )
    if report.leases:
        click.echo(
            f"{_plural(report.leases, 'write')} in flight: kept everything written since "
            f"{local_time(report.cutoff)}."
        )
    for note in report.notes:
        click.echo(f"Note: {note}")


# -- retention and rollback -----------------------------------------------------------------------
@click.command("retention")
@click.argument("name")
@click.option(
    "--keep-last", type=click.IntRange(min=1), metavar="N", help="Keep the newest N snapshots."
)
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0, min_open=True),
    metavar="T",
    help="Keep every snapshot younger than T days.",
)
@click.option("--keep-all", is_flag=True, help="Keep every snapshot (the default).")
@env_option
@json_option
@click.pass_context
def retention_cmd(
    ctx: click.Context,
    name: str,
    keep_last: int | None,
    keep_days: float | None,
    keep_all: bool,
    environment: str,
    as_json: bool,
) -> None:
    """Show or set how much history of volume NAME is kept.

    A snapshot either rule keeps is kept; the head, mounts' bases and snapshots that were
    the head within gc's grace window always are. `volfs gc` drops the rest.
    """
    store = open_store(ctx)
    if keep_all and (keep_last is not None or keep_days is not None):
        raise click.UsageError("--keep-all cannot be combined with --keep-last or --keep-days")
    if keep_all or keep_last is not None or keep_days is not None:
        policy = history.set_retention(
            store.catalog, name, environment, keep_last=keep_last, keep_days=keep_days
        )
        changed = True
    else:
        policy = history.get_retention(
            store.catalog, store.catalog.get_volume(environment, name).id
        )
        changed = False
    if as_json:
        print_json({"name": name, "environment": environment, **policy.to_json()})
        return
    suffix = "" if policy.keeps_everything else " (`volfs gc` drops older snapshots)"
    click.echo(f"Retention of {name!r}{' set to' if changed else ':'} {policy.describe()}{suffix}.")


@click.command("rollback")
@click.argument("name")
@click.argument("snapshot")
@env_option
@json_option
@click.pass_context
def rollback_cmd(
    ctx: click.Context, name: str, snapshot: str, environment: str, as_json: bool
) -> None:
    """Make SNAPSHOT's content the head of volume NAME again, as a new commit.

    Nothing is lost: the current head and everything since SNAPSHOT stay in history
    (`volfs volume log`). Mounts see the change after `volfs reload`.
    """
    result = history.rollback(open_store(ctx).catalog, name, snapshot, environment)
    if as_json:
        print_json(
            {
                "snapshot": result.snapshot,
                "source": result.source,
                "previous_head": result.previous_head,
                "changed_count": result.changed_count,
                "changed": [{"op": op, "path": p} for op, p in result.changed],
            }
        )
        return
    if result.snapshot is None:
        click.echo(
            f"Nothing to roll back: the head of {name!r} already holds {result.source}'s content."
        )
        return
    click.echo(
        f"Rolled {name!r} back to {result.source} as new snapshot {result.snapshot} "
        f"({_plural(result.changed_count, 'change')}); the previous head "
        f"{result.previous_head} stays in history."
    )


__all__ = ["fsck_cmd", "gc_cmd", "retention_cmd", "rollback_cmd"]
