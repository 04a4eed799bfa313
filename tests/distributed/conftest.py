"""Distributed-mode fixtures: two "machines" sharing one PostgreSQL database and one bucket.

A machine is a store directory (its own LMDB cache, blob cache, mounts) initialised with
``volfs store init`` against the same database and the same bucket prefix. Each test gets
its own database (``CREATE DATABASE``) and its own prefix, so tests do not see each other.

Needs ``VOLFS_META_URL`` (a PostgreSQL the user may create databases on) and
``VOLFS_S3_ENDPOINT`` + ``VOLFS_S3_BUCKET`` + AWS credentials, as printed by
``../shared/services/start-postgres.sh`` and ``start-ceph.sh`` / ``start-seaweedfs.sh``
(``scripts/test`` starts them). Without them every test here is skipped, with the reason.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/mounting.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # cluster.py

from cluster import BUCKET, ENDPOINT, META_URL, Cluster, Services, _admin
from mounting import run_volfs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [
        n for n, v in (("VOLFS_META_URL", META_URL), ("VOLFS_S3_ENDPOINT", ENDPOINT)) if not v
    ]
    if not missing:
        return
    reason = (
        f"distributed tests need PostgreSQL and an S3 endpoint ({', '.join(missing)} unset): "
        "run scripts/test with ../shared/services beside the repo, or start them and export "
        "their variables"
    )
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def meta_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL, dropped afterwards."""
    import psycopg.conninfo

    name = "volfs_t_" + secrets.token_hex(6)
    _admin(f"CREATE DATABASE {name}")
    params = psycopg.conninfo.conninfo_to_dict(META_URL)
    params["dbname"] = name
    user = params.get("user", "")
    url = f"postgresql://{user}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{name}"
    if params.get("password"):
        url = url.replace(f"{user}@", f"{user}:{params['password']}@")
    yield url
    import psycopg

    try:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except psycopg.OperationalError as exc:  # down after a fault test: it is throwaway anyway
        print(f"could not drop {name}: {exc}")


@pytest.fixture
def cluster(tmp_path: Path, meta_url: str, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.delenv("VOLFS_ENV", raising=False)
    monkeypatch.delenv("VOLFS_S3_TRACE", raising=False)
    prefix = "t-" + secrets.token_hex(6)
    machines = []
    for i in (1, 2):
        store = tmp_path / f"machine{i}"
        run_volfs(
            store,
            "store",
            "init",
            "--meta",
            meta_url,
            "--blobs",
            f"s3://{BUCKET}/{prefix}",
            "--endpoint",
            ENDPOINT,
            "--cache-size",
            "1G",
        )
        machines.append(store)
    return Cluster(meta_url, prefix, machines)


@pytest.fixture
def services() -> Services:
    return Services()
