"""One writer per run directory: an advisory lock file naming its holder.

Two processes writing one run directory mix their files (one's ANN beside the other's SNN, an
interleaved log, a report about models that are not on disk). Every command that writes into a
run therefore holds ``RUN/.lock`` while it works:

* the lock is an advisory ``flock`` on the file (``msvcrt.locking`` on Windows), which the
  operating system drops when the holder exits, however it exits (even SIGKILL);
* the file names the holder: PID, host, command and start time. A second writer is refused at
  once with one line that names them;
* a released lock leaves the file empty. A non-empty file whose lock is free was left by a
  holder that died: it is reported as stale (who and since when) and taken over;
* where the file system cannot lock (some network mounts), the PID is checked instead on the
  same host, and a lock held from another host is respected.

Locks are re-entrant within one process: the pipeline holds the lock and re-renders the report
with functions that take it too.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from robustsnn.errors import RunError, storage

LOCK_NAME = ".lock"

_held: dict[Path, tuple[int, int]] = {}  # resolved directory -> (file descriptor, depth)


def _try_lock(fd: int) -> bool | None:
    """Take the OS lock without waiting: True taken, False held by another, None unsupported."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except PermissionError:  # msvcrt reports a held lock this way
        return False
    except OSError:
        return None


def _unlock(fd: int) -> None:
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        return


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    if not raw.strip():
        return None
    try:
        holder = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {"pid": "?", "host": "?", "command": "unreadable lock file"}
    return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}


def _who(holder: dict[str, Any]) -> str:
    since = holder.get("started_utc", "?")
    return (
        f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"({holder.get('command', '?')}, since {since})"
    )


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _write_holder(fd: int, command: str) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
    os.fsync(fd)


@contextmanager
def run_lock(
    directory: str | Path,
    command: str,
    on_message: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the lock of run directory ``directory`` (created if needed) for the ``with`` block.

    ``command`` describes the holder for a refused second writer (e.g. ``"robustsnn run"``);
    ``on_message`` receives the line about a stale lock that was taken over. Raises
    :class:`~robustsnn.errors.RunError` when another process holds the lock.
    """
    directory = Path(directory)
    with storage(directory, "create the run directory"):
        directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield directory
        finally:
            _held[key] = (fd, depth)
        return
    path = directory / LOCK_NAME
    with storage(path, "create the lock file"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        taken = _try_lock(fd)
        holder = _read_holder(fd)
        if taken is False:
            raise RunError(
                f"{directory} is in use by {_who(holder or {})}; wait for it to finish, "
                "or write to another directory with -o"
            )
        if taken is None and holder is not None:
            same_host = holder.get("host") == socket.gethostname()
            if not same_host or _pid_alive(holder.get("pid")):
                raise RunError(
                    f"{directory} is in use by {_who(holder)} (this file system cannot lock, "
                    f"so the holder was judged by its PID); if it is gone, delete {path}"
                )
        if holder is not None and on_message is not None:
            on_message(
                f"{directory}: a stale lock from {_who(holder)} was left by a process that is "
                "no longer running; taking it over"
            )
        with storage(path, "write the lock file"):
            _write_holder(fd, command)
        _held[key] = (fd, 1)
        try:
            yield directory
        finally:
            del _held[key]
            with suppress(OSError):
                os.ftruncate(fd, 0)  # a clean release leaves an empty file: nothing stale
            if taken:
                _unlock(fd)
    finally:
        os.close(fd)
