"""The ``volfs`` command line: the root group, and the command groups registered on it.

One module per command group, each defining its commands without knowing where they hang:

- :mod:`~volfs.cli.volume`: ``volfs volume …`` (mirrors ``modal volume``)
- :mod:`~volfs.cli.mount`: ``mount``, ``unmount``, ``recover``
- :mod:`~volfs.cli.control`: ``commit``, ``reload``, ``status`` (they only talk to daemons)
- :mod:`~volfs.cli.admin`: ``fsck``, ``gc``, ``volume retention``, ``volume rollback``
- :mod:`~volfs.cli.fork`: ``volume fork``, ``volume diff``
- :mod:`~volfs.cli.stats`: ``volfs stats`` (and the observability options of ``mount``)
- :mod:`~volfs.cli.store`: ``volfs store init`` / ``info`` (distributed mode)
- :mod:`~volfs.cli._common`: what they share — the error boundary that makes every error
  one ``Error: …`` line and an exit code, the store, options, tables and JSON
- :mod:`~volfs.cli._logs`: where the log records of the layers below go (``warning: …``)

This file builds :data:`cli` and registers them (so the arrows point one way: this file
imports the command modules, they import ``_common``, nothing imports this file back), and
holds :func:`main`, the ``volfs`` console script (also ``python -m volfs``). A command's
module is imported when that command runs (or ``--help`` lists it), and gets the CLI's log
handler then, unless it is one of :data:`_QUIET`: ``volfs commit`` imports neither the API,
the catalog, pyfuse3, trio, pathlib nor logging, and starts in a few tens of ms.

Must not: define commands or helpers of its own; hold behaviour (that belongs in
:mod:`volfs.api` or, for mounts, :mod:`volfs.control` and :mod:`volfs.mount.launcher`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import NoReturn

import click

from volfs.cli._common import CliState, VolfsGroup, run

#: Each command: the module that defines it and its attribute there.
_COMMANDS = {
    "volume": ("volume", "volume_group"),
    "store": ("store", "store_group"),
    "fsck": ("admin", "fsck_cmd"),
    "gc": ("admin", "gc_cmd"),
    "mount": ("mount", "mount_cmd"),
    "unmount": ("mount", "unmount_cmd"),
    "commit": ("control", "commit_cmd"),
    "reload": ("control", "reload_cmd"),
    "status": ("control", "status_cmd"),
    "recover": ("mount", "recover_cmd"),
    "run": ("entrypoint", "run_cmd"),
    "stats": ("stats", "stats_cmd"),
}
#: Commands of ``volfs volume`` defined in other modules.
_VOLUME_COMMANDS = (
    ("admin", "retention_cmd"),
    ("admin", "rollback_cmd"),
    ("fork", "fork_cmd"),
    ("fork", "diff_cmd"),
)


#: The command modules that import nothing that logs: they run without the log handler, and
#: so without the logging module (which costs `volfs commit` a tenth of its start-up).
_QUIET = frozenset({"control"})


def _load(module: str, attribute: str) -> click.Command:
    if module not in _QUIET:
        from volfs.cli import _logs

        _logs.install()
    command: click.Command = getattr(importlib.import_module(f"volfs.cli.{module}"), attribute)
    if attribute == "volume_group" and isinstance(command, click.Group):
        for other in _VOLUME_COMMANDS:
            sub = _load(*other)
            if sub.name not in command.commands:
                command.add_command(sub)
    return command


class _LazyGroup(VolfsGroup):
    """The root group, importing a command's module only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = _COMMANDS.get(cmd_name)
        return _load(*where) if where is not None else None


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        import volfs

        click.echo(f"volfs, version {volfs.__version__}")
        ctx.exit()


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False),
    envvar="VOLFS_STORE",
    metavar="PATH",
    help="The store directory (also VOLFS_STORE; default /var/lib/volfs as root, "
    "else $XDG_DATA_HOME/volfs).",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.pass_context
def cli(ctx: click.Context, store_path: str | None) -> None:
    """volfs: persistent volumes for containers, shaped like modal.Volume."""
    ctx.obj = CliState(store_path)


def main(args: Sequence[str] | None = None, prog_name: str | None = None) -> NoReturn:
    """The console script: runs :data:`cli` and exits with its code; every error, inside a
    command or not, ends as one ``Error:`` line (see :func:`volfs.cli._common.run`)."""
    run(cli, args, prog_name)


__all__ = ["cli", "main"]
