"""The ``volfs`` command line: the root group, and the command groups registered on it.

One module per command group, each defining its commands without knowing where they hang:

- :mod:`~volfs.cli.volume`: ``volfs volume …`` (mirrors ``modal volume``)
- :mod:`~volfs.cli.mount`: ``mount``, ``unmount``, ``commit``, ``reload``, ``status``, ``recover``
- :mod:`~volfs.cli.admin`: ``fsck``, ``gc``, ``volume retention``, ``volume rollback``
- :mod:`~volfs.cli.fork`: ``volume fork``, ``volume diff``
- :mod:`~volfs.cli.stats`: ``volfs stats`` (and the observability options of ``mount``)
- :mod:`~volfs.cli.store`: ``volfs store init`` / ``info`` (distributed mode)
- :mod:`~volfs.cli._common`: what they share — the error boundary that makes every error
  one ``Error: …`` line and an exit code, the store, options, tables and JSON

This file builds :data:`cli` and registers them (so the arrows point one way: this file
imports the command modules, they import ``_common``, nothing imports this file back), and
holds :func:`main`, the ``volfs`` console script (also ``python -m volfs``).

Must not: define commands or helpers of its own; hold behaviour (that belongs in
:mod:`volfs.api` or, for mounts, :mod:`volfs.control` and :mod:`volfs.mount.launcher`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from volfs import __version__
from volfs.cli import admin, entrypoint, fork, mount, stats, store, volume
from volfs.cli._common import CliState, VolfsGroup, run


@click.group(cls=VolfsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="VOLFS_STORE",
    metavar="PATH",
    help="The store directory (also VOLFS_STORE; default /var/lib/volfs as root, "
    "else $XDG_DATA_HOME/volfs).",
)
@click.version_option(__version__, prog_name="volfs")
@click.pass_context
def cli(ctx: click.Context, store_path: Path | None) -> None:
    """volfs: persistent volumes for containers, shaped like modal.Volume."""
    ctx.obj = CliState(store_path)


for _command in (
    volume.volume_group,
    store.store_group,
    admin.fsck_cmd,
    admin.gc_cmd,
    mount.mount_cmd,
    mount.unmount_cmd,
    mount.commit_cmd,
    mount.reload_cmd,
    mount.status_cmd,
    mount.recover_cmd,
    entrypoint.run_cmd,
    stats.stats_cmd,
):
    cli.add_command(_command)
for _command in (admin.retention_cmd, admin.rollback_cmd, fork.fork_cmd, fork.diff_cmd):
    volume.volume_group.add_command(_command)


def main(args: Sequence[str] | None = None, prog_name: str | None = None) -> NoReturn:
    """The console script: runs :data:`cli` and exits with its code; every error, inside a
    command or not, ends as one ``Error:`` line (see :func:`volfs.cli._common.run`)."""
    run(cli, args, prog_name)


__all__ = ["cli", "main"]
