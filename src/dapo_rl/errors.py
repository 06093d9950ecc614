"""Error classes and the exit codes every ``dapo`` command ends with.

A scheduler (Slurm, Kubernetes, a shell loop) can tell from the exit status alone what happened and
what to do next; the README has the same table.

====  ===========================  ==========================================================
code  meaning                      what to do
====  ===========================  ==========================================================
0     success                      nothing
1     internal error (a bug)       the traceback is printed; report it
2     configuration or data error  fix the config, the data or the model files named, rerun;
                                   also: user code that broke its contract (named), a run
                                   directory in use by another process (pid and host named)
3     the run diverged             lower ``optim.lr`` or check the data; resume an earlier
                                   checkpoint or start over (no non-finite weights were saved)
4     storage error                free space / fix permissions on the path named, then
                                   ``dapo train --resume RUN_DIR``
5     rollout worker lost          the asynchronous rollout worker died or hung (the message
                                   says which); a checkpoint was written: ``dapo train --resume``
130   stopped by SIGINT (Ctrl-C)   the message says how to go on: ``dapo train --resume RUN_DIR``
                                   or, before the first checkpoint, the same command again
143   stopped by SIGTERM           as for 130
====  ===========================  ==========================================================

130 and 143 are what a shell reports for a process ended by SIGINT / SIGTERM (128 + signal number),
so a scheduler that already treats those as "preempted, requeue" does the right thing.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_STORAGE = 4
EXIT_WORKER = 5
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


def stopped_exit_code(signum: int | None) -> int:
    """The exit status of a run stopped early by ``signum`` after checkpointing (130, 143, ...)."""
    return 128 + int(signum) if signum else EXIT_SIGTERM


class DapoError(Exception):
    """Base of the errors a command reports in one line (no traceback) with its own exit code."""

    exit_code = EXIT_INTERNAL


class UsageError(DapoError, ValueError):
    """A configuration, data or model-file problem the user can fix; the message says how."""

    exit_code = EXIT_USAGE


class DataError(UsageError):
    """A data file that cannot be read as problems (the message names the file and the row)."""


class ModelFileError(UsageError):
    """A model directory whose files are missing or corrupt (the message names the file)."""


class RunDirError(UsageError):
    """A run directory that is in use by another run, or cannot be written."""


class CheckpointError(UsageError):
    """No checkpoint of the run can be resumed from (each one's problem is listed)."""


class DivergedError(DapoError, RuntimeError):
    """The run collapsed: non-finite weights or losses, or no informative group for many steps."""

    exit_code = EXIT_DIVERGED


class StorageError(DapoError, OSError):
    """Writing a file of the run failed (disk full, permissions); earlier records are intact."""

    exit_code = EXIT_STORAGE


class UserCodeError(UsageError):
    """User code (a reward, filter, loader or template named in the config) broke its contract:
    it ended its process (``sys.exit``, ``os._exit``) or returned a value of the wrong type. The
    message names the function."""


class Interrupted(BaseException):
    """SIGINT/SIGTERM outside the step loop (model loading, an evaluation, the final save's
    aftermath): the command stops with ``128 + signum`` and a message (see ``dapo_rl.launch``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + int(signum)


class RolloutWorkerError(DapoError, RuntimeError):
    """The asynchronous rollout worker process died or stopped answering (``async.heartbeat_s``);
    the trainer wrote a checkpoint that resumes exactly (exit code 5)."""

    exit_code = EXIT_WORKER


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of an error reported without a traceback, or None for an internal error.

    Our own errors carry their code; the configuration's ``ConfigError`` and the plain
    ``FileNotFoundError`` / ``ValueError`` that name a user's input are usage errors (2).
    """
    if isinstance(exc, DapoError):
        return exc.exit_code
    if isinstance(exc, (FileNotFoundError, ValueError)):
        return EXIT_USAGE
    return None
