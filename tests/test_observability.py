"""Observability: a mount's counters (``status --json``, ``/metrics``), ``volfs stats``, and
the daemon's logs (named by mount id, rotated, removed after the retention period)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mounting import mounted, run_volfs, volfs_mountpoints
from prometheus_client.parser import text_string_to_metric_families

from volfs.errors import InvalidError
from volfs.mount import logs, metrics

pytestmark = pytest.mark.mount


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _status(store: Path, path: Path) -> dict:
    rows = json.loads(run_volfs(store, "status", str(path), "--json").stdout)
    assert len(rows) == 1, rows
    return rows[0]


def _scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_counters_in_status_and_metrics_match_what_the_mount_did(
    store: Path, tmp_path: Path
) -> None:
    run_volfs(store, "volume", "create", "obs-counters")
    written = os.urandom(300_000)  # random: zeros written into a new file stay a hole
    outside = os.urandom(200_000)
    (tmp_path / "outside.bin").write_bytes(outside)
    path = tmp_path / "m"
    with mounted(store, "obs-counters", path, "--metrics", "127.0.0.1:0") as m:
        (path / "a.bin").write_bytes(written)
        m.commit()
        # A file this mount never had in its page cache: reading it must reach the daemon.
        run_volfs(store, "volume", "put", "obs-counters", str(tmp_path / "outside.bin"), "/b.bin")
        m.reload()
        assert (path / "b.bin").read_bytes() == outside

        status = _status(store, path)
        stats = status["stats"]
        assert status["store"] == str(store)
        assert stats["bytes_written"] == len(written)
        assert stats["bytes_read"] == len(outside)
        assert stats["blob_read_bytes"] == len(outside)
        assert 1 <= stats["blob_reads"] <= len(outside) // 4096 + 1
        assert stats["commits"] == {"published": 1, "empty": 0, "failed": 0}
        assert stats["commit_files"] == 1
        assert stats["commit_bytes"] == len(written)
        assert stats["commit_overwrites"] == 0
        assert stats["reloads"] == {"ok": 1, "refused": 0, "failed": 0}
        assert stats["last_committed"] is not None and stats["last_reloaded"] is not None
        assert stats["overlay_dirty_files"] == 0 and stats["open_handles"] == 0
        requests = stats["requests"]
        assert requests["create"]["count"] == 1
        # The kernel gathers written pages into WRITEs of up to 1 MiB, and reads ahead.
        assert 1 <= requests["write"]["count"] <= len(written) // 4096 + 1
        assert 1 <= requests["read"]["count"] <= len(outside) // 4096 + 1
        assert requests["open"]["count"] >= 1  # b.bin (the kernel may reopen for writeback)

        samples = _scrape(status["metrics"])
        labels = (("mount", status["mount_id"]), ("volume", "obs-counters"))

        def value(name: str, **extra: str) -> float:
            return samples[(name, tuple(sorted((*labels, *extra.items()))))]

        assert value("volfs_fuse_written_bytes_total") == len(written)
        assert value("volfs_fuse_read_bytes_total") == len(outside)
        assert value("volfs_blob_read_bytes_total") == len(outside)
        assert value("volfs_commits_total", result="published") == 1
        assert value("volfs_commits_total", result="failed") == 0
        assert value("volfs_commit_bytes_total") == len(written)
        assert value("volfs_commit_files_total") == 1
        assert value("volfs_reloads_total", result="ok") == 1
        assert value("volfs_fuse_requests_total", op="create") == 1
        assert value("volfs_fuse_request_duration_seconds_count", op="create") == 1
        assert value("volfs_fuse_request_duration_seconds_bucket", op="create", le="+Inf") == 1
        assert value("volfs_fuse_requests_total", op="read") == requests["read"]["count"]
        assert value("volfs_overlay_dirty_files") == 0
        assert value("volfs_mount_info") == 1

        # A reload refused (a file open) is counted as such.
        with open(path / "a.bin", "rb"):
            assert m.reload(check=False).returncode != 0
        assert _status(store, path)["stats"]["reloads"] == {"ok": 1, "refused": 1, "failed": 0}

        # Uncommitted changes show as the overlay's dirty files and bytes.
        (path / "c.bin").write_bytes(os.urandom(5000))
        os.sync()
        assert value_after(status["metrics"], "volfs_overlay_dirty_files", labels) == 1
        assert value_after(status["metrics"], "volfs_overlay_dirty_bytes", labels) == 5000


def value_after(address: str, name: str, labels: tuple[tuple[str, str], ...]) -> float:
    return _scrape(address)[(name, labels)]


def test_metrics_address_must_be_loopback_unless_public(store: Path, tmp_path: Path) -> None:
    run_volfs(store, "volume", "create", "obs-public")
    path = tmp_path / "m"
    for bad, message in (
        ("0.0.0.0:9567", "--metrics-public"),
        ("192.0.2.1:9567", "--metrics-public"),
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:99999", "HOST:PORT"),
    ):
        try:
            proc = run_volfs(store, "mount", "obs-public", str(path), "--metrics", bad, check=False)
        finally:
            _unmount_if_mounted(store, path)  # had it been accepted: never left mounted
        assert proc.returncode != 0, bad
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr


def test_metrics_addresses() -> None:
    assert metrics.parse_address("127.0.0.1:9567") == metrics.Address("127.0.0.1", 9567)
    assert metrics.parse_address("[::1]:0") == metrics.Address("::1", 0)
    assert str(metrics.parse_address("[::1]:0")) == "[::1]:0"
    assert metrics.parse_address("localhost:80").host == "localhost"
    assert metrics.parse_address("0.0.0.0:9567", public=True).host == "0.0.0.0"
    for bad in ("[::]:9567", "example.com:9567", ":9567", "9567", "127.0.0.1:x"):
        with pytest.raises(InvalidError):
            metrics.parse_address(bad)


def test_store_default_metrics_address_and_off(store: Path, tmp_path: Path) -> None:
    run_volfs(store, "volume", "create", "obs-default")
    (store / "config.json").write_text(json.dumps({"metrics": "127.0.0.1:0"}))
    with mounted(store, "obs-default", tmp_path / "a"):
        address = _status(store, tmp_path / "a")["metrics"]
        assert address is not None and address.startswith("127.0.0.1:")
        assert (
            _scrape(address)[
                (
                    "volfs_mount_info",
                    tuple(
                        sorted(
                            {
                                "volume": "obs-default",
                                "mount": _status(store, tmp_path / "a")["mount_id"],
                            }.items()
                        )
                    ),
                )
            ]
            == 1
        )
    with mounted(store, "obs-default", tmp_path / "b", "--metrics", "off"):
        assert _status(store, tmp_path / "b")["metrics"] is None


def _unmount_if_mounted(store: Path, path: Path) -> None:
    if str(path) in volfs_mountpoints():
        run_volfs(store, "unmount", "--force", str(path), check=False)
    if str(path) in volfs_mountpoints():
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)


def test_stats_count_prints_refreshes_with_rates_while_a_writer_runs(
    store: Path, tmp_path: Path
) -> None:
    run_volfs(store, "volume", "create", "obs-live")
    path = tmp_path / "m"
    with mounted(store, "obs-live", path):
        stop = threading.Event()

        def writer() -> None:
            # The same MiB rewritten and fsynced: WRITE requests all the time, bounded space.
            fd = os.open(path / "w.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                block = os.urandom(64 * 1024)
                offset = 0
                while not stop.is_set():
                    os.pwrite(fd, block, offset)
                    os.fsync(fd)
                    offset = (offset + len(block)) % (1 << 20)
            finally:
                os.close(fd)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            proc = run_volfs(store, "stats", str(path), "--count", "2")
        finally:
            stop.set()
            thread.join(timeout=30)
    lines = proc.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if "ops/s" in line)
    columns = lines[header].split()
    rows = [line.split() for line in lines[header + 1 :]]
    assert len(rows) == 2, proc.stdout
    for row in rows:
        assert re.fullmatch(r"\d\d:\d\d:\d\d", row[0]), row
        assert float(row[columns.index("ops/s")]) > 0, proc.stdout
        assert float(row[columns.index("write")]) > 0, proc.stdout
        # "wr MiB/s" is two words in the header: the row's columns follow the header's words
        # up to "lat", then one number each.
        assert float(row[9]) > 0, proc.stdout


def test_stats_of_a_path_that_is_not_a_mount_is_one_error_line(store: Path, tmp_path: Path) -> None:
    proc = run_volfs(store, "stats", str(tmp_path), "--count", "1", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"Error: {tmp_path} is not in a volfs mount"]


def test_log_rotation_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    logger = logging.getLogger("volfs.test.rotation")
    logger.propagate = False
    try:
        logs.setup(
            "INFO",
            tmp_path / "mo-x.log",
            max_bytes=300,
            backups=2,
            follow_stdio=False,
            logger=logger,
        )
        for i in range(200):
            logger.info("line %d of a log that outgrows its limit many times over", i)
        logger.debug("not at INFO")
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["mo-x.log", "mo-x.log.1", "mo-x.log.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 300
    assert "line 199 " in (tmp_path / "mo-x.log").read_text()
    assert "not at INFO" not in (tmp_path / "mo-x.log").read_text()


@contextlib.contextmanager
def background_mount(store: Path, name: str, path: Path) -> Iterator[dict]:
    """``volfs mount`` as a user runs it (the launcher, a log under run/); always unmounted,
    and its daemon (known by pid from status) ended if it lingers."""
    run_volfs(store, "mount", name, str(path), "--autocommit", "0")
    pid = None
    try:
        status = _status(store, path)
        pid = status["pid"]
        yield status
    finally:
        _unmount_if_mounted(store, path)
        if pid is not None:
            deadline = time.monotonic() + 20
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)


def test_clean_unmount_log_is_named_by_mount_id_and_removed_after_retention(
    store: Path, tmp_path: Path
) -> None:
    run_volfs(store, "volume", "create", "obs-logs")
    run_dir = store / "run"
    crashed = run_dir / "mo-crashedxxxxxxxxx.log"  # a mount that died: no marker, kept
    with background_mount(store, "obs-logs", tmp_path / "m") as status:
        mount_id = status["mount_id"]
        log = run_dir / f"{mount_id}.log"
        assert status["log"] == str(log)
        crashed.write_text("a crash\n")
        (tmp_path / "m" / "f").write_bytes(b"content")
        run_volfs(store, "commit", str(tmp_path / "m"))
        run_volfs(store, "unmount", str(tmp_path / "m"))
    text = log.read_text()
    assert "INFO mounted obs-logs" in text
    assert re.search(r"INFO commit sn-\w+: 1 files, 7 bytes, 0 overwrites", text), text
    assert "INFO unmounted obs-logs" in text
    assert not list(run_dir.glob("daemon-*.log"))

    now = time.time()
    assert logs.remove_expired(run_dir, clock=lambda: now + logs.RETENTION_SECONDS - 60) == []
    assert log.exists()
    removed = logs.remove_expired(run_dir, clock=lambda: now + logs.RETENTION_SECONDS + 60)
    assert log in removed
    assert not log.exists() and not list(run_dir.glob(f"{mount_id}*"))
    assert crashed.exists()


def test_a_new_mount_removes_logs_of_mounts_that_ended_long_ago(
    store: Path, tmp_path: Path
) -> None:
    run_volfs(store, "volume", "create", "obs-expire")
    run_dir = store / "run"
    with background_mount(store, "obs-expire", tmp_path / "m") as status:
        first = status["mount_id"]
    assert (run_dir / f"{first}.log").exists()
    old = time.time() - logs.RETENTION_SECONDS - 60
    os.utime(run_dir / f"{first}.ended", (old, old))  # it ended long ago
    with background_mount(store, "obs-expire", tmp_path / "m"):
        assert not (run_dir / f"{first}.log").exists()


def test_recover_notes_what_it_did_in_the_crashed_mounts_log(store: Path, tmp_path: Path) -> None:
    run_volfs(store, "volume", "create", "obs-recover")
    path = tmp_path / "m"
    with mounted(store, "obs-recover", path) as m:
        mount_id = _status(store, path)["mount_id"]
        (path / "f").write_bytes(b"kept")
        os.sync()
        m.proc.kill()  # our child, by pid: a crash leaves its overlay for `volfs recover`
        m.proc.wait(timeout=30)
        run_volfs(store, "recover")
    log = store / "run" / f"{mount_id}.log"
    assert re.search(rf"INFO recover {mount_id}: committed sn-\w+", log.read_text())
    assert (store / "run" / f"{mount_id}.ended").exists()  # its changes are safe: it may age


def test_stats_ends_cleanly_on_ctrl_c(store: Path, tmp_path: Path) -> None:
    run_volfs(store, "volume", "create", "obs-ctrl-c")
    path = tmp_path / "m"
    with mounted(store, "obs-ctrl-c", path):
        proc = subprocess.Popen(
            [sys.executable, "-m", "volfs", "stats", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "VOLFS_STORE": str(store)},
            # A terminal's Ctrl-C: SIGINT as Python handles it by default (a shell may have
            # made this process ignore it).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("volfs stats of")
            assert "ops/s" in proc.stdout.readline()  # the first refresh is being printed
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Aborted" not in err, err
