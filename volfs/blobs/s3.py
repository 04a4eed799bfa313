"""The S3 blob backend: immutable blobs in any S3-compatible bucket, a local cache in front.

Distributed mode (see ``volfs/remote.py``) keeps every blob, and every tree, in a bucket
under content-addressed keys::

    <prefix>/blobs/ab/cdef…     a blob, named by its xxh3-128 digest
    <prefix>/trees/ab/cdef…     a tree's canonical encoding (written by catalog/postgres.py)

Names are digests and an object is written once with the bytes its name promises, so no
conditional write is ever needed: two machines uploading the same blob write the same
bytes. Addressing is path-style; endpoint, region and credentials come from the options
or the usual ``AWS_*`` variables (boto3's own chain).

The local :class:`LocalBlobStore` of the store is the **cache**: a blob is fetched once,
verified against its digest on arrival (a mismatch is logged and raised as
:class:`CorruptionError`, never served), and then read at local speed. The cache is
bounded (``cache_size``): past it, the least recently used blobs are evicted. Evicting is
always safe: every blob a head names is in the bucket, and a blob not uploaded yet is
named by no head (its commit has not landed; its bytes are still in the mount's scratch).

Commit writes go through :class:`S3Batch`: like the local batch (the bytes land in the
cache first), then ``flush`` uploads what the bucket lacks, each digest once,
UPLOAD_THREADS at a time (each holding one blob, at most a chunk, in memory). A failure
to reach the bucket raises :class:`BackendUnavailableError` (one line) and changes no
head. Before that, a mount hands over each full chunk a sequential writer leaves behind
(:meth:`S3BlobStore.upload_ahead`): it is uploaded while the rest is written, at most
AHEAD_UPLOADS at a time, and the commit finds it in the bucket (or waits for it).

Concurrency: the boto3 client is thread-safe and created lazily per process (it must not
cross a fork). ``VOLFS_S3_TRACE=<file>`` appends one line per request to that file (the
tests count GETs with it); :attr:`Bucket.stats` counts them in-process.

:class:`Bucket` implements :class:`volfs.blobs.ObjectStore` (the composition root hands
the same one to the PostgreSQL catalog for the trees); :class:`S3BlobStore` implements
:class:`volfs.blobs.BlobStore` (``reads_are_local`` False, ``bucket`` its bucket).

Knows nothing of trees' meaning, volumes, PostgreSQL or FUSE.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from volfs.blobs import Digest, digest_of
from volfs.blobs.local import LocalBlobBatch, LocalBlobStore
from volfs.errors import (
    BackendUnavailableError,
    CorruptionError,
    InvalidError,
    PathNotFoundError,
    VolfsError,
    from_os_error,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

UPLOAD_THREADS = 16
#: Uploads ahead of a commit (:meth:`S3BlobStore.upload_ahead`) running or queued at once,
#: each holding at most one chunk in memory; past it a hint is declined (the commit uploads).
AHEAD_UPLOADS = 4
#: Blobs uploaded ahead that a commit has not named yet, remembered at most (oldest dropped:
#: the commit then uploads that one again).
AHEAD_REMEMBERED = 4096
MULTIPART_THRESHOLD = 16 * 1024 * 1024
MULTIPART_CHUNK = 8 * 1024 * 1024
TOUCH_INTERVAL = 60.0


class Bucket:
    """A bucket and a key prefix, spoken to through boto3; errors become one clear line."""

    def __init__(
        self, bucket: str, prefix: str, *, endpoint: str | None = None, region: str | None = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()
        self._trace = os.environ.get("VOLFS_S3_TRACE")
        #: Requests made by this process, by kind ("GET blobs", "PUT trees", "HEAD blobs", …).
        self.stats: Counter[str] = Counter()

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    @property
    def client(self) -> Any:
        if self._client is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    import boto3
                    from botocore.config import Config

                    # botocore logs "Found credentials in …" at INFO on every client: noise
                    # in a daemon's log.
                    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)

                    # No SHA-256 of each payload (botocore signs bodies over plain http):
                    # it cost a third of an upload's CPU and delayed each PUT's first byte
                    # (8 MiB PUTs ~105 -> ~140 MiB/s here). A blob's name is its xxh3-128,
                    # checked on every fetch: it covers what the bucket stores and returns,
                    # not only the transfer (and TLS, where used, guards that).
                    config = Config(
                        s3={"addressing_style": "path", "payload_signing_enabled": False},
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=3,
                        read_timeout=30,
                        max_pool_connections=128,
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                    )
                    self._client = boto3.session.Session().client(
                        "s3",
                        endpoint_url=self.endpoint,
                        region_name=self.region or None,
                        config=config,
                    )
                    self._client_pid = os.getpid()
        return self._client

    def key(self, kind: str, digest: str) -> str:
        return (
            f"{self.prefix}/{kind}/{digest[:2]}/{digest[2:]}"
            if self.prefix
            else f"{kind}/{digest[:2]}/{digest[2:]}"
        )

    def _note(self, op: str, key: str) -> None:
        parts = key[len(self.prefix) + 1 :].split("/", 1) if self.prefix else key.split("/", 1)
        kind = f"{op} {parts[0]}"
        self.stats[kind] += 1
        if self._trace:
            with open(self._trace, "a") as f:
                f.write(f"{os.getpid()} {op} {key}\n")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "?")
            raise BackendUnavailableError(
                f"object store {self.describe()}: {what} failed: {code} {error.get('Message', '')}".rstrip()
            ) from None
        except (BotoCoreError, OSError) as exc:
            raise BackendUnavailableError(
                f"cannot reach the object store {self.describe()} ({what}): {exc}"
            ) from None

    def get(self, kind: str, digest: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""
        from botocore.exceptions import ClientError

        key = self.key(kind, digest)
        self._note("GET", key)

        def fetch() -> bytes | None:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

        return self._call(f"reading {kind} {digest}", fetch)

    def head(self, kind: str, digest: str) -> int | None:
        """The object's size, or None if there is no such object."""
        from botocore.exceptions import ClientError

        key = self.key(kind, digest)
        self._note("HEAD", key)

        def fetch() -> int | None:
            try:
                return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise

        return self._call(f"checking {kind} {digest}", fetch)

    def put(self, kind: str, digest: str, data: bytes) -> None:
        key = self.key(kind, digest)
        self._note("PUT", key)
        self._call(
            f"writing {kind} {digest}",
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data),
        )

    def upload_file(self, kind: str, digest: str, path: str | os.PathLike[str]) -> None:
        """Uploads a local file; multipart (in parallel parts) past ``MULTIPART_THRESHOLD``."""
        from boto3.s3.transfer import TransferConfig

        key = self.key(kind, digest)
        if os.path.getsize(path) < MULTIPART_THRESHOLD:
            # One PUT: boto3's transfer manager costs threads and ms per call.
            with open(path, "rb") as f:
                data = f.read()
            self.put(kind, digest, data)
            return
        self._note("PUT", key)
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=4,
        )
        self._call(
            f"uploading {kind} {digest}",
            lambda: self.client.upload_file(os.fspath(path), self.bucket, key, Config=config),
        )

    def delete(self, kind: str, digests: Sequence[str]) -> None:
        """Deletes objects, 1000 per request (DeleteObjects); raises if any was refused."""
        for start in range(0, len(digests), 1000):
            keys = [{"Key": self.key(kind, d)} for d in digests[start : start + 1000]]
            self._note("DELETE", self.key(kind, "00"))

            def request(keys: list[dict[str, str]] = keys) -> dict[str, Any]:
                answer: dict[str, Any] = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )
                return answer

            answer = self._call(f"deleting {len(keys)} {kind}", request)
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise BackendUnavailableError(
                    f"object store {self.describe()}: deleting {len(errors)} of {len(keys)} {kind} failed: "
                    f"{first.get('Code', '?')} {first.get('Message', '')} ({first.get('Key')})".rstrip()
                )

    def list(self, kind: str) -> Iterator[tuple[Digest, int, float]]:
        """(digest, size, last-modified time) of every object of ``kind``."""
        prefix = f"{self.prefix}/{kind}/" if self.prefix else f"{kind}/"
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            self._note("LIST", prefix + "x")

            def request(kwargs: dict[str, Any] = kwargs) -> dict[str, Any]:
                answer: dict[str, Any] = self.client.list_objects_v2(**kwargs)
                return answer

            page = self._call(f"listing {kind}", request)
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(prefix) :]
                fan, _, tail = rest.partition("/")
                if len(fan) == 2 and tail:
                    yield Digest(fan + tail), int(obj["Size"]), obj["LastModified"].timestamp()
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def check(self) -> None:
        """Fails with one line if the bucket cannot be reached."""
        self._note("HEAD", self.key("bucket", "00"))
        self._call("checking the bucket", lambda: self.client.head_bucket(Bucket=self.bucket))


class S3BlobStore:
    """The :class:`BlobStore` of distributed mode: the bucket is the truth, ``cache`` a cache."""

    #: Capability (see the interface): a read may fetch from the bucket first.
    reads_are_local: bool = False

    def __init__(self, cache: LocalBlobStore, bucket: Bucket, cache_size: int) -> None:
        self.cache = cache
        self.bucket = bucket
        self.cache_size = cache_size
        self.root = cache.root
        self.tmp_dir = cache.tmp_dir
        self.stats = cache.stats
        # The cache's counters, for a mount's statistics (volfs/mount/stats.py).
        self.stats.update(
            {
                "cache_hits": 0,
                "cache_misses": 0,
                "bytes_fetched": 0,
                "uploads_ahead": 0,
                "uploads_ahead_declined": 0,
            }
        )
        #: Digests this process knows are in the bucket (uploaded, seen, or fetched).
        self._remote: set[Digest] = set()
        #: Uploads ahead of a commit now running, by digest: a commit waits for them.
        self._uploading: dict[Digest, Future[None]] = {}
        #: Blobs uploaded ahead and not named by a commit yet (values unused: an ordered set).
        self._sent_ahead: OrderedDict[Digest, None] = OrderedDict()
        #: Guards the uploads ahead (not ``_lock``: an eviction's scan holds that one, and
        #: :meth:`upload_ahead` is called on a mount's loop).
        self._ahead_lock = threading.Lock()
        self._ahead_pending = 0
        self._ahead_pool: ThreadPoolExecutor | None = None
        self._ahead_pid = 0
        self._cached_bytes: int | None = None
        self._touched: dict[Digest, float] = {}
        self._lock = threading.Lock()

    # -- the BlobStore interface -----------------------------------------------------------
    def path(self, digest: Digest) -> Path:
        return self.cache.path(digest)

    def has(self, digest: Digest) -> bool:
        if digest in self._remote:
            return True
        if self.bucket.head("blobs", digest) is not None:
            self._remote.add(digest)
            return True
        return False

    def size(self, digest: Digest) -> int:
        if self.cache.has(digest):
            return self.cache.size(digest)
        size = self.bucket.head("blobs", digest)
        if size is None:
            raise PathNotFoundError(f"blob {digest} is missing from {self.bucket.describe()}")
        self._remote.add(digest)
        return size

    def freshen(self, digest: Digest) -> bool:
        """True if the bucket holds the blob (the cached copy, if any, is marked used)."""
        if self.cache.has(digest):
            self._touch(digest)
        return self.has(digest)

    def put(self, data: bytes) -> Digest:
        digest = self.cache.put(data)
        self._note_cached(len(data))
        if digest not in self._remote:
            self.bucket.put("blobs", digest, data)
            self._remote.add(digest)
        return digest

    def put_file(self, path: str | os.PathLike[str], digest: Digest) -> None:
        self.cache.put_file(path, digest)
        self._ensure_uploaded({digest}, set())

    def get(self, digest: Digest) -> bytes:
        if self.cache.has(digest):
            try:
                data = self.cache.get(digest)
                self._touch(digest)
                self.stats["cache_hits"] += 1
                return data
            except CorruptionError:
                # A damaged cached copy is dropped and fetched again; the bucket is the truth.
                log.error("cached blob %s is damaged; fetching it again", digest)
                self.cache.delete(digest)
        return self._fetch(digest)

    def open_verified(self, digest: Digest) -> int:
        """An O_RDONLY fd of the cached blob, fetched and verified first if it is not cached."""
        if not self.cache.has(digest):
            self._fetch(digest)
        else:
            self._touch(digest)
            self.stats["cache_hits"] += 1
        try:
            return self.cache.open_verified(digest)
        except CorruptionError:
            log.error("cached blob %s is damaged; fetching it again", digest)
            self.cache.delete(digest)
            self._fetch(digest)
            return self.cache.open_verified(digest)

    def upload_ahead(self, fd: int, length: int) -> None:
        """Uploads the blob of ``fd``'s first ``length`` bytes in the background, unless
        :data:`AHEAD_UPLOADS` are under way (declined: the commit uploads it then).

        The bytes are read and hashed in the worker, and the bytes hashed are the bytes
        sent, so the upload is right for its name whatever the file holds by the commit;
        if it changed, the commit hashes other bytes and this blob is garbage for gc. The
        commit waits only for an upload of a blob it needs. Such an upload runs outside any
        lease, so gc may have deleted it by the commit: the commit checks it with a HEAD
        under its lease, as it checks any blob it did not upload itself (bucket_gc.py).
        """
        with self._ahead_lock:
            take = self._ahead_pending < AHEAD_UPLOADS
            if take:
                self._ahead_pending += 1
            else:
                self.stats["uploads_ahead_declined"] += 1
        if not take:
            os.close(fd)
            return
        try:
            self._ahead_executor().submit(self._upload_ahead, fd, length)
        except BaseException:
            os.close(fd)
            with self._ahead_lock:
                self._ahead_pending -= 1
            raise

    def _ahead_executor(self) -> ThreadPoolExecutor:
        with self._ahead_lock:
            if self._ahead_pool is None or self._ahead_pid != os.getpid():  # not across a fork
                self._ahead_pool = ThreadPoolExecutor(
                    AHEAD_UPLOADS, thread_name_prefix="volfs-upload-ahead"
                )
                self._ahead_pid = os.getpid()
            return self._ahead_pool

    def _upload_ahead(self, fd: int, length: int) -> None:
        done: Future[None] | None = None
        digest = Digest("")
        try:
            try:
                data = os.pread(fd, length, 0)
            finally:
                os.close(fd)
            if len(data) != length:
                return  # shrunk meanwhile: the commit will see what it is
            digest = digest_of(data)
            with self._ahead_lock:
                if digest in self._remote or digest in self._uploading or self.cache.has(digest):
                    return  # the commit checks that the bucket (still) has it
                done = self._uploading[digest] = Future()
            self.bucket.put("blobs", digest, data)
            with self._ahead_lock:
                self._sent_ahead[digest] = None
                if len(self._sent_ahead) > AHEAD_REMEMBERED:
                    self._sent_ahead.popitem(last=False)
                self.stats["uploads_ahead"] += 1
        except (VolfsError, OSError) as exc:  # the commit uploads it, or reports the failure
            log.debug("upload ahead of blob %s failed: %s", digest, exc)
        finally:
            with self._ahead_lock:
                self._ahead_pending -= 1
                if done is not None:
                    del self._uploading[digest]
            if done is not None:
                done.set_result(None)

    def _wait_for_ahead(self, digest: Digest) -> None:
        """Waits for an upload ahead of this blob that is under way (it may have failed)."""
        with self._ahead_lock:
            running = self._uploading.get(digest)
        if running is not None:
            running.result()

    def delete(self, digest: Digest) -> None:
        self.cache.delete(digest)
        self.bucket.delete("blobs", [digest])
        self._remote.discard(digest)

    def digests(self) -> Iterator[Digest]:
        for digest, _, _ in self.bucket.list("blobs"):
            yield digest

    def batch(self) -> S3Batch:
        return S3Batch(self)

    def drop_cached(self, digests: Iterable[Digest]) -> None:
        """Deletes this machine's copies (gc deleted the blobs from the bucket)."""
        for digest in digests:
            self.cache.delete(digest)

    def delete_stale(self, digests: Iterable[Digest], cutoff: float) -> list[tuple[Digest, int]]:
        """Not here (the interface): the bucket's blobs are collected by bucket_gc.py, from
        one listing and under the gc lock, not by their age in this machine's cache."""
        raise InvalidError(
            f"the blobs of {self.bucket.describe()} are collected by the "
            "distributed gc, not one by one"
        )

    def forget_remote(self) -> None:
        """Forgets which blobs are in the bucket (``volfs gc`` ran: some may be gone)."""
        self._remote.clear()

    # -- fetching and uploading ------------------------------------------------------------
    def _fetch(self, digest: Digest) -> bytes:
        data = self.bucket.get("blobs", digest)
        if data is None:
            log.error("blob %s is missing from %s", digest, self.bucket.describe())
            raise CorruptionError(f"blob {digest} is missing from the object store")
        if digest_of(data) != digest:
            log.error(
                "blob %s from %s fails its digest check (%d bytes); not served",
                digest,
                self.bucket.describe(),
                len(data),
            )
            raise CorruptionError(f"blob {digest} is damaged in the object store (digest mismatch)")
        self._remote.add(digest)
        self.stats["cache_misses"] += 1
        self.stats["bytes_fetched"] += len(data)
        self._store_cached(digest, data)
        self.cache.mark_verified(digest)  # just hashed: no need to read it back
        self._note_cached(len(data))
        return data

    def _store_cached(self, digest: Digest, data: bytes) -> None:
        """Puts a fetched blob in the cache: temp file, rename, **no fsync**.

        A cached copy needs no durability: the bucket has it, and a copy torn by a crash
        fails its digest on first read (each process verifies before first use), is
        dropped and fetched again (:meth:`get`, :meth:`open_verified`). Two fsyncs per
        fetched blob made cold reads of small files ~50 ms each.
        """
        final = self.cache.path(digest)
        try:
            final.parent.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache.tmp_dir, prefix="fetch-")
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, 0o444)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except OSError as exc:
            raise from_os_error(exc, f"caching blob {digest}") from exc

    def _ensure_uploaded(self, new: set[Digest], maybe: set[Digest]) -> None:
        """Uploads ``new`` (just written) and whichever of ``maybe`` the bucket lacks."""

        def one(item: tuple[Digest, bool]) -> None:
            digest, known_new = item
            self._wait_for_ahead(digest)
            with self._ahead_lock:
                if self._sent_ahead.pop(digest, 0) is None:
                    known_new = False  # uploaded ahead, outside a lease: check it's there
            if digest in self._remote:
                return
            if not known_new and self.bucket.head("blobs", digest) is not None:
                self._remote.add(digest)
                return
            self.bucket.upload_file("blobs", digest, self.cache.path(digest))
            self._remote.add(digest)

        items = [(d, True) for d in new if d not in self._remote]
        items += [(d, False) for d in maybe - new if d not in self._remote]
        if len(items) <= 2:
            for item in items:
                one(item)
            return
        with ThreadPoolExecutor(min(UPLOAD_THREADS, len(items))) as pool:
            for _ in pool.map(one, items):  # re-raises the first failure
                pass

    # -- the cache's bound -----------------------------------------------------------------
    def _touch(self, digest: Digest) -> None:
        """Marks a cached blob used (its atime/mtime: LRU order), at most once a minute."""
        now = time.time()
        if now - self._touched.get(digest, 0.0) < TOUCH_INTERVAL:
            return
        self._touched[digest] = now
        try:
            os.utime(self.cache.path(digest))
        except OSError:
            pass

    def cached_bytes(self) -> int:
        return self.cache.cached_bytes()

    def _note_cached(self, size: int) -> None:
        with self._lock:
            if self._cached_bytes is None:
                self._cached_bytes = self.cached_bytes()
            else:
                self._cached_bytes += size
            over = self._cached_bytes > self.cache_size
        if over:
            self.evict()

    def evict(self, target: float = 0.8) -> int:
        """Deletes least recently used cached blobs until the cache is under ``target`` of
        its bound; returns the bytes freed. Safe at any time (see the module docstring)."""
        with self._lock:
            entries = []
            for fan in os.scandir(self.cache.root):
                if len(fan.name) != 2 or not fan.is_dir():
                    continue
                for entry in os.scandir(fan.path):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    entries.append(
                        (max(st.st_atime, st.st_mtime), st.st_size, Digest(fan.name + entry.name))
                    )
            total = sum(size for _, size, _ in entries)
            freed = 0
            limit = self.cache_size * target
            for _, size, digest in sorted(entries):
                if total - freed <= limit:
                    break
                self.cache.delete(digest)
                self._touched.pop(digest, None)
                freed += size
            self._cached_bytes = total - freed
        if freed:
            log.info("blob cache: evicted %d bytes (bound %d)", freed, self.cache_size)
        return freed


class S3Batch:
    """A commit's blobs: written to the cache like a local batch, uploaded by :meth:`flush`.

    The uploads start only at ``flush``, after the cache's fsyncs: started as each blob
    was hashed, in parallel with the rest of the commit, they made commits slower on this
    2-core machine kind (measured in the daemon, one run side by side: 4 x 64 MiB 4.5 s ->
    5.6 s, 1,000 small files 11.8 s -> 14.6 s): on two busy cores there is no idle CPU to
    overlap, and the hashing thread probably waits for the GIL behind the upload threads.
    """

    def __init__(self, store: S3BlobStore) -> None:
        self.store = store
        self.local: LocalBlobBatch = store.cache.batch()
        self._new: set[Digest] = set()
        self._seen: set[Digest] = set()
        self._bytes = 0

    def add_range(
        self, fd: int, offset: int, length: int, *, adopt: str | None = None
    ) -> tuple[Digest, int]:
        before = self.local.new_blobs
        digest, size = self.local.add_range(fd, offset, length, adopt=adopt)
        if size:
            if self.local.new_blobs > before:
                self._new.add(digest)
                self._bytes += size
            else:
                self._seen.add(digest)
        return digest, size

    def flush(self) -> None:
        """Durable in the cache, then in the bucket; raises (changing no head) if it cannot."""
        self.local.flush()
        self.store._ensure_uploaded(self._new, self._seen)
        self.store._note_cached(self._bytes)  # after the upload: eviction may drop them now
        self._new.clear()
        self._seen.clear()
        self._bytes = 0

    def discard(self) -> None:
        self.local.discard()
