"""The systemd unit, installed as the README says, passes ``systemd-analyze verify``.

``scripts/install-service`` writes to /etc/systemd/system, /usr/local/bin, /usr/share/doc
and /etc/volfs: the test runs it in a private mount namespace with a tmpfs over each, so
the host sees none of it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or shutil.which("unshare") is None,
    reason="needs systemd-analyze and unshare",
)

SCRIPT = """
set -e
for d in /etc/systemd/system /usr/local/bin /usr/share/doc /etc/volfs; do
    mount -t tmpfs tmpfs "$d"
done
scripts/install-service "$@"
systemd-analyze verify volfs@data.service
echo "--- unit"; cat /etc/systemd/system/volfs@.service
for f in /etc/systemd/system/volfs@.service.d/*.conf; do [ -e "$f" ] && cat "$f"; done
echo "--- volfs"; readlink -f /usr/local/bin/volfs
echo "--- credentials"; stat -c %a /etc/volfs/credentials.env
echo "--- doc"; test -s /usr/share/doc/volfs/README.md && echo present
"""


def install_and_verify(*args: str) -> dict[str, str]:
    created = not Path("/etc/volfs").exists()
    Path("/etc/volfs").mkdir(exist_ok=True)  # a mountpoint for the tmpfs
    try:
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT, "sh", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        if created:
            Path("/etc/volfs").rmdir()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr  # verify prints its complaints on stderr
    sections: dict[str, str] = {}
    for part in proc.stdout.split("--- ")[1:]:
        name, _, body = part.partition("\n")
        sections[name] = body
    return sections


def test_the_unit_verifies_for_the_default_store() -> None:
    out = install_and_verify()
    assert out["volfs"].strip() == str(ROOT / ".venv" / "bin" / "volfs")
    assert out["credentials"].strip() == "600"
    assert out["doc"].strip() == "present"
    unit = out["unit"]
    assert "ExecStart=/usr/local/bin/volfs mount %i" in unit
    assert "RequiresMountsFor=%S/volfs" in unit  # %S/volfs is /var/lib/volfs
    assert "EnvironmentFile=-/etc/volfs/credentials.env" in unit
    assert "After=network-online.target" not in unit


def test_a_distributed_store_elsewhere_gets_its_mount_and_the_network() -> None:
    unit = install_and_verify("--store", "/srv/volfs", "--distributed")["unit"]
    assert "RequiresMountsFor=/srv/volfs" in unit
    assert "Environment=VOLFS_STORE=/srv/volfs" in unit
    assert "Wants=network-online.target" in unit and "After=network-online.target" in unit
