"""Commands that only talk to a daemon start fast: they import nothing they do not use.

``volfs commit`` is run often (by scripts, after every step of a job; ``volfs reload`` by a
container's entrypoint), and what it costs is the interpreter's start-up and its imports.
Those are counted here, not timed. Beyond click (the CLI library: most of what is left) and
the two modules the control client needs (json, socket), a command given a PATH imports
only the few volfs modules of the command line's root and of the control protocol: no FUSE
layer, trio, catalog, API or distributed backend, and none of the standard modules only
other commands use (logging, pathlib, dataclasses, subprocess). ``scripts/bench --only cli``
times it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mounting import mounted, run_volfs

pytestmark = pytest.mark.mount

#: Everything of volfs that ``volfs commit|reload|status PATH`` imports: the package (its
#: errors), the root group and its shared helpers, the commands' own module (and the
#: counters' columns of ``status``), the tunables, the control protocol.
CONTROL_MODULES = {
    "volfs",
    "volfs.errors",
    "volfs.config",
    "volfs.control",
    "volfs.cli",
    "volfs.cli._common",
    "volfs.cli.control",
    "volfs.cli.stats",
}
#: What such a command may import beyond click, json and socket that is not volfs's: click
#: looks up its message catalog at run time (gettext imports locale), and the control
#: module reads peer credentials with struct.
BEYOND_CLICK = {"locale", "_locale", "struct", "_struct"}
#: Module prefixes no command that only talks to a daemon has a use for, PATH or not.
UNUSED = (
    "pyfuse3",
    "trio",
    "lmdb",
    "boto3",
    "botocore",
    "psycopg",
    "prometheus_client",
    "hypothesis",
    "logging",
    "volfs.api",
    "volfs.catalog",
    "volfs.core",
    "volfs.mount",
    "volfs.store",
)

#: Ends each script run here: writes its exit code and the modules imported so far.
DUMP = """
modules = sorted(sys.modules)
with open(OUT, "w") as f:
    f.write("\\n".join([str(code), *modules]))
"""
#: Runs the CLI as the ``volfs`` console script does.
PROBE = (
    """
import sys
sys.argv = ["volfs", *sys.argv[1:]]
code = 0
try:
    from volfs.cli import main
    main()
except SystemExit as exc:
    code = exc.code
"""
    + DUMP
)
#: A Python start that imports only click, json and socket.
BASELINE = "import sys\nimport click, json, socket\ncode = 0\n" + DUMP
#: A Python start that imports nothing.
BARE = "import sys\ncode = 0\n" + DUMP


def run_probe(store: Path, out: Path, script: str, *args: str) -> tuple[int, set[str], str]:
    """(exit code, modules imported, stdout) of ``script`` run with ``args``, in a fresh
    interpreter, from a directory that holds no volfs (so it is imported as installed)."""
    proc = subprocess.run(
        [sys.executable, "-c", script.replace("OUT", repr(str(out))), *args],
        capture_output=True,
        text=True,
        cwd=out.parent,
        env={**os.environ, "VOLFS_STORE": str(store)},
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    code, *modules = out.read_text().splitlines()
    return int(code), set(modules), proc.stdout


def imported_by(store: Path, out: Path, *args: str) -> tuple[int, set[str], str]:
    return run_probe(store, out, PROBE, *args)


def unused(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == u or m.startswith(u + ".") for u in UNUSED))


def of_volfs(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "volfs" or m.startswith("volfs.")}


@pytest.mark.timeout(90)
def test_commit_with_a_path_imports_only_what_it_uses(store_path: Path, tmp_path: Path) -> None:
    run_volfs(store_path, "volume", "create", "quick")
    out = tmp_path / "modules.txt"
    _, baseline, _ = run_probe(store_path, out, BASELINE)
    with mounted(store_path, "quick", tmp_path / "mnt") as m:
        (m.path / "a").write_text("a")
        code, modules, stdout = imported_by(store_path, out, "commit", str(m.path))
        assert code == 0 and "committed" in stdout
        for args in (("commit", str(m.path)), ("reload", str(m.path)), ("status", str(m.path))):
            code, modules, _ = imported_by(store_path, out, *args)
            assert code == 0, args
            assert of_volfs(modules) == CONTROL_MODULES, args
            assert modules - baseline - CONTROL_MODULES <= BEYOND_CLICK, args
            assert unused(modules) == [], args


@pytest.mark.timeout(90)
def test_commit_without_a_path_imports_only_what_it_uses(store_path: Path, tmp_path: Path) -> None:
    """Telling the current store's mounts apart takes the store's identity (volfs.remote)
    and its directory (pathlib); still nothing that logs, nor the store itself."""
    run_volfs(store_path, "volume", "create", "quick")
    out = tmp_path / "modules.txt"
    with mounted(store_path, "quick", tmp_path / "mnt") as m:
        for args in (("commit",), ("reload",), ("status",)):
            code, modules, stdout = imported_by(store_path, out, *args)
            assert code == 0 and str(m.path) in stdout, args
            assert of_volfs(modules) == CONTROL_MODULES | {"volfs.remote"}, args
            assert unused(modules) == [], args


@pytest.mark.timeout(60)
def test_a_python_start_runs_no_import_hook(tmp_path: Path) -> None:
    """An editable install through setuptools' import hook (its default for this layout)
    costs every Python start in the environment, ``volfs commit`` included, the imports of
    pathlib, importlib.util and urllib; pyproject.toml makes it a plain path instead."""
    out = tmp_path / "modules.txt"
    _, modules, _ = run_probe(tmp_path / "store", out, BARE)
    assert sorted(m for m in modules if m.startswith("__editable__")) == []
    assert {"pathlib", "importlib.util"} & modules == set()


@pytest.mark.timeout(60)
def test_version_and_help_still_work(store_path: Path) -> None:
    assert run_volfs(store_path, "--version").stdout.startswith("volfs, version ")
    listed = run_volfs(store_path, "--help").stdout
    for command in ("commit", "mount", "volume", "fsck", "run", "store", "reload", "status"):
        assert f"  {command} " in listed
    assert "  fork " in run_volfs(store_path, "volume", "--help").stdout
    assert "--if-unchanged" in run_volfs(store_path, "commit", "--help").stdout
