"""Helpers of the distributed tests: the shared engines, and stopping/restarting them.

Fault injection (:class:`Services`) stops and restarts the engines' own processes by the
pids the service scripts recorded in ``$VOLFS_SERVICES_DIR/<engine>/``, and writes the new
pids back there, so the stop scripts still stop exactly what runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

META_URL = os.environ.get("VOLFS_META_URL", "")
ENDPOINT = os.environ.get("VOLFS_S3_ENDPOINT", "")
BUCKET = os.environ.get("VOLFS_S3_BUCKET", "volfs")
SERVICES = Path(
    os.environ.get("VOLFS_SERVICES_DIR")
    or os.path.join(os.environ.get("TMPDIR") or "/tmp", "volfs-services")
)


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(META_URL, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


@dataclass
class Cluster:
    meta_url: str
    prefix: str
    machines: list[Path]

    def bucket_client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=ENDPOINT, config=Config(s3={"addressing_style": "path"})
        )

    def key(self, kind: str, digest: str) -> str:
        return f"{self.prefix}/{kind}/{digest[:2]}/{digest[2:]}"


# -- fault injection: the engines' own processes ---------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _s3_answers() -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(ENDPOINT + "/", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer: the gateway is up
    except OSError:
        return False


class Services:
    """Stops and restarts the S3 gateway and PostgreSQL the service scripts started."""

    def __init__(self) -> None:
        self.engine = os.environ.get("VOLFS_S3_ENGINE", "ceph-rgw")

    # The S3 gateway: radosgw (Ceph) or the one weed process (SeaweedFS).
    def _s3_pidfile(self) -> Path:
        if self.engine == "seaweedfs":
            return SERVICES / "seaweedfs" / "weed.pid"
        return SERVICES / "ceph" / "client.rgw.volfs.pid"

    def stop_s3(self) -> list[str]:
        pidfile = self._s3_pidfile()
        if not pidfile.exists():
            pytest.skip(f"no {pidfile}: the S3 engine was not started by ../shared/services")
        pid = int(pidfile.read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [a.decode() for a in f.read().split(b"\0") if a]
        os.kill(pid, signal.SIGKILL if self.engine == "seaweedfs" else signal.SIGTERM)
        _wait(lambda: not _pid_alive(pid), "the S3 gateway to stop")
        _wait(lambda: not _s3_answers(), "the S3 endpoint to go quiet", 10)
        return cmdline

    def start_s3(self, cmdline: list[str]) -> None:
        pidfile = self._s3_pidfile()
        if self.engine == "seaweedfs":
            # Detached through sh (as the start script does with nohup): not our child.
            out = subprocess.run(
                ["sh", "-c", 'setsid "$@" >>"$LOG" 2>&1 </dev/null & echo $!', "sh", *cmdline],
                env={**os.environ, "LOG": str(pidfile.parent / "weed.log")},
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            pidfile.write_text(out.stdout.strip() + "\n")
        else:
            subprocess.run(
                cmdline, check=True, timeout=60
            )  # radosgw daemonizes, writes its pid file
        _wait(_s3_answers, "the S3 gateway to answer again", 90)

    def restart_postgres(self) -> None:
        folder = SERVICES / "postgres"
        data = folder / "data"
        if not data.exists():
            pytest.skip(f"no {data}: PostgreSQL was not started by ../shared/services")
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # -l: the new server must not inherit our pipes (we would wait for it to exit).
        subprocess.run(
            [
                *run_as,
                str(bins[-1]),
                "-D",
                str(data),
                "-l",
                str(folder / "postgres.log"),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "restart",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=90,
        )
        # The stop script stops the pid recorded here: record the new postmaster.
        (folder / "postgres.pid").write_text(
            (data / "postmaster.pid").read_text().splitlines()[0] + "\n"
        )
