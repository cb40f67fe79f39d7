"""The user-facing error type: a one-line message and the exit code it maps to."""

from __future__ import annotations


class FamfsError(Exception):
    """An error a user can act on: printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int = 1, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.errno = errno

    def __str__(self) -> str:
        return self.message
