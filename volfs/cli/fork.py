"""``volfs volume fork`` and ``volfs volume diff``: a zero-copy copy of a volume, and what
changed between two snapshots.

Owns those two commands and how their output reads; the package's ``__init__`` adds them
to the ``volume`` group. What they do is :mod:`volfs.snapshots.fork` (through
:meth:`volfs.Volume.fork`) and :mod:`volfs.snapshots.diff`.

Must not: hold behaviour of its own; turn errors into exit codes (``_common.VolfsGroup``
does).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import click

from volfs.api import Volume
from volfs.cli._common import env_option, json_option, open_store, print_json
from volfs.core.tree import Entry, Kind
from volfs.core.treediff import ChangeKind, Difference
from volfs.names import join_path
from volfs.snapshots.diff import diff_snapshots

_KIND_NAMES = {
    Kind.FILE: "file",
    Kind.DIR: "dir",
    Kind.SYMLINK: "symlink",
    Kind.FIFO: "fifo",
    Kind.SOCKET: "socket",
    Kind.CHAR_DEVICE: "char-device",
    Kind.BLOCK_DEVICE: "block-device",
}


@click.command("fork")
@click.argument("source")
@click.argument("new_name", metavar="NEW")
@click.option(
    "--snapshot", "snapshot_id", metavar="ID", help="Fork this snapshot of SOURCE (default: head)."
)
@env_option
@json_option
@click.pass_context
def fork_cmd(
    ctx: click.Context,
    source: str,
    new_name: str,
    snapshot_id: str | None,
    environment: str,
    as_json: bool,
) -> None:
    """Create volume NEW with the content of volume SOURCE (its head, or --snapshot ID).

    Constant time: no content is copied; the two volumes share their files until either
    changes them, and `volfs gc` keeps what the fork needs even once SOURCE is deleted.
    NEW's history starts at the fork (`volfs volume log NEW`).
    """
    src = Volume.from_name(source, environment, store=open_store(ctx))
    # The head read once, here: the message names exactly the snapshot that was forked.
    point = snapshot_id or src.info().head
    forked = src.fork(new_name, snapshot=point)
    info = forked.info()
    if as_json:
        print_json(
            {
                "name": info.name,
                "environment": info.environment,
                "id": info.object_id,
                "head": info.head,
                "source": source,
                "source_snapshot": point,
            }
        )
        return
    click.echo(
        f"Forked {source!r} at {point} as {new_name!r} (head {info.head}); no content copied."
    )


def _entry_json(e: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": _KIND_NAMES.get(e.kind, "other"),
        "size": e.size,
        "mode": f"{e.mode & 0o7777:04o}",
        "mtime": e.mtime_ns // 1_000_000_000,
    }
    if e.kind is Kind.SYMLINK:
        out["target"] = e.target
    return out


def _detail(d: Difference) -> str:
    """What a line adds to the path: the type change, or the old and new mode."""
    if d.change is ChangeKind.TYPE_CHANGED and d.old is not None and d.new is not None:
        return f"{_KIND_NAMES[d.old.kind]} -> {_KIND_NAMES[d.new.kind]}"
    if d.old is not None and d.new is not None and "mode" in d.fields:
        return f"mode {d.old.mode & 0o7777:04o} -> {d.new.mode & 0o7777:04o}"
    if d.change is ChangeKind.MODE_ONLY:
        return ", ".join(d.fields)
    return ""


@click.command("diff")
@click.argument("name")
@click.argument("old")
@click.argument("new", required=False)
@env_option
@json_option
@click.pass_context
def diff_cmd(
    ctx: click.Context, name: str, old: str, new: str | None, environment: str, as_json: bool
) -> None:
    """List what changed in volume NAME from snapshot OLD to snapshot NEW (default: head).

    Each path is added, removed, modified (other content: bytes, a symlink's target),
    mode-only (only metadata: mode, owner, mtime, xattrs, links) or type-changed; what is
    below an added or removed directory is listed too. Snapshot ids: `volfs volume log`.
    """
    result = diff_snapshots(open_store(ctx).catalog, name, old, new, environment=environment)
    counts = Counter(str(d.change) for d in result.differences)
    if as_json:
        print_json(
            {
                "volume": name,
                "from": result.old,
                "to": result.new,
                "counts": {str(k): counts.get(str(k), 0) for k in ChangeKind},
                "changes": [
                    {
                        "path": join_path(d.path) or "/",
                        "change": str(d.change),
                        "fields": list(d.fields),
                        "old": _entry_json(d.old) if d.old is not None else None,
                        "new": _entry_json(d.new) if d.new is not None else None,
                    }
                    for d in result.differences
                ],
            }
        )
        return
    if not result.differences:
        click.echo(f"No changes from {result.old} to {result.new}.")
        return
    width = max(len(str(d.change)) for d in result.differences)
    for d in result.differences:
        detail = _detail(d)
        line = f"{str(d.change):<{width}}  {join_path(d.path) or '/'}"
        click.echo(f"{line}  ({detail})" if detail else line)
    summary = ", ".join(f"{counts[str(k)]} {k}" for k in ChangeKind if counts.get(str(k)))
    click.echo(f"{len(result.differences)} changes from {result.old} to {result.new}: {summary}.")


__all__ = ["diff_cmd", "fork_cmd"]
