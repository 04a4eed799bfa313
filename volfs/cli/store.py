"""``volfs store …``: configure distributed mode, and show a store's backends.

Owns the :data:`store_group` (``store init``, ``store info``). ``store init`` records
PostgreSQL + bucket in the store (:mod:`volfs.remote`), after checking that both answer;
from then on every other command works the same, on the shared volumes. The package's
``__init__`` registers the group on the root group.

Must not: hold behaviour of its own (checking and recording the configuration is
:mod:`volfs.remote`'s); turn errors into exit codes (``_common.VolfsGroup`` does).
"""

from __future__ import annotations

import json
from typing import Any

import click

from volfs import remote
from volfs.cli._common import human_size, json_option, open_store, table
from volfs.errors import InvalidError
from volfs.store import _LOCK, _STORES, Store


@click.group("store")
def store_group() -> None:
    """Configure where a store keeps its truth (embedded, or PostgreSQL + S3)."""


@store_group.command("init")
@click.option(
    "--meta",
    required=True,
    metavar="URL",
    help="PostgreSQL holding volumes, snapshots and heads: postgresql://user@host:port/db",
)
@click.option(
    "--blobs",
    required=True,
    metavar="URL",
    help="The bucket and prefix holding blobs and trees: s3://bucket/prefix",
)
@click.option(
    "--endpoint",
    metavar="URL",
    help="S3 endpoint (default: VOLFS_S3_ENDPOINT, then boto3's, e.g. AWS_ENDPOINT_URL).",
)
@click.option(
    "--region", metavar="NAME", help="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION)."
)
@click.option(
    "--cache-size",
    default="8G",
    show_default=True,
    metavar="SIZE",
    help="Bound of this machine's blob cache (e.g. 512M, 10G).",
)
@click.option("--force", is_flag=True, help="Replace an existing distributed configuration.")
@click.pass_context
def store_init(
    ctx: click.Context,
    meta: str,
    blobs: str,
    endpoint: str | None,
    region: str | None,
    cache_size: str,
    force: bool,
) -> None:
    """Make this store a machine of a distributed store: PostgreSQL + S3, local cache."""
    config = remote.RemoteConfig(
        remote.check_meta_url(meta), blobs, endpoint, region, remote.parse_size(cache_size)
    )
    remote.parse_blobs_url(blobs)
    store = open_store(ctx)
    existing = remote.load(store.root)
    if existing is not None and not force and (existing.meta, existing.blobs) != (meta, blobs):
        raise InvalidError(
            f"{store.root} is already configured for {existing.blobs}; use --force to switch it"
        )
    if existing is None:
        local = store.catalog.list_volumes()
        if local:
            raise InvalidError(
                f"{store.root} holds {len(local)} embedded volume(s), which distributed "
                "mode would hide; use another --store for distributed mode"
            )
    # Check both engines answer before recording anything.
    catalog, blobs_store = remote.open_backends(store.root, config)
    blobs_store.bucket.check()
    catalog.check()
    remote.save(store.root, config)
    with _LOCK:  # this process's next Store.open sees the new backends
        _STORES.pop(str(store.root.absolute()), None)
    click.echo(
        f"store {store.root}: metadata in {remote_redact(meta)}, blobs in "
        f"{blobs_store.bucket.describe()}, cache {human_size(config.cache_size)}",
        err=True,
    )


def remote_redact(url: str) -> str:
    from volfs.catalog.postgres import redact

    return redact(url)


@store_group.command("info")
@json_option
@click.pass_context
def store_info(ctx: click.Context, as_json: bool) -> None:
    """Where this store keeps volumes and blobs, and its cache."""
    store: Store = open_store(ctx)
    config = remote.load(store.root)
    info: dict[str, Any] = {
        "store": str(store.root),
        "mode": "embedded" if config is None else "distributed",
    }
    if config is not None:
        info.update(
            {
                "meta": remote_redact(config.meta),
                "blobs": config.blobs,
                "endpoint": config.effective_endpoint(),
                "region": config.effective_region(),
                "cache_size": config.cache_size,
                "cache_used": store.blobs.cached_bytes(),
            }
        )
    info["volumes"] = len(store.catalog.list_volumes())
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    rows = [[k, human_size(v) if k.startswith("cache_") else str(v)] for k, v in info.items()]
    table(["key", "value"], rows)


__all__ = ["store_group"]
