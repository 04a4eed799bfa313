"""Crash campaign: ``kill -9`` a mount's daemon (and, separately, a ``volfs volume put``)
at random points during writes and commits, with a manifest of what was committed.

Each daemon run: a fresh store and volume holding a few committed files; a real mount; a
worker thread doing random writes, appends, truncates, creates, renames, deletes,
mkdirs and commits (control socket) in it, keeping a model of the mount's view and the
manifest of every commit that returned; ``kill -9`` of the daemon after a random delay,
or a random moment after a commit starts (a multi-chunk file makes some commits long).
After the kill:

- the head is the last acknowledged snapshot, or — only if a commit was in flight — a
  new snapshot whose parent it is and whose content is the view at that commit: never
  torn, never anything else;
- every acknowledged snapshot still holds its manifest, byte for byte;
- ``volfs fsck`` is clean (exit 0), before and after recovery;
- ``volfs recover`` commits the orphaned overlay: the head then holds the view as it was
  after the last write that returned (the one operation the kill interrupted may have
  landed, partly for a write, or not at all).

Each put run: ``volfs volume put`` of a multi-chunk tree, killed after a random delay:
the head is the old snapshot or the complete upload, fsck is clean, and the upload
works when run again.

CI size by default; ``VOLFS_CAMPAIGN=full`` runs the full size (≥ 50 daemon runs).
Figures are printed (run pytest with ``-s`` to see them).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest_campaign import (
    DIR,
    FULL,
    Content,
    campaign_size,
    control_socket,
    describe_diff,
    fsck,
    head_id,
    kill9,
    read_local,
    read_tree,
    summary,
)
from mounting import mounted, run_volfs, volfs_mountpoints

from volfs import control
from volfs.api import Volume
from volfs.catalog import MountRecord
from volfs.config import CHUNK_SIZE
from volfs.mount.inodes import ROOT_INO
from volfs.mount.overlay import Overlay
from volfs.store import Store

pytestmark = pytest.mark.mount

DAEMON_RUNS = campaign_size(12, 50)
PUT_RUNS = campaign_size(5, 20)
SEED = int(os.environ.get("VOLFS_CAMPAIGN_SEED", "20240611"))
BIG = os.urandom(2 * CHUNK_SIZE + 12345)  # sliced per write: 1-3 chunks


# -- the worker: random operations on a mount, and a model of its view -----------------------------
@dataclass
class InFlight:
    kind: str
    args: tuple[Any, ...]
    before: dict[str, Content]
    after: dict[str, Content]


@dataclass
class Worker:
    run: int
    path: Path
    socket: str
    rng: random.Random
    view: dict[str, Content]
    acked: list[tuple[str, dict[str, Content]]]  # (snapshot, manifest), oldest first
    kill_at_commit: int = 0  # signal ``in_commit`` when this commit (1-based) starts
    in_commit: threading.Event = field(default_factory=threading.Event)
    in_flight: InFlight | None = None
    error: BaseException | None = None
    ops: int = 0
    commits: int = 0
    empty_commits_with_changes: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _names: int = 0

    def name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def dirs(self) -> list[str]:
        return [""] + sorted(p for p, c in self.view.items() if c == DIR)

    def files(self) -> list[str]:
        return sorted(p for p, c in self.view.items() if c != DIR)

    def data(self, big: bool = False) -> bytes:
        header = f"run {self.run} op {self.ops} ".encode()
        if big:
            size = self.rng.randint(CHUNK_SIZE + 1, len(BIG))
            return header + BIG[:size]
        return header * self.rng.randint(1, 300)

    def loop(self) -> None:
        try:
            while not self.stop.is_set() and self.ops < 400:
                self.step()
                self.ops += 1
        except BaseException as exc:  # the kill ends the loop; anything earlier is a failure
            self.error = exc

    def step(self) -> None:
        rng = self.rng
        files, dirs = self.files(), self.dirs()
        choice = rng.choices(
            ["write", "big", "append", "truncate", "rename", "delete", "mkdir", "rmdir", "commit"],
            [30, 3, 10, 5, 10, 8, 6, 3, 12],
        )[0]
        if choice in ("append", "truncate", "delete") and not files:
            choice = "write"
        if choice == "rename" and len(self.view) == 0:
            choice = "mkdir"
        if choice == "commit":
            return self.commit()
        view = dict(self.view)
        after = dict(view)
        if choice in ("write", "big"):
            if files and rng.random() < 0.4:
                target = rng.choice(files)
            else:
                target = _join(rng.choice(dirs), self.name("f"))
            data = self.data(big=choice == "big")
            after[target] = data
            self.run_op(
                "write",
                (target, data),
                view,
                after,
                lambda: Path(self.path, target).write_bytes(data),
            )
        elif choice == "append":
            target = rng.choice(files)
            data = self.data()
            old = view[target]
            assert isinstance(old, bytes)
            after[target] = old + data

            def append() -> None:
                with open(self.path / target, "ab") as f:
                    f.write(data)

            self.run_op("append", (target, data), view, after, append)
        elif choice == "truncate":
            target = rng.choice(files)
            old = view[target]
            assert isinstance(old, bytes)
            size = rng.randint(0, len(old) + 100)
            after[target] = old[:size] + b"\0" * max(0, size - len(old))
            self.run_op(
                "truncate",
                (target, size),
                view,
                after,
                lambda: os.truncate(self.path / target, size),
            )
        elif choice == "delete":
            target = rng.choice(files)
            del after[target]
            self.run_op("delete", (target,), view, after, lambda: os.unlink(self.path / target))
        elif choice == "mkdir":
            target = _join(rng.choice(dirs), self.name("d"))
            after[target] = DIR
            self.run_op("mkdir", (target,), view, after, lambda: os.mkdir(self.path / target))
        elif choice == "rmdir":
            empty = [d for d in dirs if d and not any(p.startswith(d + "/") for p in view)]
            if not empty:
                return
            target = rng.choice(empty)
            del after[target]
            self.run_op("rmdir", (target,), view, after, lambda: os.rmdir(self.path / target))
        elif choice == "rename":
            source = rng.choice(sorted(view))
            into = [d for d in dirs if d != source and not d.startswith(source + "/")]
            if view[source] != DIR and files and rng.random() < 0.3:
                target = rng.choice(files)  # replaces an existing file
                if target == source:
                    return
            else:
                target = _join(rng.choice(into), self.name("r"))
            for p in list(after):
                if p == source or p.startswith(source + "/"):
                    after[target + p[len(source) :]] = after.pop(p)
            self.run_op(
                "rename",
                (source, target),
                view,
                after,
                lambda: os.rename(self.path / source, self.path / target),
            )

    def run_op(
        self,
        kind: str,
        args: tuple[Any, ...],
        before: dict[str, Content],
        after: dict[str, Content],
        action: Any,
    ) -> None:
        self.in_flight = InFlight(kind, args, before, after)
        action()
        self.view = after
        self.in_flight = None

    def commit(self) -> None:
        view = dict(self.view)
        self.in_flight = InFlight("commit", (), view, view)
        self.commits += 1
        if self.commits == self.kill_at_commit:
            self.in_commit.set()
        result = control.call(self.socket, "commit", timeout=120)
        snapshot = result.get("snapshot")
        if snapshot:
            self.acked.append((snapshot, view))
        elif view != self.acked[-1][1]:
            self.empty_commits_with_changes += 1  # "nothing to commit" with changes pending
        self.in_flight = None


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


# -- checks ----------------------------------------------------------------------------------------
def recovered_problems(
    actual: dict[str, Content], view: dict[str, Content], in_flight: InFlight | None
) -> list[str]:
    """What differs between the recovered head and the view after the last write that returned.

    The interrupted operation may have landed or not; an interrupted write or append may
    also have landed partly (its data arrives in pieces).
    """
    if in_flight is None or in_flight.kind == "commit":
        return [] if actual == view else [describe_diff(view, actual)]
    if actual in (in_flight.before, in_flight.after):
        return []
    if in_flight.kind in ("write", "append"):
        target, data = in_flight.args
        old = in_flight.before.get(target)
        rest_actual = {p: c for p, c in actual.items() if p != target}
        rest_view = {p: c for p, c in in_flight.before.items() if p != target}
        if rest_actual != rest_view:
            return [describe_diff(rest_view, rest_actual)]
        got = actual.get(target)
        if got == old:
            return []
        base = old if in_flight.kind == "append" and isinstance(old, bytes) else b""
        if isinstance(got, bytes) and got.startswith(base) and _partly(got[len(base) :], data):
            return []  # part of the interrupted write
        return [
            f"  {target}: interrupted {in_flight.kind} left {len(got or b'')} bytes that are "
            "neither the old content nor part of the new"
        ]
    return [
        f"interrupted {in_flight.kind} {in_flight.args}: neither before nor after\n"
        + describe_diff(in_flight.after, actual)
    ]


def _partly(got: bytes, data: bytes, page: int = 4096) -> bool:
    """``got`` is what an interrupted write of ``data`` may leave: a prefix of it, where pages
    the kernel had not written back yet (a writeback cache) may still be holes of zeros."""
    if len(got) > len(data):
        return False
    for at in range(0, len(got), page):
        piece = got[at : at + page]
        if piece != data[at : at + len(piece)] and piece.count(0) != len(piece):
            return False
    return True


@dataclass
class Figures:
    runs: int = 0
    survived: int = 0
    files_checked: int = 0
    files_lost: int = 0
    killed_in_commit: int = 0
    new_head_after_kill: int = 0
    recovered_commits: int = 0
    ops: int = 0
    commits: int = 0
    failures: list[str] = field(default_factory=list)


def _initial(store: Store, local: Path, rng: random.Random) -> dict[str, Content]:
    local.mkdir()
    (local / "sub").mkdir()
    manifest: dict[str, Content] = {"sub": DIR}
    for i in range(rng.randint(1, 4)):
        data = f"initial {i} ".encode() * rng.randint(1, 500)
        (local / f"i{i}").write_bytes(data)
        manifest[f"i{i}"] = data
    (local / "sub" / "deep").write_bytes(b"deep")
    manifest["sub/deep"] = b"deep"
    Volume.objects.create("v", store=store)
    vol = Volume.from_name("v", store=store)
    with vol.batch_upload() as batch:
        batch.put_directory(local, "/")
    return manifest


def daemon_run(run: int, root: Path, figures: Figures) -> None:
    rng = random.Random(SEED * 1000 + run)
    store_path = root / "store"
    store = Store.open(store_path)
    manifest = _initial(store, root / "local", rng)
    s0 = head_id(store, "v")
    assert read_tree(store, s0) == manifest
    # random: any moment; commit: a random moment after a commit starts; landed: the
    # instant its head moved (the commit is published; the daemon has yet to finish it).
    mode = rng.choice(["random", "random", "commit", "landed"])
    problems: list[str] = []
    with mounted(store_path, "v", root / "m") as m:
        worker = Worker(run, m.path, control_socket(m.path), rng, dict(manifest), [(s0, manifest)])
        if mode in ("commit", "landed"):
            worker.kill_at_commit = rng.randint(1, 3)
        thread = threading.Thread(target=worker.loop, daemon=True)
        thread.start()
        if mode == "commit" and worker.in_commit.wait(timeout=30):
            time.sleep(rng.uniform(0, 0.15))
        elif mode == "landed" and worker.in_commit.wait(timeout=30):
            deadline = time.monotonic() + 30
            while head_id(store, "v") == worker.acked[-1][0] and time.monotonic() < deadline:
                time.sleep(0.0002)
        else:
            time.sleep(rng.uniform(0.1, 2.5))
        if worker.error is not None:
            worker.stop.set()
            raise AssertionError(
                f"run {run}: an operation failed before the kill: {worker.error!r}"
            )
        kill9(m.proc.pid)
        m.proc.wait(timeout=30)
        worker.stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the worker hung on the dead mount"
        in_flight = worker.in_flight
        figures.ops += worker.ops
        figures.commits += len(worker.acked) - 1
        if in_flight is not None and in_flight.kind == "commit":
            figures.killed_in_commit += 1

        # 1. The head: the last acknowledged snapshot, or the commit in flight — whole.
        last_id, last_manifest = worker.acked[-1]
        head = store.catalog.head(volume_id := store.catalog.get_volume("main", "v").id)
        if head.id != last_id:
            figures.new_head_after_kill += 1
            if in_flight is None or in_flight.kind != "commit":
                problems.append(
                    f"head moved to {head.id} with no commit in flight (last ack {last_id})"
                )
            elif head.parent != last_id:
                problems.append(f"head {head.id} is not a child of the last acknowledged {last_id}")
            elif (got := read_tree(store, head.id)) != in_flight.before:
                problems.append(
                    "the in-flight commit landed torn:\n" + describe_diff(in_flight.before, got)
                )
        # 2. Every acknowledged snapshot holds its manifest.
        for snapshot, expected in worker.acked:
            got = read_tree(store, snapshot)
            figures.files_checked += sum(1 for c in expected.values() if c != DIR)
            if got != expected:
                lost = sum(1 for p, c in expected.items() if got.get(p) != c)
                figures.files_lost += lost
                problems.append(f"snapshot {snapshot} changed:\n" + describe_diff(expected, got))
        if worker.empty_commits_with_changes:
            problems.append(
                f"{worker.empty_commits_with_changes} commit(s) said 'nothing to commit' "
                "with changes pending"
            )
        # 3. fsck is clean with the crashed overlay still there.
        checked = fsck(store_path)
        if checked.returncode != 0:
            problems.append(
                f"fsck after the kill exited {checked.returncode}:\n"
                f"{checked.stdout}{checked.stderr}"
            )
        # 4. recover brings back what the mount wrote.
        recovered = run_volfs(store_path, "recover", check=False)
        if recovered.returncode != 0:
            problems.append(f"recover exited {recovered.returncode}: {recovered.stderr}")
        if "committed" in recovered.stdout.replace("nothing to commit", ""):
            figures.recovered_commits += 1
        assert str(m.path) not in volfs_mountpoints(), (
            f"recover left the stale mount: {recovered.stderr}"
        )
    assert not any(store.overlays_dir.iterdir()), "recover left an overlay behind"
    after = read_tree(store, store.catalog.head(volume_id).id)
    found = recovered_problems(after, worker.view, in_flight)
    if found:
        figures.files_lost += sum(
            1 for p, c in worker.view.items() if c != DIR and after.get(p) != c
        )
        problems.append(
            f"after recover (interrupted: {in_flight and in_flight.kind}):\n" + "\n".join(found)
        )
    figures.files_checked += sum(1 for c in worker.view.values() if c != DIR)
    checked = fsck(store_path)
    if checked.returncode != 0:
        problems.append(
            f"fsck after recover exited {checked.returncode}:\n{checked.stdout}{checked.stderr}"
        )
    figures.runs += 1
    if problems:
        figures.failures.append(
            f"daemon run {run} (mode {mode}, {worker.ops} ops, {worker.commits} commits, "
            f"interrupted {in_flight and in_flight.kind}):\n" + "\n".join(problems)
        )
    else:
        figures.survived += 1


@pytest.mark.timeout(2400 if FULL else 420)
def test_kill_9_of_the_daemon_loses_nothing_committed_or_written(tmp_path: Path) -> None:
    figures = Figures()
    started = time.monotonic()
    for run in range(DAEMON_RUNS):
        root = tmp_path / f"run{run}"
        root.mkdir()
        try:
            daemon_run(run, root, figures)
        except AssertionError as exc:  # counted as a failed run; the campaign goes on
            figures.runs += 1
            figures.failures.append(f"daemon run {run}: {exc}")
        finally:
            if str(root / "m") in volfs_mountpoints():
                subprocess.run(["fusermount3", "-u", "-z", str(root / "m")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    summary(
        f"CRASH CAMPAIGN (daemon kill -9): runs survived {figures.survived}/{figures.runs}, "
        f"files lost {figures.files_lost} of {figures.files_checked} checked, "
        f"{figures.ops} operations and {figures.commits} acknowledged commits before the kills, "
        f"{figures.killed_in_commit} killed during a commit, "
        f"{figures.new_head_after_kill} with the in-flight commit landed, "
        f"{figures.recovered_commits} overlays recovered by `volfs recover` "
        f"({time.monotonic() - started:.0f} s)"
    )
    assert not figures.failures, "\n\n".join(figures.failures)
    assert figures.files_lost == 0


def test_every_close_of_a_file_reaches_the_daemon_so_a_crash_in_it_is_reported(
    tmp_path: Path,
) -> None:
    """Found by the campaign: a file written whole and closed with no error came back
    empty after the daemon's kill. With the writeback cache the kernel sends a closed file's
    cached pages to the daemon inside close(2); if the daemon dies first, they are dropped,
    and only the FLUSH request that follows can make close(2) fail. A filesystem that
    answers one FLUSH with ENOSYS is never sent another (the kernel's ``no_flush``), so
    every FLUSH must be answered."""
    store_path = tmp_path / "store"
    store = Store.open(store_path)
    Volume.objects.create("v", store=store)
    with mounted(store_path, "v", tmp_path / "m") as m:
        for i in range(3):
            (m.path / f"f{i}").write_bytes(b"x" * 5000)
        with open(m.path / "f0", "rb") as f:
            f.read()
        rows = json.loads(run_volfs(store_path, "status", str(m.path), "--json").stdout)
        flush = rows[0]["stats"]["requests"]["flush"]
        assert flush["count"] >= 4 and flush["errors"] == 0


# -- kill -9 of `volfs volume put` -----------------------------------------------------------------
def _upload_tree(root: Path) -> dict[str, Content]:
    """A multi-chunk tree: big files of several chunks and small files in subdirectories."""
    manifest: dict[str, Content] = {}
    rng = random.Random(SEED)
    (root / "deep" / "er").mkdir(parents=True)
    manifest.update({"up": DIR, "up/deep": DIR, "up/deep/er": DIR})
    for i, size in enumerate([CHUNK_SIZE + 7, 2 * CHUNK_SIZE + 100]):
        data = f"big {i} ".encode() + os.urandom(size)
        (root / f"big{i}").write_bytes(data)
        manifest[f"up/big{i}"] = data
    for i in range(40):
        where = rng.choice(["", "deep/", "deep/er/"])
        data = os.urandom(rng.randint(0, 5000))
        (root / f"{where}s{i}").write_bytes(data)
        manifest[f"up/{where}s{i}"] = data
    return manifest


@pytest.mark.timeout(1200 if FULL else 300)
def test_kill_9_of_volume_put_leaves_old_or_new_head(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    uploaded = _upload_tree(local)
    env = {**os.environ}
    survived = ran = landed = lost = 0
    failures: list[str] = []
    full_time = None
    started = time.monotonic()
    for run in range(PUT_RUNS):
        rng = random.Random(SEED * 7 + run)
        store_path = tmp_path / f"put{run}" / "store"
        store = Store.open(store_path)
        Volume.objects.create("v", store=store)
        vol = Volume.from_name("v", store=store)
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"before"), "keep")
        s0 = head_id(store, "v")
        before = read_tree(store, s0)
        env["VOLFS_STORE"] = str(store_path)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "volfs", "volume", "put", "v", str(local), "/up"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            if full_time is None:
                proc.wait(timeout=120)  # the first run calibrates the delays of the others
                full_time = time.monotonic() - t0
            else:
                time.sleep(rng.uniform(0, full_time * 1.1))
                kill9(proc.pid)
                proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                kill9(proc.pid)
                proc.wait(timeout=30)
            assert proc.stderr is not None
            proc.stderr.close()
        ran += 1
        problems = []
        head = store.catalog.head(vol.object_id)
        got = read_tree(store, head.id)
        lost += sum(1 for p, c in before.items() if got.get(p) != c)
        if head.id == s0:
            if got != before:
                problems.append("the old head changed:\n" + describe_diff(before, got))
        else:
            landed += 1
            if head.parent != s0:
                problems.append(f"head {head.id} is not a child of {s0}")
            if got != {**before, **uploaded}:
                problems.append(
                    "the upload landed torn:\n" + describe_diff({**before, **uploaded}, got)
                )
        checked = fsck(store_path)
        if checked.returncode != 0:
            problems.append(f"fsck exited {checked.returncode}:\n{checked.stdout}{checked.stderr}")
        again = run_volfs(
            store_path, "volume", "put", "v", str(local), "/up", "--force", check=False
        )
        if again.returncode != 0:
            problems.append(f"the put did not work again: {again.stderr}")
        elif (got := read_tree(store, head_id(store, "v"))) != {**before, **uploaded}:
            problems.append(
                "the repeated put is wrong:\n" + describe_diff({**before, **uploaded}, got)
            )
        if (checked := fsck(store_path)).returncode != 0:
            problems.append(
                f"fsck after the repeated put exited {checked.returncode}:\n{checked.stdout}"
            )
        if problems:
            failures.append(f"put run {run}:\n" + "\n".join(problems))
        else:
            survived += 1
        shutil.rmtree(store_path.parent, ignore_errors=True)
    summary(
        f"CRASH CAMPAIGN (volume put kill -9): runs survived {survived}/{ran}, "
        f"{landed} with the upload landed whole, the rest with the old head; files lost {lost} "
        f"(a put takes {full_time:.2f} s; {time.monotonic() - started:.0f} s in all)"
    )
    assert not failures, "\n\n".join(failures)


def test_the_worker_model_matches_a_plain_directory(tmp_path: Path) -> None:
    """The campaign's model of a view is right: the same random script on a local directory."""
    for seed in range(5):
        root = tmp_path / f"plain{seed}"
        root.mkdir()
        worker = Worker(seed, root, "", random.Random(seed), {}, [("none", {})])
        worker.commit = lambda: None  # type: ignore[method-assign]
        for _ in range(150):
            worker.step()
            worker.ops += 1
        assert read_local(root) == worker.view


def test_recovered_problems_accepts_only_old_new_or_a_prefix() -> None:
    before: dict[str, Content] = {"f": b"old"}
    write = InFlight("write", ("f", b"new content"), before, {"f": b"new content"})
    assert recovered_problems({"f": b"new c"}, before, write) == []
    assert recovered_problems({"f": b"old"}, before, write) == []
    assert recovered_problems({"f": b"newX"}, before, write) != []
    page = InFlight("write", ("f", b"a" * 8192), before, {"f": b"a" * 8192})
    assert recovered_problems({"f": b"\0" * 4096 + b"a" * 100}, before, page) == []  # a hole
    assert recovered_problems({"f": b"\0" * 4096 + b"b" * 100}, before, page) != []
    append = InFlight("append", ("f", b"+more"), before, {"f": b"old+more"})
    assert recovered_problems({"f": b"old+m"}, before, append) == []
    assert recovered_problems({"f": b"+m"}, before, append) != []
    assert recovered_problems({"f": b"old", "g": b"x"}, before, write) != []


def test_recover_detaches_a_dead_mount_whose_root_the_kernel_still_caches(tmp_path: Path) -> None:
    """A dead daemon's mount can still answer ``stat`` of its root from the kernel's attribute
    cache: recover (and unmount) must not take that for a live mount."""
    store_path = tmp_path / "store"
    run_volfs(store_path, "volume", "create", "v")
    with mounted(store_path, "v", tmp_path / "m") as m:
        (m.path / "f").write_text("uncommitted")
        os.stat(m.path)  # the root's attributes are now cached for minutes
        kill9(m.proc.pid)
        m.proc.wait(timeout=30)
        os.stat(m.path)  # still answered from the cache: the daemon is gone
        out = run_volfs(store_path, "recover")
        assert "stale FUSE mount detached" in out.stdout
        assert str(m.path) not in volfs_mountpoints()
    assert run_volfs(store_path, "volume", "get", "v", "f", "-").stdout == "uncommitted"


def test_recover_clears_the_mount_record_it_made_stale(tmp_path: Path) -> None:
    """After recover committed a dead mount's overlay, nothing of that mount is left:
    fsck has no stale record to report (it used to, for ever)."""
    store_path = tmp_path / "store"
    run_volfs(store_path, "volume", "create", "v")
    with mounted(store_path, "v", tmp_path / "m") as m:
        (m.path / "f").write_text("uncommitted")
        kill9(m.proc.pid)
        m.proc.wait(timeout=30)
        assert len(Store.open(store_path).catalog.list_mounts()) == 1
        run_volfs(store_path, "recover")
    assert Store.open(store_path).catalog.list_mounts() == []
    report = run_volfs(store_path, "fsck")
    assert "stale mount record" not in report.stdout + report.stderr


class SimulatedCrash(BaseException):
    pass


def _mount_without_fuse(tmp_path: Path) -> tuple[Store, Overlay]:
    """A store with volume "v" and an overlay on it as a daemon makes one (mount.json,
    journal), driven in-process: what a crash leaves behind, when the test drops it."""
    store = Store.open(tmp_path / "store")
    Volume.objects.create("v", store=store)
    volume = store.catalog.get_volume("main", "v")
    base = store.catalog.head(volume.id)
    overlay_dir = store.overlays_dir / "mo-crashtest"
    overlay_dir.mkdir()
    record = MountRecord(
        "mo-crashtest",
        volume.id,
        "v",
        "main",
        str(tmp_path / "m"),
        1,
        0,
        base.id,
        False,
        "",
        str(overlay_dir),
        time.time(),
    )  # type: ignore[arg-type]
    (overlay_dir / "mount.json").write_text(json.dumps(record.__dict__))
    return store, Overlay(store, volume, base, overlay_dir)


def test_two_recovers_never_commit_one_overlay_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``volfs recover`` holds the overlay's lock, as its daemon did, while it commits: a
    recover that listed the overlay as orphaned a moment before another claimed it (the
    listing is made to race here) leaves it alone."""
    from volfs.mount import recover

    monkeypatch.setattr(recover, "_locked_by_live_daemon", lambda overlay_dir: False)
    store, overlay = _mount_without_fuse(tmp_path)
    overlay.write(overlay.create(ROOT_INO, "f", 0o644, 0, 0), 0, b"once")
    overlay.close()  # the daemon is gone
    head = head_id(store, "v")
    fd = os.open(overlay.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another `volfs recover` at work
        assert recover.recover(store) == []
        assert head_id(store, "v") == head and overlay.dir.exists()
    finally:
        os.close(fd)
    assert [r.action for r in recover.recover(store)] == ["committed"]
    assert read_tree(store, head_id(store, "v")) == {"f": b"once"}
    assert recover.recover(store) == [] and not overlay.dir.exists()


def test_a_crash_as_a_commit_finishes_keeps_the_files_it_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the campaign (run 42 of the full size): a daemon killed after its commit
    landed but before it rewrote its journal left a journal naming scratch files the commit
    had already deleted; recover replayed them as empty files and committed that, emptying
    committed files. Driven here without a mount: the crash is an exception at that instant.
    """
    from volfs.mount import recover

    store, overlay = _mount_without_fuse(tmp_path)
    overlay.write(overlay.create(ROOT_INO, "f", 0o644, 0, 0), 0, b"committed content")

    def crash(*args: object) -> None:
        raise SimulatedCrash

    monkeypatch.setattr(overlay, "_rewrite_journal", crash)
    with pytest.raises(SimulatedCrash):
        overlay.commit_now()
    assert read_tree(store, head_id(store, "v")) == {"f": b"committed content"}
    overlay.close()  # the process is gone

    results = recover.recover(store)
    assert [r.action for r in results] in (["committed"], ["nothing to commit"])
    assert read_tree(store, head_id(store, "v")) == {"f": b"committed content"}


def test_an_mtime_set_on_an_uncommitted_file_survives_a_crash(tmp_path: Path) -> None:
    """The scratch file carries it (no journal record): tar sets mtimes after writing."""
    from volfs.mount import recover

    store, overlay = _mount_without_fuse(tmp_path)
    node = overlay.create(ROOT_INO, "old", 0o644, 0, 0)
    overlay.write(node, 0, b"from 2001")
    overlay.setattr(node, mtime_ns=978_307_200_000_000_000)
    overlay.close()  # the daemon is gone
    assert [r.action for r in recover.recover(store)] == ["committed"]
    entry = Volume.from_name("v", store=store).listdir("/")[0]
    assert entry.path == "old" and entry.mtime == 978_307_200
