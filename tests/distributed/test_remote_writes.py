"""The distributed data path's upload side: what a PUT costs the client, and which blobs a
write through a mount sends before its commit (``VOLFS_S3_TRACE``: one line per request).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from cluster import Cluster

from volfs.blobs import digest_of
from volfs.store import Store

pytestmark = [pytest.mark.timeout(120)]


def test_a_blob_upload_sends_no_payload_hash(cluster: Cluster) -> None:
    """The payload is not SHA-256 hashed for the signature (botocore does so over plain
    http unless told not to): the blob's own digest, checked on every fetch, guards it."""
    bucket = Store.open(cluster.machines[0]).blobs.bucket
    assert bucket is not None
    sent: list[str] = []

    def note(request: Any, **_: Any) -> None:
        sent.append(request.headers["X-Amz-Content-SHA256"].decode())

    bucket.client.meta.events.register("before-send.s3.PutObject", note)  # type: ignore[attr-defined]
    data = os.urandom(1 << 20)
    digest = digest_of(data)
    bucket.put("blobs", digest, data)
    assert sent == ["UNSIGNED-PAYLOAD"]
    assert bucket.get("blobs", digest) == data
