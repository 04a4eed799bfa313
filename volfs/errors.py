"""The one exception hierarchy of volfs.

Every error a user can meet is one of these; each knows the errno a FUSE handler answers
with and the exit code the CLI ends with. Where Modal users catch a builtin
(``FileNotFoundError``, ``FileExistsError``, ``RuntimeError``), our class also derives
from it, so ``except FileNotFoundError`` works on volfs as it does on modal::

    VolfsError
    ├── NotFoundError              volume or snapshot missing            (ENOENT, 3)
    │   └── PathNotFoundError      path missing in a volume  (+FileNotFoundError)
    ├── AlreadyExistsError         volume name taken                     (EEXIST, 4)
    │   └── PathExistsError        upload over an existing path (+FileExistsError)
    ├── InvalidError               bad name, path, argument              (EINVAL, 2)
    │   ├── IsADirectoryPathError  file operation on a directory (+IsADirectoryError)
    │   └── NotADirectoryPathError directory operation on a file (+NotADirectoryError)
    ├── ConflictError              commit/reload refused      (+RuntimeError, 5)
    │   └── OpenFilesError         files open / cwd inside the mount
    ├── ReadOnlyError              write to a read-only mount or snapshot (EROFS, 6)
    ├── PermissionDeniedError      control-socket peer not allowed        (EACCES, 7)
    ├── CorruptionError            stored bytes fail their digest        (EIO, 8)
    ├── StoreFullError             the store's disk is full              (ENOSPC, 9)
    ├── MountError                 mount, daemon or control-socket failure (EIO, 10)
    └── BackendUnavailableError    PostgreSQL or the object store unreachable (EIO, 11)
"""

from __future__ import annotations

import errno


class VolfsError(Exception):
    errno: int = errno.EIO
    exit_code: int = 1
    #: The message in a command line's words, where they differ from the API's
    #: (``--force``, not ``force=True``): what the CLI prints instead.
    cli_message: str | None = None

    def for_cli(self, message: str) -> VolfsError:
        """This error, saying ``message`` to a CLI user."""
        self.cli_message = message
        return self


class NotFoundError(VolfsError):
    errno = errno.ENOENT
    exit_code = 3


# typeshed types OSError.errno as ``int | None``; these always carry theirs (an int).
class PathNotFoundError(NotFoundError, FileNotFoundError):  # type: ignore[misc]
    pass


class AlreadyExistsError(VolfsError):
    errno = errno.EEXIST
    exit_code = 4


class PathExistsError(AlreadyExistsError, FileExistsError):  # type: ignore[misc]
    pass


class InvalidError(VolfsError):
    errno = errno.EINVAL
    exit_code = 2


class IsADirectoryPathError(InvalidError, IsADirectoryError):
    errno = errno.EISDIR


class NotADirectoryPathError(InvalidError, NotADirectoryError):
    errno = errno.ENOTDIR


class ConflictError(VolfsError, RuntimeError):
    errno = errno.EBUSY
    exit_code = 5


class OpenFilesError(ConflictError):
    pass


class ReadOnlyError(VolfsError):
    errno = errno.EROFS
    exit_code = 6


class PermissionDeniedError(VolfsError, PermissionError):
    errno = errno.EACCES
    exit_code = 7


class CorruptionError(VolfsError):
    errno = errno.EIO
    exit_code = 8


class StoreFullError(VolfsError):
    errno = errno.ENOSPC
    exit_code = 9


class MountError(VolfsError):
    errno = errno.EIO
    exit_code = 10


class BackendUnavailableError(VolfsError):
    """Distributed mode: PostgreSQL or the object store cannot be reached (or refused a request)."""

    errno = errno.EIO
    exit_code = 11


def from_os_error(exc: OSError, what: str) -> VolfsError:
    """Turns an OSError from the local disk into the matching volfs error."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return StoreFullError(f"no space left on the store's disk while {what}")
    return VolfsError(f"{what}: {exc.strerror or exc}")
