"""The control socket: how ``volfs commit/reload/status/unmount`` talk to a mount's daemon.

Protocol (version 1): a Unix stream socket at ``<store>/run/<mount-id>.sock``, mode 0600.
The client sends **one** request line and reads **one** response line; both are UTF-8
JSON objects of at most 64 KiB ending in ``\\n``::

    -> {"v": 1, "op": "commit", "if_unchanged": false}
    <- {"ok": true, "result": {"snapshot": "sn-…", "trees_written": 3, …}}
    <- {"ok": false, "error": "there are open files preventing …", "type": "OpenFilesError",
        "exit_code": 5}

Operations: ``ping``, ``status``, ``commit`` (``if_unchanged``), ``reload``, ``unmount``
(``discard``, ``force``). The server reads the peer's credentials (SO_PEERCRED) and
serves only root and the mount's owner; a request that is malformed, too large or does
not arrive within ``REQUEST_TIMEOUT`` seconds gets an error and the connection closes.

The client finds a mount's socket from its path alone — the mountpoint or any path inside
it: the mount root answers the extended attribute ``user.volfs.control`` with
``{"socket": …, "mount_id": …, "store": …, …}``, ``store`` being the identity of the store
the mount serves (:func:`volfs.remote.store_identity`). Listing every volfs mount reads
``/proc/self/mountinfo`` (type ``fuse.volfs``); :func:`mounts` keeps one store's.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, NamedTuple

from volfs import errors
from volfs.errors import MountError, PermissionDeniedError, VolfsError

if TYPE_CHECKING:  # the server's; a client (``volfs commit``) starts without trio
    from pathlib import Path

    import trio

PROTOCOL_VERSION = 1
MAX_MESSAGE = 64 * 1024
REQUEST_TIMEOUT = 10.0
XATTR_CONTROL = "user.volfs.control"
FSTYPE = "fuse.volfs"

Handler = Callable[[dict[str, Any], "Peer"], Awaitable[dict[str, Any]]]


# The records here are NamedTuples, not frozen dataclasses: building one of those costs a
# client a few ms of its start-up, and `volfs commit` is mostly start-up (test_cli_start).
class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket | trio.socket.SocketType) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return Peer(*struct.unpack("3i", raw))


# -- server ----------------------------------------------------------------------------------
async def serve(
    path: Path,
    owner_uid: int,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[None] | None = None,
) -> None:
    """Listens on ``path`` until cancelled; each connection gets one request."""
    import trio

    try:
        path.unlink()
    except FileNotFoundError:
        pass
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await listener.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    listener.listen(128)
    if task_status is not None:
        task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_serve_one, conn, owner_uid, handler)
    finally:
        listener.close()
        try:
            path.unlink()
        except FileNotFoundError:
            pass


async def _serve_one(conn: trio.socket.SocketType, owner_uid: int, handler: Handler) -> None:
    import trio

    with conn:
        try:
            peer = peer_credentials(conn)
            if peer.uid not in (0, owner_uid):
                raise PermissionDeniedError(
                    f"permission denied: uid {peer.uid} is neither root nor the mount's owner"
                )
            with trio.fail_after(REQUEST_TIMEOUT):
                request = await _read_request(conn)
            reply = {"ok": True, "result": await handler(request, peer)}
        except trio.TooSlowError:
            reply = _error_reply(VolfsError("control request timed out"))
        except VolfsError as exc:
            reply = _error_reply(exc)
        except Exception as exc:
            reply = _error_reply(VolfsError(f"internal error: {exc}"))
        try:
            await conn.send((json.dumps(reply) + "\n").encode())
        except OSError:
            pass  # the client went away; nothing to tell


def _error_reply(exc: VolfsError) -> dict[str, Any]:
    return {"ok": False, "error": str(exc), "type": type(exc).__name__, "exit_code": exc.exit_code}


async def _read_request(conn: trio.socket.SocketType) -> dict[str, Any]:
    data = b""
    while b"\n" not in data:
        chunk = await conn.recv(MAX_MESSAGE + 1 - len(data))
        if not chunk:
            raise errors.InvalidError(
                "malformed control request: connection closed before a full line"
            )
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise errors.InvalidError(f"control request too large (over {MAX_MESSAGE} bytes)")
    line = data.split(b"\n", 1)[0]
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # [[[[… nests too deep
        raise errors.InvalidError("malformed control request: not a JSON line") from None
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        raise errors.InvalidError("malformed control request: expected an object with an 'op'")
    version = request.get("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:  # true == 1 in Python
        raise errors.InvalidError(f"unsupported control protocol version {request.get('v')!r}")
    return request


# -- client ------------------------------------------------------------------------------------
#: How many requests this process sent to daemons (an interrupted command says so).
requests_sent = 0


def call(socket_path: str, op: str, timeout: float | None = 600.0, **args: Any) -> dict[str, Any]:
    """Sends one request; returns its result or raises the daemon's error, typed."""
    global requests_sent
    request = {"v": PROTOCOL_VERSION, "op": op, **args}
    if op != "status":  # asking is no request to finish
        requests_sent += 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        deadline = time.monotonic() + (timeout if timeout is not None else 600.0)
        while True:
            try:
                sock.connect(socket_path)
                break
            except PermissionError:
                raise PermissionDeniedError(
                    "permission denied: this mount belongs to another user"
                ) from None
            except BlockingIOError:
                # The listen backlog is full (a burst of clients): a Unix socket refuses at once
                # instead of waiting, so wait here, as a blocking connect would.
                if time.monotonic() > deadline:
                    raise MountError(
                        f"cannot reach the mount's daemon at {socket_path}: "
                        "it accepts no connection"
                    ) from None
                time.sleep(0.005)
            except OSError as exc:
                raise MountError(
                    f"cannot reach the mount's daemon at {socket_path}: {exc.strerror}"
                ) from None
        sock.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    if not data:
        raise MountError("the mount's daemon closed the connection without answering")
    reply = json.loads(data)
    if reply.get("ok"):
        return reply["result"]
    cls = getattr(errors, reply.get("type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, VolfsError)):
        cls = VolfsError
    raise cls(reply.get("error", "unknown error"))


class MountInfo(NamedTuple):
    path: str
    socket: str
    mount_id: str
    volume_id: str
    volume_name: str
    environment: str
    pid: int
    #: The identity of the mount's store (:func:`volfs.remote.store_identity`); None from a
    #: daemon older than that field.
    store: str | None = None


class Unreachable(NamedTuple):
    """A volfs mount whose daemon does not answer (hung, or gone): only its path is known."""

    path: str
    error: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def volfs_mountpoints() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == FSTYPE:
                points.append(_unescape(left.split(" ")[4]))
    return points


def device_of(mountpoint: str) -> str | None:
    """``major:minor`` of the volfs mount at ``mountpoint``, read without touching it."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split(" ")
            if right.split(" ", 1)[0] == FSTYPE and _unescape(fields[4]) == mountpoint:
                return fields[2]
    return None


ANSWER_TIMEOUT = 5.0


def _getxattr_within(path: str, name: str, timeout: float) -> bytes:
    """``os.getxattr``, given up after ``timeout``: a hung daemon blocks its callers in the
    kernel for good, and one must not hang ``volfs status`` for every other mount."""
    result: list[bytes | OSError] = []

    def ask() -> None:
        try:
            result.append(os.getxattr(path, name))
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=ask, daemon=True, name=f"getxattr {path}")
    thread.start()
    thread.join(timeout)
    if not result:
        raise OSError(errno.ETIMEDOUT, f"no answer within {timeout:.0f} s")
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def _realpath_within(path: str, timeout: float) -> str:
    """``os.path.realpath``, given up after ``timeout`` (it stats every component: one in a
    hung mount never answers)."""
    result: list[str] = []
    thread = threading.Thread(
        target=lambda: result.append(os.path.realpath(path)), daemon=True, name=f"realpath {path}"
    )
    thread.start()
    thread.join(timeout)
    if not result:
        raise MountError(f"{path} does not answer within {timeout:.0f} s; run `volfs status`")
    return result[0]


def _containing(path: str, points: list[str]) -> str | None:
    """The innermost of ``points`` that is ``path`` or one of its parent directories."""
    best = None
    for point in points:
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best)):
            best = point
    return best


def mount_of(path: str) -> str:
    """The mountpoint of the volfs mount holding ``path`` (its root or anything inside)."""
    points = volfs_mountpoints()
    real = os.path.abspath(path)
    if real not in points:
        # realpath stats every component, the mount's root too, which a hung daemon never
        # answers: only for paths that are not a mountpoint as written (a symlink, a path
        # inside the mount).
        real = _realpath_within(path, ANSWER_TIMEOUT)
    point = _containing(real, points)
    if point is None:
        raise errors.InvalidError(f"{path} is not in a volfs mount")
    return point


def mount_info(path: str) -> MountInfo:
    """The control details of the volfs mount holding ``path`` (its root or a path inside)."""
    return _info_at(mount_of(path))


def _info_at(real: str) -> MountInfo:
    try:
        raw = _getxattr_within(real, XATTR_CONTROL, ANSWER_TIMEOUT)
    except OSError as exc:
        raise MountError(
            f"the volfs mount at {real} does not answer ({exc.strerror}); "
            "its daemon may have died: run `volfs recover`"
        ) from None
    d = json.loads(raw)
    return MountInfo(
        real,
        d["socket"],
        d["mount_id"],
        d["volume_id"],
        d["volume_name"],
        d["environment"],
        d["pid"],
        d.get("store"),
    )


def mounts(store: str | None, recorded: Collection[str] = ()) -> list[MountInfo | Unreachable]:
    """The volfs mounts visible here that serve the store whose identity is ``store``
    (None: of every store), in mount order.

    Which store a mount serves is known from its answer; a mount that does not answer is
    listed (as :class:`Unreachable`) when ``store`` is None or its path is in ``recorded``,
    the paths the store's own mount records name (a hung daemon of this store must show in
    ``volfs status``; another store's must not).
    """
    out: list[MountInfo | Unreachable] = []
    for point in volfs_mountpoints():
        try:
            info = _info_at(point)
        except VolfsError as exc:
            if store is None or point in recorded:
                out.append(Unreachable(point, str(exc)))
            continue
        if store is None or info.store == store:
            out.append(info)
    return out


def all_mounts() -> list[MountInfo]:
    return [m for m in mounts(None) if isinstance(m, MountInfo)]


def call_mount(path: str, op: str, **args: Any) -> dict[str, Any]:
    return call(mount_info(path).socket, op, **args)


def commit(path: str, *, if_unchanged: bool = False) -> dict[str, Any]:
    return call_mount(path, "commit", if_unchanged=if_unchanged)


def reload(path: str, *, keep_open: bool | None = None) -> dict[str, Any]:
    """``keep_open``: reload with files open (None: as the mount was told at mount)."""
    return call_mount(path, "reload", pid=os.getpid(), **_keep_open(keep_open))


def _keep_open(keep_open: bool | None) -> dict[str, bool]:
    return {} if keep_open is None else {"keep_open": keep_open}


def _volume_mounts(volume_id: str) -> list[MountInfo]:
    return [m for m in all_mounts() if m.volume_id == volume_id]


def commit_volume(volume_id: str) -> list[dict[str, Any]]:
    """Commits every mount of this volume visible to the caller."""
    return [call(m.socket, "commit") for m in _volume_mounts(volume_id)]


def reload_volume(volume_id: str, *, keep_open: bool | None = None) -> list[dict[str, Any]]:
    """Reloads every mount of this volume visible to the caller."""
    return [
        call(m.socket, "reload", pid=os.getpid(), **_keep_open(keep_open))
        for m in _volume_mounts(volume_id)
    ]
