"""The one exception hierarchy of volfs, shaped like ``modal.exception``.

Every error a user can meet is one of these; each knows the errno a FUSE handler answers
with and the exit code the CLI ends with. The classes modal-client defines carry modal's
names and parents (``volfs.exception`` re-exports them under modal's module name, so
``except modal.exception.NotFoundError`` ports by changing the import); volfs's own,
finer classes derive from them. Where Modal users catch a builtin (``FileNotFoundError``,
``FileExistsError``, ``RuntimeError``), our class also derives from it::

    Error (= VolfsError)                                              (EIO, 1)
    ├── NotFoundError              volume or snapshot missing            (ENOENT, 3)
    │   └── PathNotFoundError      path missing in a volume  (+FileNotFoundError)
    ├── AlreadyExistsError         volume name taken                     (EEXIST, 4)
    │   └── PathExistsError        upload over an existing path (+FileExistsError)
    ├── InvalidError               bad name, path, argument              (EINVAL, 2)
    │   ├── IsADirectoryPathError  file operation on a directory (+IsADirectoryError)
    │   ├── NotADirectoryPathError directory operation on a file (+NotADirectoryError)
    │   ├── ConflictError          commit/reload refused      (+RuntimeError, 5)
    │   │   └── OpenFilesError     files open / cwd inside the mount
    │   └── ReadOnlyError          write to a read-only handle, mount or snapshot (EROFS, 6)
    ├── PermissionDeniedError      control-socket peer not allowed (+PermissionError, EACCES, 7)
    ├── DataLossError
    │   └── CorruptionError        stored bytes fail their digest        (EIO, 8)
    ├── ResourceExhaustedError
    │   └── StoreFullError         the store's disk is full              (ENOSPC, 9)
    ├── ExecutionError
    │   └── MountError             mount, daemon or control-socket failure (EIO, 10)
    ├── ServiceError
    │   └── BackendUnavailableError PostgreSQL or the object store unreachable (EIO, 11)
    ├── PidCollisionError          this pid is another container's in LMDB's reader table (10)
    └── … the rest of modal's classes (TimeoutError, AuthError, …), which volfs never raises
        but which ported code may name in an ``except``.

``ConflictError`` under ``InvalidError`` and ``ReadOnlyError`` as an ``InvalidError`` are
modal's choices (modal raises ``InvalidError("Read-only Volume can not be written to")``);
the exit codes stay volfs's, by class, as the README documents them.
"""

from __future__ import annotations

import errno


class Error(Exception):
    """Base class of every volfs error (modal: ``modal.Error``)."""

    errno: int = errno.EIO
    exit_code: int = 1
    #: The message in a command line's words, where they differ from the API's
    #: (``--force``, not ``force=True``): what the CLI prints instead.
    cli_message: str | None = None

    def for_cli(self, message: str) -> VolfsError:
        """This error, saying ``message`` to a CLI user."""
        self.cli_message = message
        return self


#: volfs's historical name of the base class: the very same class.
VolfsError = Error


# -- modal's classes, with modal's parents; volfs raises the ones with an errno of its own --
class NotFoundError(Error):
    """A volume or snapshot does not exist."""

    errno = errno.ENOENT
    exit_code = 3


class AlreadyExistsError(Error):
    """A volume of that name exists already."""

    errno = errno.EEXIST
    exit_code = 4


class InvalidError(Error):
    """Something invalid was asked: a bad name, path or argument."""

    errno = errno.EINVAL
    exit_code = 2


class ConflictError(InvalidError, RuntimeError):
    """The request conflicts with the current state (a commit or reload refused)."""

    errno = errno.EBUSY
    exit_code = 5


class PermissionDeniedError(Error, PermissionError):
    errno = errno.EACCES
    exit_code = 7


class DataLossError(Error):
    """Data is lost or corrupted."""


class ResourceExhaustedError(Error):
    """A resource (for volfs: the store's disk) is exhausted."""


class ServiceError(Error):
    """The service behind the store could not be talked to."""


class ExecutionError(Error):
    """Something unexpected happened at run time."""


class AuthError(Error):
    pass


class InternalError(Error):
    pass


class UnimplementedError(Error):
    pass


class RemoteError(Error):
    pass


class WorkspaceManagementError(Error):
    pass


class TimeoutError(Error):
    """Base class of modal's timeouts."""


class SandboxTimeoutError(TimeoutError):
    pass


class ExecTimeoutError(TimeoutError):
    pass


class FunctionTimeoutError(TimeoutError):
    pass


class MountUploadTimeoutError(TimeoutError):
    pass


class VolumeUploadTimeoutError(TimeoutError):
    pass


class InteractiveTimeoutError(TimeoutError):
    pass


class OutputExpiredError(TimeoutError):
    pass


class SandboxTerminatedError(Error):
    pass


class LogsFetchError(Error):
    pass


class ConnectionError(Error):
    pass


class VersionError(Error):
    pass


class DeserializationError(Error):
    pass


class SerializationError(Error):
    pass


class RequestSizeError(Error):
    pass


class InternalFailure(Error):
    pass


class ClientClosed(Error):
    pass


class FilesystemExecutionError(Error):
    pass


class DeprecationError(UserWarning):
    """A warning category in modal (despite its name)."""


class ServerWarning(UserWarning):
    pass


class AsyncUsageWarning(UserWarning):
    pass


# -- volfs's own, finer classes -------------------------------------------------------------
# typeshed types OSError.errno as ``int | None``; these always carry theirs (an int).
class PathNotFoundError(NotFoundError, FileNotFoundError):  # type: ignore[misc]
    pass


class PathExistsError(AlreadyExistsError, FileExistsError):  # type: ignore[misc]
    pass


class IsADirectoryPathError(InvalidError, IsADirectoryError):
    errno = errno.EISDIR


class NotADirectoryPathError(InvalidError, NotADirectoryError):
    errno = errno.ENOTDIR


class OpenFilesError(ConflictError):
    pass


class ReadOnlyError(InvalidError):
    """A write through a read-only handle, mount or snapshot (modal: InvalidError)."""

    errno = errno.EROFS
    exit_code = 6


#: modal's message for a write through a read-only handle, word for word.
READ_ONLY_MESSAGE = "Read-only Volume can not be written to"


class CorruptionError(DataLossError):
    errno = errno.EIO
    exit_code = 8


class StoreFullError(ResourceExhaustedError):
    errno = errno.ENOSPC
    exit_code = 9


class MountError(ExecutionError):
    errno = errno.EIO
    exit_code = 10


class BackendUnavailableError(ServiceError):
    """Distributed mode: PostgreSQL or the object store cannot be reached (or refused a request)."""

    errno = errno.EIO
    exit_code = 11


def from_os_error(exc: OSError, what: str) -> Error:
    """Turns an OSError from the local disk into the matching volfs error."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return StoreFullError(f"no space left on the store's disk while {what}")
    return Error(f"{what}: {exc.strerror or exc}")


class PidCollisionError(Error):
    """This process's pid is taken, in LMDB's reader table, by a process of another PID
    namespace (another container) that has the store open.

    LMDB marks each process that reads an environment alive with a POSIX lock on the byte
    at offset <pid> of its lock file; two processes with one pid number in different
    namespaces collide there, and the newcomer's first transaction fails (EAGAIN). The
    same program with another pid succeeds: the CLI starts itself again, which gives it
    one (:func:`volfs.cli._common.run`); the Python API raises this.
    """

    exit_code = 10
