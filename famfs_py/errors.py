"""The one error model: `FamfsError` and its kinds.

Every error a user can act on is a `FamfsError(message, errno=None)`: one line, never a
traceback. Its kind (the subclass) says what the process exits with (`exit_code`, a property
of the class) and which errno it carries unless told otherwise (`default_errno`). Library
messages speak of the library; the command line adds its flags. The CLI maps an error to the
process exit in one place (`famfs_py.cli.run.run_command`).
"""

from __future__ import annotations

from errno import EINVAL, EIO

TYPE_CHECKING = False  # not typing's: every command imports this module (mypy reads it as true)
if TYPE_CHECKING:
    from typing import ClassVar

EXIT_FAILURE = 1  # the operation failed
EXIT_USAGE = 2  # the command line asks for something that cannot be done as asked


class FamfsError(Exception):
    """An error a user can act on: printed as one line, never as a traceback."""

    exit_code: ClassVar[int] = EXIT_FAILURE
    default_errno: ClassVar[int | None] = None

    def __init__(self, message: str, errno: int | None = None, *, needs: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = self.default_errno if errno is None else errno
        self.needs = needs  # the library option that would let this through (the CLI: a flag)

    def __str__(self) -> str:
        return self.message

    @staticmethod
    def relayed(message: str, exit_code: int) -> FamfsError:
        """The error another process reported with its exit code (a daemon that could not
        mount, over the readiness pipe), as the kind that exits with that code."""
        for kind in (UsageError, FamfsError):
            if kind.exit_code == exit_code:
                return kind(message)
        return FamfsError(message)


class UsageError(FamfsError):
    """The command line (or a configuration) asks for something that cannot be done as asked."""

    exit_code = EXIT_USAGE


class FsError(FamfsError):
    """A filesystem operation failed; `errno` is what an application would see."""

    default_errno = EIO


class NamespaceError(FsError):
    """A path cannot be added to the namespace (its reason is the message)."""

    default_errno = EINVAL


class ProtocolError(FamfsError):
    """A request or reply that does not follow the control protocol."""

    default_errno = EINVAL
