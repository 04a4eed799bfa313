"""Distributed mode's throughput, beside the embedded (local) store, in one run.

For each backend — ``local`` (an embedded store) and ``distributed`` (PostgreSQL + the S3
endpoint in the environment, two machines = two store directories) — on real mounts:

- commit: write the files into a mount on machine 1, then time ``volfs commit`` (hashing,
  blob upload, trees, head move);
- cold read: a fresh mount on machine 2 reads every file (fetched from the bucket, verified,
  cached); for the local store, after dropping the page cache;
- warm read: a new mount on machine 2 reads them again (from the local cache, no request).

Workloads: ``large`` (4 files of 64 MiB) and ``small`` (2,000 files of 4 KiB).

    scripts/bench-distributed [--json FILE] [--small N] [--large-mib N]

Needs ``VOLFS_META_URL`` and ``VOLFS_S3_ENDPOINT`` (scripts/bench-distributed starts them
from ../shared/services). Runs as root (it drops the page cache between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mounting import mounted, run_volfs  # noqa: E402


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
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
    return total


def run(backend: str, machines: list[Path], tmp: Path, args: argparse.Namespace) -> list[dict]:
    results = []
    for workload in ("large", "small"):
        name = f"bench-{workload}"
        run_volfs(machines[0], "volume", "create", name)
        with mounted(machines[0], name, tmp / f"{backend}-{workload}-w") as w:
            size = write_files(w.path, workload, args)
            t0 = time.perf_counter()
            w.commit()
            commit = time.perf_counter() - t0
        reads = {}
        for phase in ("cold", "warm"):
            drop_caches()
            with mounted(machines[1], name, tmp / f"{backend}-{workload}-{phase}") as r:
                t0 = time.perf_counter()
                got = read_all(r.path / workload)
                reads[phase] = time.perf_counter() - t0
                assert got == size, (got, size)
        mib = size / (1 << 20)
        files = 4 if workload == "large" else args.small
        results.append(
            {
                "backend": backend,
                "workload": workload,
                "bytes": size,
                "files": files,
                "commit_s": commit,
                "commit_MiB_s": mib / commit,
                "commit_files_s": files / commit,
                "cold_read_s": reads["cold"],
                "cold_read_MiB_s": mib / reads["cold"],
                "warm_read_s": reads["warm"],
                "warm_read_MiB_s": mib / reads["warm"],
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large-mib", type=int, default=64)
    args = parser.parse_args()
    meta = os.environ.get("VOLFS_META_URL")
    endpoint = os.environ.get("VOLFS_S3_ENDPOINT")
    if not meta or not endpoint:
        sys.exit("bench-distributed: VOLFS_META_URL and VOLFS_S3_ENDPOINT must be set")
    bucket = os.environ.get("VOLFS_S3_BUCKET", "volfs")
    results = []
    with tempfile.TemporaryDirectory(prefix="volfs-bench-") as tmp_name:
        tmp = Path(tmp_name)
        local = tmp / "local"
        results += run("local", [local, local], tmp, args)
        prefix = "bench-" + secrets.token_hex(4)
        db = "volfs_bench_" + secrets.token_hex(4)
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import psycopg; psycopg.connect({meta!r}, autocommit=True)"
                f".execute('CREATE DATABASE {db}')",
            ],
            check=True,
        )
        meta_db = meta.rsplit("/", 1)[0] + "/" + db
        machines = [tmp / "machine1", tmp / "machine2"]
        for m in machines:
            run_volfs(
                m,
                "store",
                "init",
                "--meta",
                meta_db,
                "--blobs",
                f"s3://{bucket}/{prefix}",
                "--endpoint",
                endpoint,
            )
        results += run("distributed", machines, tmp, args)
    engine = os.environ.get("VOLFS_S3_ENGINE", "s3")
    print(f"\n{'workload':8} {'backend':12} {'commit':>14} {'cold read':>12} {'warm read':>12}")
    for r in results:
        backend = r["backend"] if r["backend"] == "local" else f"{engine}+pg"
        commit = (
            f"{r['commit_MiB_s']:.0f} MiB/s"
            if r["workload"] == "large"
            else f"{r['commit_files_s']:.0f} files/s"
        )
        print(
            f"{r['workload']:8} {backend:12} {commit:>14} {r['cold_read_MiB_s']:>7.1f} MiB/s "
            f"{r['warm_read_MiB_s']:>7.1f} MiB/s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
