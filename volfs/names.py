"""Validation of volume names and in-volume paths. Pure: no I/O.

A volume path is what users write (``"a/b.txt"``, ``"/a/b.txt"``, ``"."``); inside volfs it
is a tuple of components (``("a", "b.txt")``), the root being ``()``. Paths are always
relative to the volume root; a leading ``/`` is accepted and means the same thing, as in
``modal volume``.
"""

from __future__ import annotations

import re

from volfs.errors import InvalidError

#: modal's rule for object names (``modal._utils.name_utils.is_valid_object_name``): at
#: most 64 characters from A-Z a-z 0-9 - _ . and not an App id.
OBJECT_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
APP_ID_RE = re.compile(r"ap-[A-Za-z0-9]{22}")
#: The same characters, 63 at most, for environments (volfs's own rule).
VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,63}")
#: The catalog names of ephemeral volumes: outside what OBJECT_NAME_RE allows (a leading
#: ``~``), so that no named volume can take or look one up; they are nameless to users.
#: The rest says whose it is (:mod:`volfs.api.ephemeral`).
EPHEMERAL_NAME_RE = re.compile(
    r"~ephemeral-(?P<token>[0-9a-f]{12})-(?P<pid>[0-9]{1,10})-(?P<start>[0-9]{1,20})-[0-9a-f]{16}"
)
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096

PathParts = tuple[str, ...]


def _printable(name: object) -> str:
    text = str(name)
    return text if text.isprintable() else repr(text)[1:-1]  # a newline, escaped


def check_object_name(name: str, object_type: str = "Volume") -> str:
    """modal's name rule and message (on one line, as every volfs error: modal puts a blank
    line after the first sentence); ``.`` and ``..`` are also refused (they read as paths)."""
    if (
        not isinstance(name, str)
        or not OBJECT_NAME_RE.fullmatch(name)
        or APP_ID_RE.fullmatch(name)
        or name in (".", "..")
    ):
        raise InvalidError(
            f"Invalid {object_type} name: '{_printable(name)}'."
            " Names may contain only alphanumeric characters, dashes, periods, and underscores,"
            " must be shorter than 64 characters, and cannot conflict with App ID strings."
        )
    return name


def is_ephemeral_name(name: str) -> bool:
    return isinstance(name, str) and EPHEMERAL_NAME_RE.fullmatch(name) is not None


def check_volume_name(name: str) -> str:
    """A catalog name: a user's (:func:`check_object_name`) or an ephemeral volume's."""
    if is_ephemeral_name(name):
        return name
    return check_object_name(name, "Volume")


def check_environment_name(name: str) -> str:
    if not isinstance(name, str) or not VOLUME_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidError(
            f"invalid environment name {name!r}: use 1-63 characters from A-Z a-z 0-9 . _ -"
        )
    return name


def check_component(name: str) -> str:
    if not name or name in (".", ".."):
        raise InvalidError(f"invalid file name {name!r}")
    if "/" in name or "\0" in name:
        raise InvalidError(f"invalid file name {name!r}: contains '/' or NUL")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
        raise InvalidError(
            f"file name too long ({MAX_COMPONENT_BYTES} bytes at most): {name[:40]!r}…"
        )
    return name


def split_path(path: str, *, allow_root: bool = True) -> PathParts:
    """``"/a//b/"`` -> ``("a", "b")``; refuses ``..``, NUL and over-long paths."""
    if not isinstance(path, str):
        raise InvalidError(f"a volume path must be a string, not {type(path).__name__}")
    if "\0" in path:
        raise InvalidError(f"invalid path {path!r}: contains NUL")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise InvalidError(f"path too long ({MAX_PATH_BYTES} bytes at most)")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    for part in parts:
        if part == "..":
            raise InvalidError(f"invalid path {path!r}: '..' is not allowed")
        check_component(part)
    if not parts and not allow_root:
        raise InvalidError(f"invalid path {path!r}: names the volume root")
    return parts


def join_path(parts: PathParts) -> str:
    return "/".join(parts)
