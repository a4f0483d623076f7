"""Exceptions with the exit code each one maps to.

Exit codes (the same for every command):
  0  ok
  1  the operation failed
  2  usage or configuration error (nothing was changed)
  3  completed with warnings: some data could not be read (backup is incomplete)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3


class BackupError(Exception):
    """An operation failed. The message is one line that says what to fix."""

    exit_code = EXIT_FAILED


class ConfigError(BackupError):
    """Invalid configuration or usage. Raised before anything is written."""

    exit_code = EXIT_USAGE


class NoDataError(BackupError):
    """None of the configured paths exists."""


class LockTimeout(BackupError):
    """Another gofr-backup process held the lock for longer than the timeout."""


class Interrupted(BackupError):
    """SIGTERM/SIGINT arrived while an operation was running."""


class VerifyError(BackupError):
    """An archive failed verification."""


class CouldNotCheck(VerifyError):
    """The archive could not be read (an I/O error on the disk that holds it, out of memory):
    nothing is known about it, so a restore drill that meets this could not run, and it is never
    held against the archive."""


class LocalFault(BackupError):
    """A write on this side failed (the staging or scratch copy of a restore, a decrypted temp
    copy): the disk is full or out of inodes, over quota, read-only, failing, not ours to write
    (ENOSPC, EDQUOT, EROFS, EIO, EACCES, ...). It says nothing about the archive being read, so a
    restore drill that meets one could not run rather than failed. ``cause``: the OSError."""

    def __init__(self, message: str, cause: OSError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def one_line(text: str) -> str:
    """``text`` with every control character shown escaped (a name holding a newline or a stray
    \\r stays on one line)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
