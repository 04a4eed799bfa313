"""Observability on the command line: ``volfs stats``, the counters' columns of
``volfs status``, and the metrics and logging options of ``volfs mount``.

``volfs stats [PATH]`` asks the mount's daemon for its counters (the ``stats`` control
request: no tree diff, unlike ``status``) once per interval and prints one line of rates
per refresh, vmstat-style, until Ctrl-C or ``--count`` refreshes; without PATH, the sum
over every volfs mount visible to the caller.

Must not: hold counters (the daemon's, :mod:`volfs.mount.stats`); supervise mounts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from volfs import control
from volfs.cli._common import human_size
from volfs.config import LOG_LEVELS
from volfs.errors import InvalidError, VolfsError

if TYPE_CHECKING:  # the daemon's modules are imported by the commands that start one
    from volfs.mount.daemon import MountOptions

#: The opcodes ``volfs stats`` gives a column of their own; the rest are "other".
COLUMN_OPS = ("lookup", "getattr", "read", "write")
#: A header is printed again after this many lines, as vmstat does.
HEADER_EVERY = 20
MIB = 1 << 20


# -- volfs mount's options ------------------------------------------------------------------
def metrics_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="INFO",
        show_default=True,
        help="The daemon's log level.",
    )(f)
    f = click.option(
        "--metrics-public",
        is_flag=True,
        help="Allow --metrics on an address that is not loopback (no authentication).",
    )(f)
    f = click.option(
        "--metrics",
        metavar="HOST:PORT",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (loopback unless "
        "--metrics-public; 'off': not even the store's default).",
    )(f)
    return f


def apply_options(
    options: MountOptions,
    metrics: str | None,
    metrics_public: bool,
    log_level: str,
    mount_id: str | None,
    log_file: str | None,
) -> None:
    """Checks the observability options (here, not in the daemon's log) into ``options``."""
    from volfs.mount.metrics import parse_address

    if metrics is not None and metrics != "off":
        parse_address(metrics, public=metrics_public)
    options.metrics = metrics
    options.metrics_public = metrics_public
    options.log_level = log_level.upper()
    options.mount_id = mount_id
    options.log_file = log_file


# -- volfs status's columns ------------------------------------------------------------------
STATUS_HEADERS = ("store", "requests", "read", "written", "committed", "reloaded")
NO_COLUMNS = ("?",) * len(STATUS_HEADERS)


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return "-"
    seconds = max(0, int(now - when))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def status_columns(row: dict[str, Any]) -> list[str]:
    st = row.get("stats") or {}
    now = st.get("time") or time.time()
    committed = _ago(st.get("last_committed"), now)
    last = st.get("last_commit") or {}
    if last.get("result") == "failed":
        committed += " (last failed)"
    return [
        str(row.get("store", "?")),
        str(sum(op["count"] for op in st.get("requests", {}).values())),
        human_size(st.get("bytes_read", 0)),
        human_size(st.get("bytes_written", 0)),
        committed,
        _ago(st.get("last_reloaded"), now),
    ]


# -- volfs stats --------------------------------------------------------------------------------
def _sample(sockets: Sequence[str]) -> dict[str, float]:
    """The summed counters of these mounts, flattened to the numbers a line shows."""
    total: dict[str, float] = {"time": time.monotonic()}
    for socket in sockets:
        st = control.call(socket, "stats", timeout=10)
        for name, op in st["requests"].items():
            key = name if name in COLUMN_OPS else "other"
            total[key] = total.get(key, 0) + op["count"]
            total["ops"] = total.get("ops", 0) + op["count"]
            total["seconds"] = total.get("seconds", 0) + op["seconds"]
        for key in ("bytes_read", "bytes_written", "blob_reads", "overlay_dirty_bytes"):
            total[key] = total.get(key, 0) + st.get(key, 0)
        total["commits"] = total.get("commits", 0) + st["commits"]["published"]
        cache = st.get("blob_cache")
        if cache is not None:
            total["hits"] = total.get("hits", 0) + cache["cache_hits"]
            total["misses"] = total.get("misses", 0) + cache["cache_misses"]
    return total


HEADER = (
    f"{'time':>8} {'ops/s':>7} {'lookup':>7} {'getattr':>7} {'read':>6} {'write':>6} "
    f"{'other':>6} {'lat ms':>6} {'rd MiB/s':>8} {'wr MiB/s':>8} {'blob/s':>6} {'hit%':>5} "
    f"{'commits':>7} {'dirty MiB':>9}"
)


def _line(before: dict[str, float], after: dict[str, float]) -> str:
    span = max(after["time"] - before["time"], 1e-6)

    def rate(key: str) -> float:
        return (after.get(key, 0) - before.get(key, 0)) / span

    ops = after.get("ops", 0) - before.get("ops", 0)
    latency = (after.get("seconds", 0) - before.get("seconds", 0)) / ops * 1000 if ops else 0.0
    looked = (after.get("hits", 0) - before.get("hits", 0)) + (
        after.get("misses", 0) - before.get("misses", 0)
    )
    hit = (
        f"{100 * (after.get('hits', 0) - before.get('hits', 0)) / looked:.0f}"
        if "hits" in after and looked
        else "-"
    )
    return (
        f"{time.strftime('%H:%M:%S'):>8} {rate('ops'):7.0f} {rate('lookup'):7.0f} "
        f"{rate('getattr'):7.0f} {rate('read'):6.0f} {rate('write'):6.0f} {rate('other'):6.0f} "
        f"{latency:6.2f} {rate('bytes_read') / MIB:8.1f} {rate('bytes_written') / MIB:8.1f} "
        f"{rate('blob_reads'):6.0f} {hit:>5} "
        f"{after.get('commits', 0) - before.get('commits', 0):7.0f} "
        f"{after.get('overlay_dirty_bytes', 0) / MIB:9.1f}"
    )


def _answers(mount: control.MountInfo) -> bool:
    try:
        control.call(mount.socket, "stats", timeout=5)
        return True
    except VolfsError as exc:
        click.echo(f"warning: leaving out {mount.path}: {exc}", err=True)
        return False


@click.command("stats")
@click.argument("path", required=False, type=click.Path())
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N refreshes (default: until Ctrl-C).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between refreshes.",
)
def stats_cmd(path: str | None, count: int | None, interval: float) -> None:
    """Live statistics of the volfs mount at PATH (no PATH: all of them, summed), one line
    per refresh: requests per second by kind, their mean latency, MiB/s read and written,
    reads served from blobs, the blob cache's hit rate (distributed mode), commits."""
    if path is not None:
        mounts = [control.mount_info(path)]
    else:
        mounts = control.all_mounts()
        if not mounts:
            raise InvalidError("no volfs mounts")
    if path is None:  # every mount: those whose daemon answers now (another user's, an old
        # volfs without the request, a hung one are left out, with a word)
        mounts = [m for m in mounts if _answers(m)]
        if not mounts:
            raise InvalidError("no volfs mount answers")
    sockets = [m.socket for m in mounts]
    what = mounts[0].path if len(mounts) == 1 else f"{len(mounts)} mounts"
    try:
        click.echo(f"volfs stats of {what}, every {interval:g} s")
        before = _sample(sockets)
        shown = 0
        while count is None or shown < count:
            time.sleep(interval)
            after = _sample(sockets)
            if shown % HEADER_EVERY == 0:
                click.echo(HEADER)
            click.echo(_line(before, after))
            sys.stdout.flush()
            before = after
            shown += 1
    except KeyboardInterrupt:
        return  # Ctrl-C is how a live view ends: no traceback, exit 0
    except BrokenPipeError:
        # `volfs stats | head`: the reader has gone; nothing to say, and nothing more to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


__all__ = ["metrics_options", "stats_cmd", "status_columns"]
