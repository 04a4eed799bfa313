"""Scratch files kept as one segment per chunk, and commits that adopt segments as blobs.

The model test drives a ScratchFile with tiny chunks against a bytearray; the overlay
tests commit in-process (no FUSE) and count what the blob store wrote, linked and copied.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import volfs.scratch
from volfs import Volume
from volfs.blobs import digest_of
from volfs.config import CHUNK_SIZE
from volfs.inodes import ROOT_INO
from volfs.overlay import Overlay
from volfs.scratch import ScratchFile
from volfs.store import Store

pytestmark = pytest.mark.timeout(120)

SMALL = 16  # chunk size of the model test: many segments from a few bytes


def _segments(directory: Path, name: str = "f1") -> list[int]:
    """The sizes of a scratch file's segments, in order."""
    sizes = [os.stat(directory / name).st_size]
    while (directory / f"{name}.{len(sizes)}").exists():
        sizes.append(os.stat(directory / f"{name}.{len(sizes)}").st_size)
    return sizes


ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 5 * SMALL), st.binary(min_size=0, max_size=3 * SMALL)),
    st.tuples(st.just("truncate"), st.integers(0, 6 * SMALL), st.just(b"")),
    st.tuples(st.just("freeze"), st.just(0), st.just(b"")),
    st.tuples(st.just("reopen"), st.just(0), st.just(b"")),
), max_size=25)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_a_scratch_file_reads_back_what_was_written_and_frozen_segments_never_change(
        tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, bytes]]) -> None:
    directory = tmp_path_factory.mktemp("scratch")
    blobs = tmp_path_factory.mktemp("blobs")
    frozen: list[tuple[int, bytes]] = []  # (fd, the bytes it held when frozen)
    original = volfs.scratch.CHUNK_SIZE
    volfs.scratch.CHUNK_SIZE = SMALL
    try:
        scratch = ScratchFile.create(str(directory), "f1")
        model = bytearray()
        for op, number, data in steps:
            if op == "write":
                scratch.pwrite(data, number)
                if data:
                    model[len(model):] = bytes(max(0, number - len(model)))
                    model[number:number + len(data)] = data
            elif op == "truncate":
                scratch.truncate(number)
                model[number:] = b""
                model[len(model):] = bytes(number - len(model))
            elif op == "freeze":  # and adopt every segment, as a commit of new content does
                segments, size = scratch.freeze()
                assert size == len(model)
                for fd, path in segments:
                    frozen.append((fd, os.pread(fd, SMALL, 0)))
                    os.link(path, blobs / str(len(frozen)))
            else:  # what recovery does: find the file again from its segments on disk
                scratch.close()
                scratch = ScratchFile.existing(str(directory), "f1")
            assert scratch.size == len(model)
            assert scratch.pread(len(model) + 10, 0) == bytes(model)
            sizes = _segments(directory)
            # every segment but the last is one whole chunk: each is a chunk blob as it is
            assert all(size == SMALL for size in sizes[:-1]) and sum(sizes) == len(model)
            for fd, held in frozen:
                assert os.pread(fd, SMALL, 0) == held, "a frozen segment changed under a commit"
        assert ScratchFile.existing(str(directory), "f1").size == len(model)
        scratch.unlink()
        assert os.listdir(directory) == []
    finally:
        volfs.scratch.CHUNK_SIZE = original
        for fd, _ in frozen:
            os.close(fd)


# -- commits adopt segments ---------------------------------------------------------------
@pytest.fixture
def overlay(store: Store) -> Iterator[Overlay]:
    Volume.objects.create("v", store=store)
    volume = store.catalog.get_volume("main", "v")
    base = store.catalog.head(volume.id)
    overlay_dir = store.overlays_dir / "mo-scratchtest"
    overlay_dir.mkdir()
    overlay = Overlay(store, volume, base, overlay_dir)
    yield overlay
    overlay.close()


def _committed(store: Store, name: str) -> bytes:
    return b"".join(Volume.from_name("v", store=store).read_file(name))


def test_a_commit_links_new_chunks_into_the_store_instead_of_copying_them(store: Store, overlay: Overlay) -> None:
    content = os.urandom(2 * CHUNK_SIZE + 1000)
    node = overlay.create(ROOT_INO, "big", 0o644, 0, 0)
    overlay.open(node, write=True, truncate=False)
    overlay.write(node, 0, content)
    overlay.release(node, write=True)
    overlay.commit_now()
    assert store.blobs.stats["blobs_adopted"] == 3
    assert store.blobs.stats["bytes_written"] == 0  # nothing copied
    assert _committed(store, "big") == content
    assert os.listdir(overlay.scratch_dir) == []  # closed and committed: the blobs are its content now
    for digest in overlay.table[node.ino].chunks:
        assert digest_of(store.blobs.path(digest).read_bytes()) == digest


def test_writing_a_committed_segment_of_an_open_file_copies_it_and_leaves_the_blob_intact(
        store: Store, overlay: Overlay) -> None:
    first = b"a" * CHUNK_SIZE + b"b" * 10
    node = overlay.create(ROOT_INO, "open", 0o644, 0, 0)
    overlay.open(node, write=True, truncate=False)
    overlay.write(node, 0, first)
    overlay.commit_now()
    assert store.blobs.stats["blobs_adopted"] == 2
    committed = overlay.table[node.ino].chunks
    overlay.write(node, 5, b"X")  # in the first segment, which is a blob's inode now
    overlay.write(node, CHUNK_SIZE + 10, b"tail")  # appends to the second
    for digest in committed:
        assert digest_of(store.blobs.path(digest).read_bytes()) == digest, "a committed blob changed"
    second = first[:5] + b"X" + first[6:] + b"tail"
    assert overlay.read(node, 0, len(second) + 1) == second
    overlay.commit_now()
    overlay.release(node, write=True)
    assert _committed(store, "open") == second


def test_an_unchanged_segment_is_not_linked_again_and_may_change_in_place(store: Store, overlay: Overlay) -> None:
    node = overlay.create(ROOT_INO, "f", 0o644, 0, 0)
    overlay.open(node, write=True, truncate=False)
    overlay.write(node, 0, b"x" * 100)
    overlay.commit_now()
    assert node.scratch is not None and node.scratch.shared == {0}
    overlay.write(node, 0, b"y")  # copy on write: a fresh inode, no longer shared
    assert node.scratch.shared == set()
    overlay.write(node, 0, b"x")  # back to the committed bytes: the blob exists
    overlay.commit_now()
    assert store.blobs.stats["blobs_adopted"] == 1
    assert node.scratch.shared == set()  # not linked: later writes need no copy
    overlay.release(node, write=True)


def test_copy_up_copies_a_committed_file_into_segments(store: Store, overlay: Overlay) -> None:
    content = os.urandom(CHUNK_SIZE + 5)
    with Volume.from_name("v", store=store).batch_upload() as batch:
        batch.put_file(io.BytesIO(content), "c")
    overlay.rebase(store.catalog.head(overlay.volume.id))
    node = overlay.lookup(ROOT_INO, "c")
    overlay.open(node, write=True, truncate=False)
    assert node.scratch is not None and _segments(overlay.scratch_dir, node.scratch.name) == [CHUNK_SIZE, 5]
    overlay.write(node, CHUNK_SIZE + 5, b"!")
    overlay.release(node, write=True)
    overlay.commit_now()
    assert _committed(store, "c") == content + b"!"


def test_a_scratch_file_from_before_segments_is_split_when_found_again(tmp_path: Path) -> None:
    content = os.urandom(2 * CHUNK_SIZE + 77)
    (tmp_path / "f9").write_bytes(content)  # what an older daemon left in a crashed overlay
    scratch = ScratchFile.existing(str(tmp_path), "f9")
    assert scratch.size == len(content)
    assert _segments(tmp_path, "f9") == [CHUNK_SIZE, CHUNK_SIZE, 77]
    assert scratch.pread(len(content), 0) == content
    scratch.close()


def test_a_file_of_many_segments_keeps_few_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volfs.scratch, "CHUNK_SIZE", SMALL)
    scratch = ScratchFile.create(str(tmp_path), "f1")
    content = os.urandom(40 * SMALL + 3)
    for offset in range(0, len(content), 7):  # small writes across every segment
        scratch.pwrite(content[offset:offset + 7], offset)
        assert len(scratch._fds) <= volfs.scratch.MAX_OPEN_SEGMENTS
    scratch.sync(datasync=False)  # reopens what it closed
    assert scratch.pread(len(content), 0) == content
    assert _segments(tmp_path) == [SMALL] * 40 + [3]
    scratch.unlink()


def test_a_commit_past_its_fd_budget_hashes_the_rest_on_the_loop(
        store: Store, overlay: Overlay, monkeypatch: pytest.MonkeyPatch) -> None:
    import volfs.overlay

    monkeypatch.setattr(volfs.overlay, "freeze_budget", lambda: 2)
    files = {f"f{i}": os.urandom(1000 + i) for i in range(5)}
    for name, data in files.items():
        overlay.write(overlay.create(ROOT_INO, name, 0o644, 0, 0), 0, data)
    jobs = overlay.prepare_commit()
    assert len(jobs) == 2
    for job in jobs:  # not hashed here: commit_now freezes again
        for fd, _ in job.segments:
            os.close(fd)
    overlay.commit_now()
    assert {name: _committed(store, name) for name in files} == files
