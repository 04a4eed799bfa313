"""Scratch files kept as one segment per chunk, and commits that adopt segments as blobs.

The model test drives a ScratchFile with tiny chunks against a bytearray; the overlay
tests commit in-process (no FUSE) and count what the blob store wrote, linked and copied.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import volfs.mount.scratch
from volfs import Volume
from volfs.blobs import Digest, digest_of
from volfs.config import CHUNK_SIZE
from volfs.mount.inodes import ROOT_INO
from volfs.mount.overlay import Overlay
from volfs.mount.scratch import REMOVER, ScratchFile, ScratchStats
from volfs.store import Store

pytestmark = pytest.mark.timeout(120)

SMALL = 16  # chunk size of the model test: many segments from a few bytes


def _segments(directory: Path, name: str = "f1") -> dict[int, int]:
    """A scratch file's segments on disk: chunk index -> bytes."""
    prefix = name + "."
    return {
        int(n[len(prefix) :]): os.stat(directory / n).st_size
        for n in os.listdir(directory)
        if n.startswith(prefix) and n[len(prefix) :].isdigit()
    }


class _Blobs:
    """Committed chunks for the model test: one read-only file per chunk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fds: dict[str, int] = {}

    def chunks(self, content: bytes, size: int) -> tuple[tuple[int, Digest], ...]:
        out = []
        for index in range(-(-len(content) // size)):
            piece = content[index * size : (index + 1) * size]
            digest = digest_of(piece)
            (self.directory / digest).write_bytes(piece)
            out.append((index, digest))
        return tuple(out)

    def open(self, digest: Digest) -> int:
        if digest not in self.fds:
            self.fds[digest] = os.open(self.directory / digest, os.O_RDONLY)
        return self.fds[digest]

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"), st.integers(0, 8 * SMALL), st.binary(min_size=0, max_size=3 * SMALL)
        ),
        st.tuples(
            st.just("write"), st.integers(0, 8 * SMALL), st.integers(1, 3 * SMALL).map(bytes)
        ),  # zeros
        st.tuples(st.just("truncate"), st.integers(0, 10 * SMALL), st.just(b"")),
        st.tuples(st.just("freeze"), st.just(0), st.just(b"")),
        st.tuples(st.just("reopen"), st.just(0), st.just(b"")),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4 * SMALL), ops)
def test_a_scratch_file_reads_back_what_was_written_and_frozen_segments_never_change(
    tmp_path_factory: pytest.TempPathFactory, committed: bytes, steps: list[tuple[str, int, bytes]]
) -> None:
    directory = tmp_path_factory.mktemp("scratch")
    store = _Blobs(tmp_path_factory.mktemp("blobs"))
    adopted = tmp_path_factory.mktemp("adopted")
    frozen: list[tuple[int, bytes]] = []  # (fd, the bytes it held when frozen)
    original = volfs.mount.scratch.CHUNK_SIZE
    volfs.mount.scratch.CHUNK_SIZE = SMALL
    stats = ScratchStats()
    try:
        # Copy-up by chunk: the scratch file starts as a committed file and copies nothing.
        scratch = ScratchFile.create(
            str(directory),
            "f1",
            store.open,
            stats,
            base=store.chunks(committed, SMALL),
            size=len(committed),
        )
        assert _segments(directory) == {}
        model = bytearray(committed)
        touched: set[int] = set()
        for op, number, data in steps:
            if op == "write":
                scratch.pwrite(data, number)
                if data:
                    model[len(model) :] = bytes(max(0, number - len(model)))
                    model[number : number + len(data)] = data
                    touched.update(range(number // SMALL, (number + len(data) - 1) // SMALL + 1))
            elif op == "truncate":
                scratch.truncate(number)
                model[number:] = b""
                model[len(model) :] = bytes(number - len(model))
                touched.add(max(0, number - 1) // SMALL)
            elif op == "freeze":  # and adopt every segment, as a commit of new content does
                segments, base, size = scratch.freeze()
                assert size == len(model)
                assert not {i for i, _, _ in segments} & {i for i, _ in base}
                for _, fd, path in segments:
                    frozen.append((fd, os.pread(fd, SMALL, 0)))
                    os.link(path, adopted / str(len(frozen)))
            else:  # what recovery does: find the file again from its anchor and segments
                scratch.close()
                scratch = ScratchFile.existing(str(directory), "f1", store.open, stats)
            assert scratch.size == len(model)
            assert scratch.pread(len(model) + 10, 0) == bytes(model)
            chunks = scratch.segments | set(scratch.base)
            assert scratch.allocated() == sum(
                volfs.mount.scratch.chunk_span(len(model), i) for i in chunks
            )
            segments_on_disk = _segments(directory)
            # a segment is at most one chunk, and only chunks something touched have one
            assert all(size <= SMALL for size in segments_on_disk.values())
            assert set(segments_on_disk) <= touched
            for fd, held in frozen:
                assert os.pread(fd, SMALL, 0) == held, "a frozen segment changed under a commit"
        again = ScratchFile.existing(str(directory), "f1", store.open, stats)
        assert again.size == len(model) and again.pread(len(model), 0) == bytes(model)
        scratch.unlink()
        REMOVER.wait()  # the files go in the background
        assert os.listdir(directory) == []
    finally:
        volfs.mount.scratch.CHUNK_SIZE = original
        for fd, _ in frozen:
            os.close(fd)
        store.close()


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


def test_a_commit_links_new_chunks_into_the_store_instead_of_copying_them(
    store: Store, overlay: Overlay
) -> None:
    content = os.urandom(2 * CHUNK_SIZE + 1000)
    node = overlay.create(ROOT_INO, "big", 0o644, 0, 0)
    overlay.open(node, write=True, truncate=False)
    overlay.write(node, 0, content)
    overlay.release(node, write=True)
    overlay.commit_now()
    assert store.blobs.stats["blobs_adopted"] == 3
    assert store.blobs.stats["bytes_written"] == 0  # nothing copied
    assert _committed(store, "big") == content
    assert (
        os.listdir(overlay.scratch_dir) == []
    )  # closed and committed: the blobs are its content now
    for _, digest in overlay.table[node.ino].chunks:
        assert digest_of(store.blobs.path(digest).read_bytes()) == digest


def test_writing_a_committed_segment_of_an_open_file_copies_it_and_leaves_the_blob_intact(
    store: Store, overlay: Overlay
) -> None:
    first = b"a" * CHUNK_SIZE + b"b" * 10
    node = overlay.create(ROOT_INO, "open", 0o644, 0, 0)
    overlay.open(node, write=True, truncate=False)
    overlay.write(node, 0, first)
    overlay.commit_now()
    assert store.blobs.stats["blobs_adopted"] == 2
    committed = overlay.table[node.ino].chunks
    overlay.write(node, 5, b"X")  # in the first segment, which is a blob's inode now
    overlay.write(node, CHUNK_SIZE + 10, b"tail")  # appends to the second
    for _, digest in committed:
        assert digest_of(store.blobs.path(digest).read_bytes()) == digest, (
            "a committed blob changed"
        )
    second = first[:5] + b"X" + first[6:] + b"tail"
    assert overlay.read(node, 0, len(second) + 1) == second
    overlay.commit_now()
    overlay.release(node, write=True)
    assert _committed(store, "open") == second


def test_an_unchanged_segment_is_not_linked_again_and_may_change_in_place(
    store: Store, overlay: Overlay
) -> None:
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


def test_copy_up_copies_only_the_chunks_a_write_touches(store: Store, overlay: Overlay) -> None:
    content = os.urandom(3 * CHUNK_SIZE + 5)
    with Volume.from_name("v", store=store).batch_upload() as batch:
        batch.put_file(io.BytesIO(content), "c")
    overlay.rebase(store.catalog.head(overlay.volume.id))
    node = overlay.lookup(ROOT_INO, "c")
    committed = node.chunks
    overlay.open(node, write=True, truncate=False)
    assert node.scratch is not None and _segments(overlay.scratch_dir, node.scratch.name) == {}
    assert overlay.scratch_stats.bytes_copied == 0  # opening for writing copies nothing
    overlay.write(node, len(content), b"!")  # an append: the last chunk only
    assert overlay.scratch_stats.bytes_copied == 5
    assert _segments(overlay.scratch_dir, node.scratch.name) == {3: 6}
    assert overlay.read(node, 0, len(content) + 10) == content + b"!"
    overlay.release(node, write=True)
    adopted = store.blobs.stats["blobs_adopted"]
    overlay.commit_now()
    assert store.blobs.stats["blobs_adopted"] == adopted + 1  # one new chunk blob
    assert overlay.table[node.ino].chunks[:3] == committed[:3]
    assert _committed(store, "c") == content + b"!"


def test_a_truncate_inside_a_committed_chunk_copies_only_what_it_keeps(
    store: Store, overlay: Overlay
) -> None:
    content = os.urandom(2 * CHUNK_SIZE)
    with Volume.from_name("v", store=store).batch_upload() as batch:
        batch.put_file(io.BytesIO(content), "c")
    overlay.rebase(store.catalog.head(overlay.volume.id))
    node = overlay.lookup(ROOT_INO, "c")
    overlay.setattr(node, size=CHUNK_SIZE + 10)
    assert overlay.scratch_stats.bytes_copied == 10
    overlay.setattr(node, size=2 * CHUNK_SIZE)  # the rest of that chunk reads as zeros now
    expected = content[: CHUNK_SIZE + 10] + bytes(CHUNK_SIZE - 10)
    assert overlay.read(node, 0, 3 * CHUNK_SIZE) == expected
    overlay.commit_now()
    assert _committed(store, "c") == expected


def test_sparse_files_cost_what_is_written(store: Store, overlay: Overlay) -> None:
    node = overlay.create(ROOT_INO, "sparse", 0o644, 0, 0)
    overlay.setattr(node, size=1 << 40)  # 1 TiB
    overlay.setattr(node, size=8 << 40)
    assert node.scratch is not None
    assert len(os.listdir(overlay.scratch_dir)) == 1  # the anchor, no segment
    overlay.write(node, 900 << 30, b"x" * 4096)
    assert _segments(overlay.scratch_dir, node.scratch.name) == {(900 << 30) // CHUNK_SIZE: 4096}
    assert overlay.read(node, 5 << 30, 4096) == bytes(4096)  # a hole
    overlay.setattr(node, size=999999999999999)
    assert len(os.listdir(overlay.scratch_dir)) == 2
    with pytest.raises(OSError) as raised:
        overlay.setattr(node, size=1 << 63)
    assert raised.value.errno == errno.EFBIG
    before = store.blobs.stats["blobs_written"]
    overlay.commit_now()
    assert store.blobs.stats["blobs_written"] == before + 1  # one chunk, linked in
    entry = overlay.table[node.ino].chunks
    assert [index for index, _ in entry] == [(900 << 30) // CHUNK_SIZE]
    first = next(iter(Volume.from_name("v", store=store).read_file("sparse")))
    assert first == bytes(len(first))  # the hole, read without allocating it whole


def test_zeros_written_into_holes_stay_holes(store: Store, overlay: Overlay) -> None:
    node = overlay.create(ROOT_INO, "allocated", 0o644, 0, 0)
    for offset in range(0, 3 * CHUNK_SIZE, 4096):  # what glibc's posix_fallocate does
        overlay.write(node, offset, b"\0")
    assert node.size == 3 * CHUNK_SIZE - 4096 + 1
    assert node.scratch is not None and _segments(overlay.scratch_dir, node.scratch.name) == {}
    overlay.commit_now()
    assert overlay.table[node.ino].chunks == ()
    assert overlay.read(node, 0, 10) == bytes(10)


def test_a_crashed_copy_up_comes_back_with_every_byte(
    store: Store, overlay: Overlay, tmp_path: Path
) -> None:
    content = os.urandom(3 * CHUNK_SIZE)
    with Volume.from_name("v", store=store).batch_upload() as batch:
        batch.put_file(io.BytesIO(content), "c")
    overlay.rebase(store.catalog.head(overlay.volume.id))
    node = overlay.lookup(ROOT_INO, "c")
    overlay.open(node, write=True, truncate=False)
    overlay.setattr(node, size=CHUNK_SIZE + 3)  # drops chunk 2, cuts chunk 1
    overlay.write(node, 2 * CHUNK_SIZE + 7, b"tail")
    assert node.scratch is not None
    expected = overlay.read(node, 0, 4 * CHUNK_SIZE)
    found = ScratchFile.existing(
        str(overlay.scratch_dir), node.scratch.name, overlay._blob_fd, ScratchStats()
    )
    assert found.size == len(expected)
    assert found.pread(4 * CHUNK_SIZE, 0) == expected
    found.close()
    overlay.release(node, write=True)


def test_a_scratch_file_from_before_anchors_is_found_again(tmp_path: Path) -> None:
    content = os.urandom(2 * CHUNK_SIZE + 77)
    (tmp_path / "f9").write_bytes(content)  # what an older daemon left in a crashed overlay
    scratch = ScratchFile.existing(str(tmp_path), "f9", _no_blobs, ScratchStats())
    assert scratch.size == len(content)
    assert _segments(tmp_path, "f9") == {0: CHUNK_SIZE, 1: CHUNK_SIZE, 2: 77}
    assert scratch.pread(len(content), 0) == content
    scratch.close()
    (tmp_path / "f8").write_bytes(b"x" * 10)  # one chunk in f8, another in f8.1
    (tmp_path / "f8.1").write_bytes(b"y" * 3)
    os.truncate(tmp_path / "f8", CHUNK_SIZE)
    scratch = ScratchFile.existing(str(tmp_path), "f8", _no_blobs, ScratchStats())
    assert scratch.pread(CHUNK_SIZE + 10, 0) == b"x" * 10 + bytes(CHUNK_SIZE - 10) + b"y" * 3


@pytest.fixture
def small_blobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Blobs]:
    """Committed chunks of SMALL bytes, the scratch module's chunk size set to match."""
    monkeypatch.setattr(volfs.mount.scratch, "CHUNK_SIZE", SMALL)
    blobs = _Blobs(tmp_path / "blobs")
    blobs.directory.mkdir()
    yield blobs
    blobs.close()


def test_a_format_2_anchor_from_the_previous_daemon_is_read(
    tmp_path: Path, small_blobs: _Blobs
) -> None:
    """An overlay a daemon of the previous version left: its anchor has no flags byte."""
    blobs = small_blobs
    committed = os.urandom(3 * SMALL)
    base = blobs.chunks(committed, SMALL)
    (tmp_path / "f3").write_bytes(
        b"VS2\n"
        + struct.pack("<QI", len(committed), 2)
        + b"".join(struct.pack("<Q16s", i, bytes.fromhex(d)) for i, d in base[:2])
    )
    (tmp_path / "f3.2").write_bytes(b"new")  # chunk 2 rewritten, chunks 0-1 as committed
    scratch = ScratchFile.existing(str(tmp_path), "f3", blobs.open, ScratchStats())
    expected = committed[: 2 * SMALL] + b"new" + bytes(SMALL - 3)
    assert scratch.pread(1 << 10, 0) == expected
    scratch.close()


def _no_blobs(digest: Digest) -> int:
    raise AssertionError("no committed chunk expected")


def test_a_sequential_writer_starts_the_disk_writes_of_each_segment_once_it_is_full(
    tmp_path: Path,
) -> None:
    # What a 1 GiB ``dd`` costs: without it, every byte waited for the fsync to reach the disk.
    stats = ScratchStats()
    scratch = ScratchFile.create(str(tmp_path), "f1", _no_blobs, stats)
    block = os.urandom(1 << 20)
    for offset in range(0, 3 * CHUNK_SIZE + len(block) // 2, len(block) // 2):
        scratch.pwrite(block[: len(block) // 2], offset)
    assert stats.early_writebacks == 3  # chunks 0-2 are full; chunk 3 is still being written
    scratch.pwrite(b"patch", 100)  # a rewrite inside a segment starts nothing
    assert stats.early_writebacks == 3
    scratch.sync(datasync=False)
    assert scratch.pread(5, 100) == b"patch"
    assert _segments(tmp_path) == {0: CHUNK_SIZE, 1: CHUNK_SIZE, 2: CHUNK_SIZE, 3: len(block) // 2}
    scratch.close()


def test_a_file_of_many_segments_keeps_few_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volfs.mount.scratch, "CHUNK_SIZE", SMALL)
    scratch = ScratchFile.create(str(tmp_path), "f1", _no_blobs, ScratchStats())
    content = os.urandom(40 * SMALL + 3)
    for offset in range(0, len(content), 7):  # small writes across every segment
        scratch.pwrite(content[offset : offset + 7], offset)
        assert len(scratch._fds) <= volfs.mount.scratch.MAX_OPEN_SEGMENTS
    scratch.sync(datasync=False)  # reopens what it closed
    assert scratch.pread(len(content), 0) == content
    assert _segments(tmp_path) == {**{i: SMALL for i in range(40)}, 40: 3}
    scratch.unlink()


def test_a_commit_past_its_fd_budget_hashes_the_rest_on_the_loop(
    store: Store, overlay: Overlay, monkeypatch: pytest.MonkeyPatch
) -> None:
    import volfs.mount.publish

    monkeypatch.setattr(volfs.mount.publish, "freeze_budget", lambda: 2)
    files = {f"f{i}": os.urandom(1000 + i) for i in range(5)}
    for name, data in files.items():
        overlay.write(overlay.create(ROOT_INO, name, 0o644, 0, 0), 0, data)
    jobs = overlay.prepare_commit()
    assert len(jobs) == 2
    for job in jobs:  # not hashed here: commit_now freezes again
        for _, fd, _ in job.segments:
            os.close(fd)
    overlay.commit_now()
    assert {name: _committed(store, name) for name in files} == files


# -- a crash at any step ------------------------------------------------------------------
#: What a scratch file's changes do to the disk: the crash test dies before (or, for writes
#: and copies, half-way through) each of these calls in turn.
_CHANGES = ("open", "write", "pwrite", "rename", "replace", "unlink", "truncate", "ftruncate")
_CHANGES += ("copy_file_range", "utime")
_CREATING = os.O_CREAT | os.O_TRUNC


def _die_at(step: int, action: Callable[[], None]) -> bool:
    """Runs ``action`` in a forked child killed (``os._exit``, no cleanup runs) at its
    ``step``-th change to the disk; True if it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: every change to the disk counts, the step-th is its last
        count = 0

        def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                nonlocal count
                if name == "open" and not args[1] & _CREATING:
                    return real(*args, **kwargs)
                count += 1
                if count == step:
                    if name in ("write", "pwrite"):  # torn: half the bytes
                        real(args[0], bytes(args[1])[: len(args[1]) // 2], *args[2:])
                    elif name == "copy_file_range" and args[2] > 1:
                        real(args[0], args[1], args[2] // 2, *args[3:])
                    os._exit(0)
                return real(*args, **kwargs)

            return call

        try:
            for name in _CHANGES:
                setattr(os, name, counting(name, getattr(os, name)))
            action()
        except BaseException:
            os._exit(2)
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 3), f"the change failed in the child (exit {code})"
    return code == 3


def _could_be(got: bytes, before: bytes, after: bytes, torn: bool) -> bool:
    """``got`` is the file before or after the change; a write (``torn``) may also have
    landed in part: each byte is the old one (or a hole's zero past the old end) or the new."""
    if got in (before, after) or not torn:
        return got in (before, after)
    if not len(before) <= len(got) <= max(len(before), len(after)):
        return False
    return all(
        g == after[i] or g == (before[i] if i < len(before) else 0) for i, g in enumerate(got)
    )


_SETUPS: dict[str, list[tuple[str, int, bytes]]] = {
    "committed": [],  # every chunk a base chunk
    "written": [("write", 20, b"w" * 30)],  # chunks 1-3 are segments, chunk 0 a base chunk
    "linked": [("write", 20, b"w" * 30), ("freeze", 0, b"")],  # ...and blobs' inodes too
}
_CHANGES_TRIED: dict[str, tuple[str, int, bytes]] = {
    "copy-up write": ("write", 17, b"abcd"),
    "write across chunks": ("write", 10, b"z" * 30),
    "append": ("write", 48, b"tail"),
    "shrink inside a chunk": ("truncate", 20, b""),
    "shrink to a chunk's end": ("truncate", 16, b""),
    "shrink to nothing": ("truncate", 0, b""),
    "extend": ("truncate", 90, b""),
    "write past a shrink": ("shrink-then-write", 5, b"later"),
}


@pytest.mark.parametrize("change", sorted(_CHANGES_TRIED))
@pytest.mark.parametrize("setup", sorted(_SETUPS))
def test_a_crash_at_any_step_of_a_change_leaves_the_file_before_or_after_it(
    tmp_path: Path, small_blobs: _Blobs, setup: str, change: str
) -> None:
    """What ext4 promises a process killed in write(2) or truncate(2), and what recovery
    needs of a mount killed in one: the file is as before the call or as after it (a write
    may land in part), never with bytes it did not hold, and no committed blob changes."""
    blobs = small_blobs
    committed = os.urandom(3 * SMALL)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    scratch = ScratchFile.create(
        str(prepared),
        "f1",
        blobs.open,
        ScratchStats(),
        base=blobs.chunks(committed, SMALL),
        size=len(committed),
    )
    for op, number, data in _SETUPS[setup]:
        if op == "write":
            scratch.pwrite(data, number)
        else:  # frozen and linked, as a commit adopting the segments leaves them
            segments, _, _ = scratch.freeze()
            for index, fd, path in segments:
                os.link(path, blobs.directory / f"linked-{index}")
                os.close(fd)
    if change == "write past a shrink":
        scratch.truncate(_CHANGES_TRIED[change][1])
    scratch.close()
    op, number, data = _CHANGES_TRIED[change]
    linked = {p: p.read_bytes() for p in blobs.directory.iterdir()}

    def apply(directory: Path) -> None:
        found = ScratchFile.existing(str(directory), "f1", blobs.open, ScratchStats())
        if op == "truncate":
            found.truncate(number)
        else:
            found.pwrite(data, number if op == "write" else 40)
        found.close()

    def content(directory: Path) -> bytes:
        found = ScratchFile.existing(str(directory), "f1", blobs.open, ScratchStats())
        try:
            return found.pread(1 << 20, 0)
        finally:
            found.close()

    before = content(prepared)
    done = tmp_path / "done"
    shutil.copytree(prepared, done)
    apply(done)
    after = content(done)
    assert after != before
    step = 1
    while True:
        crashed = tmp_path / f"crash{step}"
        shutil.copytree(prepared, crashed)
        finished = _die_at(step, lambda: apply(crashed))
        got = content(crashed)
        assert _could_be(got, before, after, torn=op != "truncate"), (
            f"a crash at step {step} of {change} left {got!r}\n"
            f"before: {before!r}\nafter:  {after!r}"
        )
        for path, held in linked.items():
            assert path.read_bytes() == held, f"a crash at step {step} changed a blob"
        if finished:
            break
        step += 1
    assert step > 1
