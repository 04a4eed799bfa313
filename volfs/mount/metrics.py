"""Prometheus ``/metrics`` for one mount: the address it listens on, and what it exposes.

Owns:

- :func:`parse_address`: ``HOST:PORT`` (``[::1]:9567`` for IPv6; port 0: any free port).
  Loopback only unless asked for explicitly (``--metrics-public``): the metrics name
  volumes and paths, and the endpoint has no authentication.
- :func:`store_default`: the store-wide default, ``{"metrics": "HOST:PORT"}`` in
  ``<store>/config.json`` (optional; ``"metrics_public": true`` as the flag).
- :class:`MountCollector`: a prometheus-client collector that reads the daemon's counters
  (:mod:`volfs.mount.stats`) at scrape time; nothing is kept in prometheus-client objects
  between scrapes, so the FUSE hot path never touches this module.
- :func:`serve`: prometheus-client's HTTP server in a daemon thread of its own (the trio
  loop is not involved); stopped with :meth:`MetricsServer.close`.

Concurrency: the collector runs in the HTTP server's threads and only reads ints, dicts
copied at once and lengths; whatever it reads is at most a moment out of date.

Must not: write to a counter; import pyfuse3 or trio.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volfs.errors import InvalidError, MountError
from volfs.mount.stats import OPS, MountStats, cumulative

log = logging.getLogger(__name__)
CONFIG_NAME = "config.json"
DEFAULT_PORT = 9567  # the port JuiceFS uses: dashboards and firewalls already know it
#: A store-wide default whose port is taken (another mount of the store) tries the next ones.
PORT_SEARCH = 32


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: where it points is not ours to trust


def parse_address(text: str, *, public: bool = False) -> Address:
    """``HOST:PORT`` as an :class:`Address`; InvalidError if malformed, or not loopback and
    not ``public``."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise InvalidError(
            f"--metrics wants HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}), not {text!r}"
        )
    if not host:
        raise InvalidError(
            f"--metrics {text!r}: give the address to listen on (127.0.0.1:{port_text}, "
            f"or 0.0.0.0:{port_text} with --metrics-public)"
        )
    if not public and not _is_loopback(host):
        raise InvalidError(
            f"--metrics {text}: not a loopback address; the metrics name volumes and paths "
            "and have no authentication: add --metrics-public to serve them there"
        )
    return Address(host, int(port_text))


def store_default(store_root: Path) -> tuple[str | None, bool]:
    """The store's default metrics address and whether it may be public (``config.json``)."""
    path = store_root / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None, False
    except (OSError, ValueError) as exc:
        raise InvalidError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidError(f"{path} must hold a JSON object")
    address = config.get("metrics")
    public = config.get("metrics_public", False)
    if address is not None and not isinstance(address, str):
        raise InvalidError(f'{path}: "metrics" must be a string HOST:PORT')
    if not isinstance(public, bool):
        raise InvalidError(f'{path}: "metrics_public" must be true or false')
    return address or None, public


class MountCollector:
    """The mount's counters as Prometheus families, built afresh at each scrape."""

    def __init__(
        self,
        stats: MountStats,
        labels: dict[str, str],
        gauges: Callable[[], dict[str, float]],
        blob_stats: dict[str, int] | None,
    ) -> None:
        self.stats = stats
        self.names = list(labels)
        self.values = list(labels.values())
        self.gauges = gauges
        self.blob_stats = blob_stats

    def describe(self) -> list[Any]:
        return []  # no fixed description: the registry then never calls collect() early

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        names, values, st = self.names, self.values, self.stats

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        info = GaugeMetricFamily("volfs_mount_info", "A mount (always 1).", labels=names)
        info.add_metric(values, 1)
        yield info
        yield gauge("volfs_mount_start_time_seconds", "When the mount started.", st.started)

        requests = CounterMetricFamily(
            "volfs_fuse_requests", "FUSE requests served, by opcode.", labels=[*names, "op"]
        )
        failed = CounterMetricFamily(
            "volfs_fuse_request_errors",
            "FUSE requests answered with an errno (ENOENT and ENODATA included).",
            labels=[*names, "op"],
        )
        latency = HistogramMetricFamily(
            "volfs_fuse_request_duration_seconds",
            "Time the daemon took to answer a FUSE request, by opcode.",
            labels=[*names, "op"],
        )
        for name, op in zip(OPS, st.ops, strict=True):
            buckets = cumulative(op.buckets)
            count = buckets[-1][1]
            if not count and not op.count:
                continue
            requests.add_metric([*values, name], op.count)
            failed.add_metric([*values, name], op.errors)
            if name != "forget":  # forget has no reply, so no latency
                latency.add_metric([*values, name], buckets, op.total_ns / 1e9)
        yield requests
        yield failed
        yield latency

        yield counter("volfs_fuse_read_bytes", "Bytes answered to READ requests.", st.bytes_read)
        yield counter(
            "volfs_fuse_written_bytes", "Bytes taken from WRITE requests.", st.bytes_written
        )
        yield counter(
            "volfs_blob_reads",
            "READ requests of committed content (past the page cache, served from a blob).",
            st.blob_reads,
        )
        yield counter("volfs_blob_read_bytes", "Bytes those READs answered.", st.blob_read_bytes)
        if self.blob_stats is not None:
            blobs = dict(self.blob_stats)
            yield counter(
                "volfs_blob_cache_hits",
                "Blob opens served from this machine's cache (distributed mode).",
                blobs.get("cache_hits", 0),
            )
            yield counter(
                "volfs_blob_cache_misses",
                "Blobs fetched from the object store (distributed mode).",
                blobs.get("cache_misses", 0),
            )
            yield counter(
                "volfs_blob_fetched_bytes",
                "Bytes fetched from the object store (distributed mode).",
                blobs.get("bytes_fetched", 0),
            )

        commits = CounterMetricFamily(
            "volfs_commits",
            "Commits, by result (published, empty: nothing to publish, failed).",
            labels=[*names, "result"],
        )
        for result, count in dict(st.commits).items():
            commits.add_metric([*values, result], count)
        yield commits
        yield counter("volfs_commit_files", "Files published by commits.", st.commit_files)
        yield counter("volfs_commit_bytes", "Written bytes published by commits.", st.commit_bytes)
        yield counter(
            "volfs_commit_overwrites",
            "Paths whose changes by others a commit overwrote (last writer wins).",
            st.commit_overwrites,
        )
        if st.last_commit_time is not None:
            yield gauge(
                "volfs_last_commit_timestamp_seconds",
                "When the last commit ended.",
                st.last_commit_time,
            )
            yield gauge(
                "volfs_last_commit_duration_seconds",
                "How long the last commit took.",
                st.last_commit_seconds or 0.0,
            )
            yield gauge(
                "volfs_last_commit_success",
                "1 if the last commit succeeded (published or had nothing to), else 0.",
                0 if st.last_commit_result == "failed" else 1,
            )
        if st.last_published_time is not None:
            yield gauge(
                "volfs_last_published_timestamp_seconds",
                "When a commit last published a snapshot.",
                st.last_published_time,
            )

        reloads = CounterMetricFamily(
            "volfs_reloads",
            "Reloads, by result (ok, refused: open files, failed).",
            labels=[*names, "result"],
        )
        for result, count in dict(st.reloads).items():
            reloads.add_metric([*values, result], count)
        yield reloads
        if st.last_reload_ok_time is not None:
            yield gauge(
                "volfs_last_reload_timestamp_seconds",
                "When the mount last reloaded.",
                st.last_reload_ok_time,
            )

        for name, value in self.gauges().items():
            yield gauge(f"volfs_{name}", _GAUGE_DOCS.get(name, name), value)


_GAUGE_DOCS = {
    "overlay_dirty_files": "Files changed since the last commit.",
    "overlay_dirty_bytes": "Bytes of the chunks those files changed (what a commit hashes).",
    "open_handles": "Files open on the mount.",
}


class MetricsServer:
    def __init__(self, server: Any, address: Address) -> None:
        self._server = server
        self.address = address

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(collector: MountCollector, address: Address, *, search: int = 0) -> MetricsServer:
    """Serves ``/metrics`` at ``address`` (or, if its port is taken, one of the ``search``
    ports after it); MountError if it cannot listen."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    ProcessCollector(namespace="volfs", registry=registry)
    last_error: OSError | None = None
    for port in range(address.port, address.port + search + 1):
        try:
            server, _thread = start_http_server(port, address.host, registry=registry)
        except OSError as exc:
            last_error = exc
            if exc.errno != errno.EADDRINUSE or address.port == 0:
                break
            continue
        actual = Address(address.host, server.server_port)
        if actual.port != address.port and address.port != 0:
            log.warning("metrics port %d is taken; serving on %s", address.port, actual)
        return MetricsServer(server, actual)
    reason = last_error.strerror if last_error is not None else "no port"
    raise MountError(f"cannot serve metrics on {address}: {reason}")
