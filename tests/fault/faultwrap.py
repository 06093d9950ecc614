"""Run ``dapo`` with its file-system operations counted, and a fault injected at one of them.

    python tests/fault/faultwrap.py MODE INDEX LOG [OP:SUFFIX] -- train ARGS...

Every call of ``open`` for writing, ``os.replace``/``os.rename`` (what ``Path.rename`` calls),
``os.fsync``, ``os.unlink``, ``shutil.rmtree`` and ``torch.save`` is numbered from 0 and appended to
LOG as ``index op path``. MODE ``census`` only counts; ``kill`` sends SIGKILL to this process just
before operation INDEX runs (as a power cut or the OOM killer would); ``enospc`` makes operation
INDEX fail with "No space left on device". A run is deterministic, so the same INDEX hits the same
operation every time: a seeded choice of INDEX is a seeded point of the run. With ``OP:SUFFIX``,
INDEX counts only the operations OP on a path ending with SUFFIX (``replace:metrics.jsonl``).
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import signal
import sys


def main() -> None:
    mode, index, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    args = sys.argv[sys.argv.index("--") + 1 :]
    only = sys.argv[4].split(":", 1) if sys.argv[4] != "--" else None
    matched = [0]
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open for the whole run
    count = [0]

    def hit(op: str, path: object) -> None:
        n = count[0]
        count[0] += 1
        log.write(f"{n} {op} {path}\n")
        if only is not None:
            if op != only[0] or not str(path).endswith(only[1]):
                return
            n, matched[0] = matched[0], matched[0] + 1
        if n != index:
            return
        if mode == "kill":
            log.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def wrap(owner: object, name: str, op: str, path_arg: int = 0, writes: bool = False) -> None:
        real = getattr(owner, name)

        def hooked(*a: object, **k: object) -> object:
            mode_arg = a[1] if len(a) > 1 else k.get("mode", "r")
            if not writes or (isinstance(mode_arg, str) and any(c in mode_arg for c in "wax+")):
                hit(op, a[path_arg] if len(a) > path_arg else k)
            return real(*a, **k)

        setattr(owner, name, hooked)

    import io

    wrap(builtins, "open", "open", writes=True)
    wrap(io, "open", "open", writes=True)  # what pathlib calls
    wrap(os, "replace", "replace", path_arg=1)
    wrap(os, "rename", "rename", path_arg=1)
    wrap(os, "unlink", "unlink")
    wrap(shutil, "rmtree", "rmtree")
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = fd
        hit("fsync", target)
        real_fsync(fd)

    os.fsync = fsync
    import torch

    wrap(torch, "save", "torch.save", path_arg=1)
    from dapo_rl.cli import main as dapo

    sys.argv = ["dapo", *args]
    dapo(args)


if __name__ == "__main__":
    main()
