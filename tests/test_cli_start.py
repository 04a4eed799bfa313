"""Commands that only talk to a daemon start fast: they import nothing they do not use.

``volfs commit`` is run often (by scripts, after every step of a job); its cost is the
interpreter's start-up and its imports. What it imports is counted here, not timed: none
of the FUSE layer, trio, the catalog, the API or the distributed backends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mounting import mounted, run_volfs

pytestmark = pytest.mark.mount

#: Module prefixes a command that only talks to a daemon has no use for.
UNUSED = (
    "pyfuse3",
    "trio",
    "lmdb",
    "boto3",
    "botocore",
    "psycopg",
    "prometheus_client",
    "hypothesis",
    "volfs.api",
    "volfs.catalog",
    "volfs.core",
    "volfs.mount",
    "volfs.store",
)

#: Runs the CLI as `python -m volfs` does, then lists what it imported.
PROBE = """
import json, runpy, sys
sys.argv = ["volfs", *sys.argv[2:]]
try:
    runpy.run_module("volfs", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
with open(OUT, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def imported_by(store: Path, out: Path, *args: str) -> tuple[int, list[str], str]:
    script = PROBE.replace("OUT", repr(str(out)))
    proc = subprocess.run(
        [sys.executable, "-c", script, "probe", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "VOLFS_STORE": str(store)},
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    result = json.loads(out.read_text())
    unused = [m for m in result["modules"] if any(m == u or m.startswith(u + ".") for u in UNUSED)]
    return result["code"], unused, proc.stdout


@pytest.mark.timeout(90)
def test_commit_imports_only_what_it_uses(store_path: Path, tmp_path: Path) -> None:
    run_volfs(store_path, "volume", "create", "quick")
    with mounted(store_path, "quick", tmp_path / "mnt") as m:
        (m.path / "a").write_text("a")
        code, unused, stdout = imported_by(store_path, tmp_path / "out.json", "commit", str(m.path))
        assert (code, unused) == (0, [])
        assert "committed" in stdout
        for args in (("commit", str(m.path)), ("reload", str(m.path)), ("status",)):
            code, unused, _ = imported_by(store_path, tmp_path / "out.json", *args)
            assert (code, unused) == (0, []), args


@pytest.mark.timeout(60)
def test_version_and_help_still_work(store_path: Path) -> None:
    assert run_volfs(store_path, "--version").stdout.startswith("volfs, version ")
    listed = run_volfs(store_path, "--help").stdout
    for command in ("commit", "mount", "volume", "fsck", "run", "store"):
        assert f"  {command} " in listed
    assert "  fork " in run_volfs(store_path, "volume", "--help").stdout
