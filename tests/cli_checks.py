"""Checks several test files share: a volume's files, a CLI command that must succeed in
process, and one that must fail as a real process does (one ``Error:`` line)."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from volfs import Volume
from volfs.cli import cli


def files(vol: Volume) -> dict[str, bytes]:
    """Every regular file of ``vol``, by path, with its content."""
    return {
        e.path: b"".join(vol.read_file(e.path))
        for e in vol.listdir("/", recursive=True)
        if e.type.name == "FILE"
    }


def ok(*args: str) -> str:
    """Runs the CLI in this process; it must exit 0. Returns its stdout."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(*args: str) -> subprocess.CompletedProcess[str]:
    """A real process: one ``Error:`` line, a non-zero exit, never a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "volfs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return proc
