"""What makes two store directories "the same store" for the scope of `volfs commit`:
an embedded store is its resolved path; a distributed one its metadata and blobs URLs, so
two directories caching one PostgreSQL + bucket agree, and no password is shown."""

from __future__ import annotations

import os
from pathlib import Path

from volfs import remote
from volfs.remote import RemoteConfig, store_identity


def test_an_embedded_store_is_its_resolved_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert store_identity(tmp_path / "link") == store_identity(tmp_path / "real")
    assert store_identity(tmp_path / "real" / ".." / "real") == f"local:{tmp_path / 'real'}"
    assert store_identity(tmp_path / "other") != store_identity(tmp_path / "real")


def test_a_distributed_store_is_its_urls_without_the_password(tmp_path: Path) -> None:
    one, two, three = (tmp_path / n for n in ("one", "two", "three"))
    for d in (one, two, three):
        d.mkdir()
    remote.save(one, RemoteConfig("postgresql://u:secret@DB.example:5432/vol", "s3://b/p"))
    remote.save(two, RemoteConfig("postgresql://u:other@db.example/vol", "s3://b/p"))
    remote.save(three, RemoteConfig("postgresql://u@db.example/vol", "s3://b/elsewhere"))
    assert (
        store_identity(one)
        == store_identity(two)
        == ("meta:postgresql://u@db.example:5432/vol|s3://b/p")
    )
    assert "secret" not in store_identity(one)
    assert store_identity(three) != store_identity(one)  # another bucket prefix: another store
