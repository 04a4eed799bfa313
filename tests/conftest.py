"""Shared fixtures: a private store per test, and ways to see whether a store changed.

Every test gets its own store under ``tmp_path``; ``VOLFS_STORE`` points at it, so the API
(``Store.open()`` with no path), the CLI and subprocesses all use it. ``VOLFS_ENV`` is
cleared so the default environment is ``main``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from volfs.catalog import close_environments
from volfs.store import Store

StoreState = tuple[tuple[tuple[str, str, str, str], ...], tuple[str, ...]]


@pytest.fixture(autouse=True)
def _close_catalogs(tmp_path: Path) -> Iterator[None]:
    """A test's stores hold LMDB environments (4 fds each) for the life of the process:
    closed after each test, or the suite runs out of fds (and select(2) range) part-way."""
    yield
    close_environments(tmp_path)


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "store"
    monkeypatch.setenv("VOLFS_STORE", str(path))
    monkeypatch.delenv("VOLFS_ENV", raising=False)
    monkeypatch.delenv("VOLFS_DEBUG", raising=False)
    return path


@pytest.fixture
def store(store_path: Path) -> Store:
    return Store.open(store_path)


def _state(store: Store) -> StoreState:
    volumes = tuple(
        sorted((v.environment, v.name, v.id, v.head) for v in store.catalog.list_volumes())
    )
    return volumes, tuple(sorted(store.blobs.digests()))


@pytest.fixture
def store_state(store: Store) -> Callable[[], StoreState]:
    """Call it before and after: equal results mean no volume, head or blob changed."""
    return lambda: _state(store)


@pytest.fixture
def blob_bytes(store: Store) -> Callable[[], int]:
    """Bytes of blob content on disk in the store."""

    def count() -> int:
        total = 0
        for root, _, files in os.walk(store.root / "blobs"):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total

    return count
