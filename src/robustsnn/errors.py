"""One error type for user mistakes, so that the command line can tell them from bugs.

A :class:`UserError` is something the user can fix (a key, a value, a file, a directory); its
message is one line that names what is wrong and what to do. The command line prints that line
and exits non-zero without a traceback. Every other exception is a bug (or an unexpected
failure) and keeps its traceback.

``UserError`` subclasses ``ValueError`` so that code (and tests) that catch ``ValueError`` for a
bad argument keep working; :class:`StorageError` and :class:`NotFoundError` are also
``OSError``/``FileNotFoundError`` for the same reason.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(ValueError):
    """A mistake the user can fix; the message is one line naming the key, file or value."""


class ConfigError(UserError):
    """A config that cannot be used; the message names the key and what is accepted."""


class DataError(UserError):
    """A dataset file or folder that cannot be read as the dataset it claims to be."""


class CheckpointError(UserError):
    """A checkpoint (or training state) that cannot be loaded; the message names the file."""


class RunError(UserError):
    """A run directory that cannot be used now: locked by another process, or made with other
    settings than the ones given."""


class StorageError(UserError, OSError):
    """A file system failure at a named path (read-only, full, not a directory, no permission).

    It is an ``OSError`` too, so callers that handle OS failures keep handling it."""


class NotFoundError(UserError, FileNotFoundError):
    """A file or directory the user named (or a run needs) does not exist; the message says
    which and what to give instead. It is a ``FileNotFoundError`` too."""


_CAUSES = {
    errno.ENOSPC: "no space left on the device; free some space and run again with --resume",
    errno.EDQUOT: "disk quota exceeded; free some space and run again with --resume",
    errno.EROFS: "the file system is read-only; choose a writable directory with -o",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory, not a file",
    errno.EEXIST: "it exists and is not a directory",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "the name is too long",
}


def describe_os_error(err: OSError, path: str | Path | None = None) -> str:
    """``"<path>: <cause>"`` for an OS error, the cause in words where the errno is known."""
    where = path if path is not None else (err.filename or "?")
    cause = _CAUSES.get(err.errno or -1) or err.strerror or str(err) or type(err).__name__
    return f"{where}: {cause}"


def storage_error(err: OSError, path: str | Path | None = None, action: str = "") -> StorageError:
    """A :class:`StorageError` for ``err`` naming ``path`` (default: the error's own file)."""
    prefix = f"cannot {action} " if action else ""
    return StorageError(prefix + describe_os_error(err, path))


@contextmanager
def storage(path: str | Path, action: str, *, exact: bool = False) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into a :class:`StorageError` naming the file.

    The file is the one the error names (a parent directory, say), else ``path``; with
    ``exact`` always ``path`` (an atomic write names its target, not its temporary file).
    """
    try:
        yield
    except OSError as err:
        filename = err.filename if err.filename is not None and not exact else path
        raise storage_error(err, os.fspath(filename), action) from None
