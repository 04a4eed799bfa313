"""What every ``volfs`` command group shares: the error boundary, the store, options, output.

Owns:

- the one place where errors become exit codes: :class:`VolfsGroup` (the root group's
  class) turns every :class:`~volfs.errors.VolfsError` and ``OSError`` raised inside a
  command into one ``Error: …`` line on stderr and the error's ``exit_code`` — never a
  traceback (``VOLFS_DEBUG=1`` shows one for an unexpected exception) — and :func:`run`
  does the same for what fails outside a command (usage errors exit 2, as click does);
- the store the root group's ``--store`` names (:class:`CliState`, :func:`open_store`) and
  the options several groups take (:func:`env_option`, :func:`json_option`);
- output helpers: :func:`table`, :func:`print_json`, :func:`human_size`,
  :func:`local_time`, :func:`progress_bar`.

Every command imports this, `volfs commit` too, whose cost is mostly its start-up: what
this imports at the top, every command pays for (tests/test_cli_start.py counts it).

Must not: define commands, or import a command module or the package's ``__init__``
(they import this); hold behaviour of its own (that belongs in :mod:`volfs.api` or, for
mounts, :mod:`volfs.control` and :mod:`volfs.mount.launcher`); talk to LMDB or blobs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import click

from volfs.config import DEFAULT_ENVIRONMENT
from volfs.errors import PidCollisionError, VolfsError

if TYPE_CHECKING:  # imported when a command opens the store: `volfs commit` never does
    from volfs.store import Store

#: Show a progress bar for transfers at least this large (and only on a terminal).
PROGRESS_MIN_BYTES = 64 * 1024 * 1024

_OS_EXIT_CODES = {2: 3, 17: 4, 21: 2, 20: 2, 22: 2, 13: 7, 1: 7, 28: 9}  # errno -> exit code


# -- errors -------------------------------------------------------------------------------
class UserError(click.ClickException):
    """A one-line error with its own exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        # One line, always: a multi-line message reads like a traceback in logs.
        super().__init__(" ".join(message.split()) or "unknown error")
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance


def _os_message(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text += f": {os.fsdecode(exc.filename)!r}"
    if exc.filename2 is not None:
        text += f" -> {os.fsdecode(exc.filename2)!r}"
    return text


class VolfsGroup(click.Group):
    """The root group: the one place where exceptions become ``Error: …`` and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            raise  # click's main exits quietly when the reader of stdout went away
        except PidCollisionError:
            raise  # run() starts the command again, with another pid
        except VolfsError as exc:
            message = exc.cli_message or str(exc) or type(exc).__name__
            raise UserError(message, exc.exit_code) from None
        except OSError as exc:
            raise UserError(_os_message(exc), _OS_EXIT_CODES.get(exc.errno or 0, 1)) from None
        except Exception as exc:
            if os.environ.get("VOLFS_DEBUG"):
                raise
            raise UserError(
                f"internal error: {type(exc).__name__}: {exc} "
                "(run with VOLFS_DEBUG=1 for a traceback)",
                1,
            ) from None


def run(group: click.Group, args: Sequence[str] | None, prog_name: str | None) -> NoReturn:
    """Runs ``group`` as a console script and exits with its code.

    Errors inside commands are formatted by :class:`VolfsGroup`; this catches what
    happens outside them, so even those end as one ``Error:`` line — and, when the command
    line asked for ``--json``, also as a JSON object on stdout, where its reader looks.
    """
    argv = list(args) if args is not None else sys.argv[1:]
    as_json = "--json" in (argv[: argv.index("--")] if "--" in argv else argv)
    stdout = sys.stdout = _Watched(sys.stdout)

    def fail(message: str, code: int) -> NoReturn:
        message = " ".join(message.split())
        # Unless the command printed its own JSON already (fsck's report, then exit 8).
        if as_json and not stdout.written:
            click.echo(json.dumps({"error": message, "exit_code": code}))
        click.echo(f"Error: {message}", err=True)
        sys.exit(code)

    respawns = int(os.environ.pop(_RESPAWN_ENV, "0") or 0)
    try:
        rv = group.main(args=argv, prog_name=prog_name or "volfs", standalone_mode=False)
    except PidCollisionError as exc:
        if respawns >= MAX_RESPAWNS:
            fail(str(exc), exc.exit_code)
        sys.exit(_respawn(argv, respawns + 1))
    except click.UsageError as exc:  # exit 2; one line, like every other error
        command = exc.ctx.command_path if exc.ctx is not None else (prog_name or "volfs")
        fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
    except click.ClickException as exc:  # UserError
        fail(exc.format_message(), exc.exit_code)
    except click.Abort as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            click.echo(f"interrupted: {interrupted_state()}", err=True)
            sys.exit(130)  # as a shell reports a SIGINT
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # outside click's own handling (while it parsed, say)
        click.echo(f"interrupted: {interrupted_state()}", err=True)
        sys.exit(130)
    except VolfsError as exc:
        fail(exc.cli_message or str(exc), exc.exit_code)
    except OSError as exc:
        fail(_os_message(exc), _OS_EXIT_CODES.get(exc.errno or 0, 1))
    sys.exit(rv if isinstance(rv, int) else 0)


class _Watched:
    """A text stream that remembers whether anything was written to it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.written = False

    def write(self, text: str) -> int:
        self.written = self.written or bool(text)
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


#: How often a command starts itself again to get a pid no other PID namespace's process
#: holds in the store's LMDB reader table (PidCollisionError): each try is a new pid.
MAX_RESPAWNS = 8
_RESPAWN_ENV = "VOLFS_PID_RESPAWN"


def _respawn(argv: list[str], attempt: int) -> int:
    """Runs this command again in a child (a new pid), as this process: the same fds (a
    daemon's --ready-fd among them), its signals forwarded; returns its exit code."""
    env = {**os.environ, _RESPAWN_ENV: str(attempt)}
    import signal  # rare: not imported by every command's start-up
    import subprocess

    child = subprocess.Popen([sys.executable, "-m", "volfs", *argv], env=env, close_fds=False)

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    code = child.wait()
    return 128 - code if code < 0 else code


def interrupted_state() -> str:
    """What an interrupted command leaves: every write of this process is one atomic
    commit, so either it landed (and is named) or nothing did; a request already sent to a
    mount's daemon is that daemon's to finish."""
    control = sys.modules.get("volfs.control")  # not imported: no request sent
    if control is not None and control.requests_sent:
        return "a mount's daemon finishes the request it was sent (see `volfs status`)"
    commit = sys.modules.get("volfs.snapshots.commit")  # not imported: nothing committed
    if commit is not None and commit.landed:
        return f"committed {commit.landed[-1]} before that"
    return "nothing was committed"


# -- the store and shared options ---------------------------------------------------------
class CliState:
    """What the root group's options leave for the commands below it."""

    def __init__(self, store_path: str | None) -> None:
        self.store_path = store_path
        self._store: Store | None = None

    def store(self) -> Store:
        if self._store is None:
            from volfs.store import Store

            self._store = Store.open(self.store_path)
        return self._store


def open_store(ctx: click.Context) -> Store:
    """The store the root group's ``--store`` / ``VOLFS_STORE`` names (opened once)."""
    return ctx.ensure_object(CliState).store()


def env_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``-e/--env``: the environment (namespace of volume names), also ``VOLFS_ENV``
    (``modal`` spells it ``-e/--env`` on every command that has one)."""
    return click.option(
        "-e",
        "--env",
        "environment",
        envvar="VOLFS_ENV",
        default=DEFAULT_ENVIRONMENT,
        show_default=True,
        metavar="ENV",
        help="Environment holding the volume (also VOLFS_ENV).",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print JSON instead of a table or sentences."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def stdin_is_terminal() -> bool:
    """Whether a question can be asked: a command refuses to prompt a pipe or a closed stdin.

    sys.stdin rather than click.get_text_stream, which click 8.5 deprecates (a warning in
    every such call) and removes in 9; both read the same fd 0.
    """
    return sys.stdin is not None and sys.stdin.isatty()


# -- output -------------------------------------------------------------------------------
def say(message: str) -> None:
    """A result: stdout (what a script captures)."""
    click.echo(message)


def warn(message: str) -> None:
    """A diagnostic: stderr."""
    click.echo(message, err=True)


def human_size(n: int) -> str:
    """``n`` bytes as people read them: ``512 B``, ``1.5 KiB``, … ``2.0 TiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def local_time(dt: datetime | float) -> str:
    """A datetime or a timestamp in local time, to the second."""
    if not isinstance(dt, datetime):
        dt = datetime.fromtimestamp(dt)
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()
) -> None:
    """Prints aligned columns; the columns whose index is in ``right`` align right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ]
        return "  ".join(out).rstrip()

    click.echo(line(headers))
    for row in rows:
        click.echo(line(row))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress callback for large transfers when stdout is a terminal, else None."""
    if total < PROGRESS_MIN_BYTES or not sys.stdout.isatty():
        yield None
        return
    with click.progressbar(length=total, label=label, show_pos=False, show_percent=True) as bar:
        yield bar.update


__all__ = [
    "PROGRESS_MIN_BYTES",
    "CliState",
    "UserError",
    "VolfsGroup",
    "env_option",
    "human_size",
    "json_option",
    "local_time",
    "open_store",
    "print_json",
    "progress_bar",
    "run",
    "say",
    "stdin_is_terminal",
    "table",
    "warn",
]
