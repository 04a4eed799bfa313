"""Load: 8 mounts × 50 commits of disjoint files at the same time, plus 2 mounts rewriting
one shared file, all on one volume, each driven by its own thread through its control socket.

At the end:
- every disjoint file is in the head with its final content;
- the shared file holds exactly one whole version (never a mix of two writes), in the
  head and in every snapshot of history;
- history records each overwrite of the shared file: a commit of it records an overwrite
  exactly when the version it replaced is not the one that mount last committed (the
  mounts never reload, so that is whenever the other mount committed in between), and no
  other commit records any.

Figures (commits landed / attempted, time) are printed; run pytest with ``-s`` to see them.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest_campaign import (
    FULL,
    campaign_size,
    control_socket,
    describe_diff,
    entry_bytes,
    mounts,
    read_tree,
    summary,
)
from mounting import run_volfs

from volfs import control
from volfs.store import Store

pytestmark = pytest.mark.mount

DISJOINT_MOUNTS = 8
COMMITS = 50
SHARED_COMMITS = 50
READER_MAX_RELOADS = campaign_size(200, 1000)
SHARED_SIZE = 192 * 1024
VERSION_RE = re.compile(rb"<writer (\d) version (\d+)>")


def shared_version(writer: int, version: int) -> bytes:
    """A whole-file version anyone can recognise, and check for a mix, from any of its bytes."""
    unit = f"<writer {writer} version {version:04d}>".encode()
    return (unit * (SHARED_SIZE // len(unit) + 1))[:SHARED_SIZE]


def whole_version(data: bytes) -> tuple[int, int] | None:
    found = VERSION_RE.match(data)
    if found is None:
        return None
    writer, version = int(found[1]), int(found[2])
    return (writer, version) if data == shared_version(writer, version) else None


def disjoint_file(mount: int, commit: int) -> bytes:
    return f"mount {mount} file {commit}\n".encode() * (1 + commit % 7)


@dataclass
class Tally:
    attempted: int = 0
    landed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: snapshot id -> (writer, version) for the shared writers' commits
    shared: dict[str, tuple[int, int]] = field(default_factory=dict)

    def commit(self, socket: str) -> str | None:
        with self.lock:
            self.attempted += 1
        result = control.call(socket, "commit", timeout=300)
        snapshot = result.get("snapshot")
        if snapshot:
            with self.lock:
                self.landed += 1
        return snapshot


def disjoint_writer(k: int, path: Path, socket: str, tally: Tally, start: threading.Event) -> None:
    try:
        start.wait()
        (path / f"m{k}").mkdir()
        for j in range(COMMITS):
            (path / f"m{k}" / f"f{j}").write_bytes(disjoint_file(k, j))
            (path / f"m{k}" / "latest").write_text(f"mount {k} commit {j}")
            tally.commit(socket)
    except BaseException as exc:
        tally.errors.append(f"disjoint mount {k}: {exc!r}")


def shared_writer(w: int, path: Path, socket: str, tally: Tally, start: threading.Event) -> None:
    try:
        start.wait()
        for j in range(SHARED_COMMITS):
            (path / "shared.bin").write_bytes(shared_version(w, j))
            snapshot = tally.commit(socket)
            if snapshot:
                with tally.lock:
                    tally.shared[snapshot] = (w, j)
    except BaseException as exc:
        tally.errors.append(f"shared writer {w}: {exc!r}")


def reader(
    path: Path, socket: str, tally: Tally, done: threading.Event, seen: list[tuple[int, int]]
) -> None:
    """An 11th mount reloading while the others commit: each reload shows whole commits."""
    try:
        while not done.is_set() and len(seen) < READER_MAX_RELOADS:
            control.call(socket, "reload", timeout=300)
            for k in range(DISJOINT_MOUNTS):
                try:
                    latest = (path / f"m{k}" / "latest").read_text()
                except FileNotFoundError:
                    continue
                j = int(latest.rsplit(" ", 1)[1])
                names = set(os.listdir(path / f"m{k}"))
                if names != {"latest", *(f"f{i}" for i in range(j + 1))}:
                    tally.errors.append(
                        f"the reader saw m{k} at commit {j} with {sorted(names)}: "
                        "a commit landed in part"
                    )
                    return
            try:
                data = (path / "shared.bin").read_bytes()
            except FileNotFoundError:
                continue
            version = whole_version(data)
            if version is None:
                tally.errors.append(
                    f"the reader saw a shared.bin that is not one whole version: "
                    f"{VERSION_RE.findall(data)[:3]}…"
                )
                return
            seen.append(version)
    except BaseException as exc:
        tally.errors.append(f"reader: {exc!r}")


@pytest.mark.timeout(600 if FULL else 240)
def test_eight_mounts_commit_disjoint_files_while_two_rewrite_one_file(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    run_volfs(store_path, "volume", "create", "vol")
    specs = [("vol", tmp_path / f"d{k}") for k in range(DISJOINT_MOUNTS)]
    specs += [("vol", tmp_path / f"s{w}") for w in range(2)]
    specs += [("vol", tmp_path / "reader")]
    started = time.monotonic()
    with mounts(store_path, specs) as running:
        mounted_in = time.monotonic() - started
        tally = Tally()
        start = threading.Event()
        threads = [
            threading.Thread(
                target=disjoint_writer, args=(k, m.path, control_socket(m.path), tally, start)
            )
            for k, m in enumerate(running[:DISJOINT_MOUNTS])
        ]
        threads += [
            threading.Thread(
                target=shared_writer, args=(w, m.path, control_socket(m.path), tally, start)
            )
            for w, m in enumerate(running[DISJOINT_MOUNTS : DISJOINT_MOUNTS + 2])
        ]
        done = threading.Event()
        seen: list[tuple[int, int]] = []
        reading = threading.Thread(
            target=reader,
            args=(running[-1].path, control_socket(running[-1].path), tally, done, seen),
        )
        for t in threads:
            t.start()
        t0 = time.monotonic()
        start.set()
        reading.start()
        for t in threads:
            t.join(timeout=400)
        load_time = time.monotonic() - t0
        done.set()
        reading.join(timeout=300)
        assert not any(t.is_alive() for t in [*threads, reading]), "a writer or the reader hung"
        assert not tally.errors, "\n".join(tally.errors)
        mount_ids = {control.mount_info(str(m.path)).mount_id: i for i, m in enumerate(running)}
    total = time.monotonic() - started

    store = Store.open(store_path)
    volume = store.catalog.get_volume("main", "vol")
    head = read_tree(store, volume.head)
    expected = {}
    for k in range(DISJOINT_MOUNTS):
        for j in range(COMMITS):
            expected[f"m{k}/f{j}"] = disjoint_file(k, j)
        expected[f"m{k}/latest"] = f"mount {k} commit {COMMITS - 1}".encode()
    missing = {p: c for p, c in expected.items() if head.get(p) != c}
    assert not missing, describe_diff(expected, {p: head.get(p) for p in expected})  # type: ignore[misc]
    final = whole_version(head["shared.bin"])  # type: ignore[arg-type]
    assert final in {(0, SHARED_COMMITS - 1), (1, SHARED_COMMITS - 1)}, final

    # History: every snapshot, oldest first.
    history = list(store.catalog.history(volume.id))[::-1]
    assert len(history) == 1 + tally.landed, (
        "a commit that returned a snapshot is missing from history"
    )
    last_committed: dict[int, tuple[int, int] | None] = {
        0: None,
        1: None,
    }  # writer -> its last version
    shared_commits = overwrites_recorded = 0
    previous: tuple[int, int] | None = None
    problems = []
    for snap in history[1:]:
        tree = store.catalog.get_tree(snap.root.tree)  # type: ignore[arg-type]
        entry = tree.get("shared.bin")
        current = None
        if entry is not None:
            current = whole_version(entry_bytes(store, entry))
            if current is None:
                problems.append(f"{snap.id}: shared.bin is not one whole version")
                continue
        recorded = {o["path"] for o in snap.overwrites}
        mount_index = next((i for mid, i in mount_ids.items() if mid in snap.origin), None)
        if snap.id in tally.shared:
            writer = tally.shared[snap.id][0]
            assert mount_index == DISJOINT_MOUNTS + writer, snap.origin
            if current != tally.shared[snap.id]:
                problems.append(
                    f"{snap.id}: holds {current}, its commit wrote {tally.shared[snap.id]}"
                )
            shared_commits += 1
            should = previous is not None and previous != last_committed[writer]
            if should != ("shared.bin" in recorded):
                problems.append(
                    f"{snap.id} by writer {writer}: replaced {previous} (its own last: "
                    f"{last_committed[writer]}) but recorded overwrites {sorted(recorded)}"
                )
            overwrites_recorded += "shared.bin" in recorded
            if recorded - {"shared.bin"}:
                problems.append(f"{snap.id}: unexpected overwrites {sorted(recorded)}")
            last_committed[writer] = current
        else:
            if current != previous:
                problems.append(f"{snap.id} ({snap.origin}) changed shared.bin")
            if recorded:
                problems.append(f"{snap.id} ({snap.origin}) recorded overwrites {sorted(recorded)}")
        previous = current
    assert not problems, "\n".join(problems[:20])
    assert shared_commits == 2 * SHARED_COMMITS
    summary(
        f"LOAD: commits landed {tally.landed}/{tally.attempted} "
        f"({DISJOINT_MOUNTS} mounts x {COMMITS} disjoint + 2 x {SHARED_COMMITS} "
        "on one shared file), "
        f"{overwrites_recorded} overwrites of the shared file, each recorded in history; "
        f"{len(expected)} disjoint files all present; "
        f"a reader reloaded {len(seen)} times meanwhile, "
        f"always seeing one whole version; {tally.landed / load_time:.1f} commits/s "
        f"over {load_time:.1f} s (mounting {mounted_in:.1f} s, {total:.1f} s with unmounting)"
    )
    assert tally.landed == tally.attempted
