"""The run directory's lock: one writing process per run directory.

:func:`lock_run_dir` takes an exclusive ``flock`` on ``RUN_DIR/.dapo_run.lock`` and keeps it until
:func:`unlock_run_dir` or the end of the process; the OS drops it when the process dies, even by
SIGKILL, so a lock is never stale. The file names the holder (pid, host, since when), which a
second writer's error message repeats. On a file system without ``flock`` a warning is printed and
the run goes on unlocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from dapo_rl.errors import RunDirError

LOCK_FILE = ".dapo_run.lock"
"""The file a writing process holds an exclusive ``flock`` on (it names the holder's pid and host)."""

_LOCKS: dict[str, list[int]] = {}  # resolved run directory -> [fd, holds]: re-entrant per process


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on host {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "a process whose pid is not recorded yet"


def lock_run_dir(path: Path) -> None:
    """Hold an exclusive lock on run directory ``path`` (its :data:`LOCK_FILE`, ``flock``) until
    :func:`unlock_run_dir` or the end of the process; the OS drops it when the process dies, even
    by SIGKILL, so it is never stale. Re-entrant in one process. A directory locked by another
    process is a :class:`RunDirError` naming the holder's pid and host."""
    import fcntl  # POSIX only, like the rest of the run-directory handling
    import socket

    key = str(Path(path).resolve())
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        return
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(f"cannot create the lock file in the run directory {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunDirError(
            f"run directory {path} is in use by another dapo process: {holder}. Two writers would mix "
            "their records: wait for it to end (or stop it), then run this again"
        ) from None
    except OSError as exc:  # a file system without flock (some network mounts): say so, go on
        print(
            f"warning: cannot lock the run directory {path} ({exc.strerror}); nothing stops a second writer"
        )
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    _LOCKS[key] = [fd, 1]


def unlock_run_dir(path: Path, every_hold: bool = False) -> None:
    """Give back one hold (``every_hold``: all) of this process's lock on ``path``; the last one
    releases it."""
    key = str(Path(path).resolve())
    entry = _LOCKS.get(key)
    if entry is None:
        return
    entry[1] = 0 if every_hold else entry[1] - 1
    if entry[1] <= 0:
        del _LOCKS[key]
        os.close(entry[0])  # closing the only descriptor releases the flock
