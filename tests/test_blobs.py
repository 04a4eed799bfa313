"""The local blob store: durable, deduplicated, read-only on disk, verified on every read."""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volfs.blobs import digest_of, iter_content, put_stream
from volfs.blobs.local import LocalBlobStore
from volfs.errors import CorruptionError


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", tmp_path / "tmp")


def damage(path: Path, how: str) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))


def test_put_get_round_trip(blobs: LocalBlobStore) -> None:
    data = b"hello, volfs\n" * 100
    digest = blobs.put(data)
    assert digest == digest_of(data)
    assert len(digest) == 32 and digest == digest.lower()
    assert blobs.has(digest)
    assert blobs.get(digest) == data
    assert blobs.size(digest) == len(data)
    assert list(blobs.digests()) == [digest]


def test_empty_blob(blobs: LocalBlobStore) -> None:
    digest = blobs.put(b"")
    assert blobs.get(digest) == b""
    assert blobs.size(digest) == 0


def test_same_content_is_stored_once(blobs: LocalBlobStore) -> None:
    first = blobs.put(b"same bytes")
    second = blobs.put(b"same bytes")
    assert first == second
    assert blobs.stats["blobs_written"] == 1
    assert list(blobs.digests()) == [first]
    assert blobs.put(b"other bytes") != first
    assert blobs.stats["blobs_written"] == 2


def test_blobs_are_read_only_on_disk_and_no_temp_file_is_left(
    blobs: LocalBlobStore, tmp_path: Path
) -> None:
    digest = blobs.put(b"immutable")
    path = blobs.path(digest)
    assert path.parent.name == digest[:2] and path.name == digest[2:]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_blob_raises_and_logs_on_get(
    blobs: LocalBlobStore, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    digest = blobs.put(b"precious data " * 64)
    damage(blobs.path(digest), how)
    with caplog.at_level(logging.ERROR, logger="volfs.blobs.local"), pytest.raises(CorruptionError):
        blobs.get(digest)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and digest in errors[0].getMessage()


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_blob_raises_and_logs_on_open_verified(
    blobs: LocalBlobStore, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    digest = blobs.put(b"precious data " * 64)
    damage(blobs.path(digest), how)
    with caplog.at_level(logging.ERROR, logger="volfs.blobs.local"), pytest.raises(CorruptionError):
        blobs.open_verified(digest)
    assert any(r.levelno == logging.ERROR and digest in r.getMessage() for r in caplog.records)


def test_a_damaged_blob_does_not_become_verified(blobs: LocalBlobStore) -> None:
    digest = blobs.put(b"x" * 1000)
    damage(blobs.path(digest), "flip")
    for _ in range(2):
        with pytest.raises(CorruptionError):
            blobs.open_verified(digest)


def test_open_verified_gives_the_bytes(blobs: LocalBlobStore) -> None:
    digest = blobs.put(b"through an fd")
    fd = blobs.open_verified(digest)
    try:
        assert os.read(fd, 100) == b"through an fd"
    finally:
        os.close(fd)


def test_missing_blob_is_a_corruption(blobs: LocalBlobStore) -> None:
    digest = blobs.put(b"soon gone")
    blobs.delete(digest)
    assert not blobs.has(digest)
    with pytest.raises(CorruptionError):
        blobs.get(digest)
    with pytest.raises(CorruptionError):
        blobs.open_verified(digest)
    blobs.delete(digest)  # deleting twice is fine


def test_put_file_adopts_a_local_file(blobs: LocalBlobStore, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.write_bytes(b"local content")
    digest = digest_of(b"local content")
    blobs.put_file(local, digest)
    assert blobs.get(digest) == b"local content"
    with pytest.raises(CorruptionError):
        blobs.put_file(local, digest_of(b"something else"))


class TrickleStream(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self.step if size < 0 else min(size, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


@pytest.mark.parametrize(
    ("length", "want"),
    [
        (0, []),
        (1, [1]),
        (15, [15]),
        (16, [16]),
        (17, [16, 1]),
        (48, [16, 16, 16]),
        (50, [16, 16, 16, 2]),
    ],
)
def test_put_stream_splits_at_the_chunk_size(
    blobs: LocalBlobStore, length: int, want: list[int]
) -> None:
    data = bytes(range(256))[:length] if length <= 256 else os.urandom(length)
    chunks, size = put_stream(blobs, io.BytesIO(data), chunk_size=16)
    assert size == length
    assert [blobs.size(d) for d in chunks] == want  # no empty trailing chunk on a multiple
    assert b"".join(iter_content(blobs, chunks)) == data


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 40), st.integers(1, 7))
def test_put_stream_reassembles_from_short_reads(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, chunk_size: int, step: int
) -> None:
    root = tmp_path_factory.mktemp("stream")
    store = LocalBlobStore(root / "blobs", root / "tmp")
    chunks, size = put_stream(store, TrickleStream(data, step), chunk_size=chunk_size)  # type: ignore[arg-type]
    assert size == len(data)
    sizes = [store.size(d) for d in chunks]
    assert all(s == chunk_size for s in sizes[:-1])
    assert all(s > 0 for s in sizes)
    assert len(chunks) == -(-len(data) // chunk_size)
    assert b"".join(iter_content(store, chunks)) == data
