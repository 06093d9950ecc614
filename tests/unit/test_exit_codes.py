"""Every command ends with the documented exit code: one line for the errors a user can act on,
a traceback for a bug."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from dapo_rl import cli
from dapo_rl.config import ConfigError
from dapo_rl.errors import (
    EXIT_DIVERGED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STORAGE,
    EXIT_USAGE,
    CheckpointError,
    DataError,
    DivergedError,
    Interrupted,
    ModelFileError,
    RunDirError,
    StorageError,
    UserCodeError,
    exit_code_for,
    stopped_exit_code,
)


def test_codes_are_the_documented_ones() -> None:
    assert (EXIT_USAGE, EXIT_DIVERGED, EXIT_STORAGE, EXIT_SIGINT, EXIT_SIGTERM) == (2, 3, 4, 130, 143)
    assert stopped_exit_code(2) == 130 and stopped_exit_code(15) == 143 and stopped_exit_code(None) == 143
    assert exit_code_for(DataError("x")) == exit_code_for(CheckpointError("x")) == 2
    assert exit_code_for(DivergedError("x")) == 3 and exit_code_for(StorageError("x")) == 4
    assert exit_code_for(FileNotFoundError("x")) == 2 and exit_code_for(KeyError("x")) is None


@pytest.mark.parametrize(
    ("error", "code"),
    [(DivergedError("lr too high"), 3), (StorageError("disk full"), 4), (DataError("row 3"), 2)],
)
def test_main_prints_one_line_and_exits_with_the_code(
    error: Exception, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(_args: object) -> int:
        raise error

    monkeypatch.setitem(cli.COMMANDS, "plot", fail)
    with pytest.raises(SystemExit) as exc:
        cli.main(["plot", "runs/x"])
    assert exc.value.code == code
    assert capsys.readouterr().err == f"dapo plot: error: {error}\n"


def test_an_internal_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(_args: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "plot", bug)
    with pytest.raises(KeyError, match="a bug"):  # uncaught: Python prints it and exits with 1
        cli.main(["plot", "runs/x"])


ALL_COMMANDS = {
    "train": ["train"], "eval": ["eval"], "sft": ["sft"], "config": ["config", "show"],
    "plot": ["plot", "runs/x"], "samples": ["samples", "runs/x"], "doctor": ["doctor", "runs/x"],
}  # fmt: skip
ERRORS = [
    (ConfigError(["a.b: bad"]), 2),
    (DataError("row 3"), 2),
    (ModelFileError("model.safetensors is corrupt"), 2),
    (RunDirError("runs/x is in use by another dapo process: pid 1 on host h"), 2),
    (CheckpointError("no checkpoint verifies"), 2),
    (UserCodeError("reward.name='r.py:f' called sys.exit(3)"), 2),
    (FileNotFoundError("no metrics file: runs/x/metrics.jsonl"), 2),
    (DivergedError("not finite"), 3),
    (StorageError("could not write runs/x/plots/reward.png: No space left on device"), 4),
]


def test_the_table_covers_every_command() -> None:
    assert sorted(ALL_COMMANDS) == sorted(cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
@pytest.mark.parametrize(("error", "code"), ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_every_command_ends_every_error_with_its_code_and_one_line(
    command: str,
    error: Exception,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(_args: object) -> int:
        raise error

    monkeypatch.setitem(cli.COMMANDS, command, fail)
    with pytest.raises(SystemExit) as exc:
        cli.main(ALL_COMMANDS[command])
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert (
        err.startswith(f"dapo {command}: ") and str(error).splitlines()[0] in err and "Traceback" not in err
    )


@pytest.mark.parametrize(
    ("phase", "signum", "code", "message"),
    [
        ("setup", signal.SIGTERM, 143, "stopped by SIGTERM before the run wrote anything: run the same command again"),
        ("first evaluation", signal.SIGINT, 130, "stopped by SIGINT before the first checkpoint of {run}: nothing "
         "to resume; start it again with the same command and --overwrite (it removes only that run's files)"),
        ("final evaluation", signal.SIGTERM, 143, "stopped by SIGTERM; the newest checkpoint of {run} is "
         "step_000004: continue with dapo train --resume {run}"),
    ],
)  # fmt: skip
def test_dapo_train_stopped_by_a_signal_at_each_phase(
    phase: str, signum: int, code: int, message: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """What ``dapo train`` says and returns when SIGINT/SIGTERM arrives outside the step loop: the
    run directory says how far the run got (the fault tests send real signals at these phases)."""
    from dapo_rl import launch, lifecycle

    run = tmp_path / "run"
    run.mkdir()
    if phase != "setup":
        (run / ".dapo_run").write_text("{}")
    if phase == "final evaluation":
        (run / "checkpoints" / "step_000004").mkdir(parents=True)
        (run / "checkpoints" / "step_000004" / "COMPLETE").write_text("4")
    monkeypatch.setattr(lifecycle, "_RUN", {"dir": run})

    def stopped(*_args: object) -> dict:
        raise Interrupted(signum)

    monkeypatch.setattr(launch, "train_from_cli", stopped)
    with pytest.raises(SystemExit) as exc:
        cli.main(["train"])
    assert exc.value.code == code
    assert capsys.readouterr().err == f"dapo train: {message.format(run=run)}\n"


@pytest.mark.parametrize(("by", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_dapo_train_stopped_in_the_step_loop_after_its_checkpoint(
    by: str, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dapo_rl import launch

    monkeypatch.setattr(launch, "train_from_cli", lambda *a: {"stopped_early": True, "stopped_by": by})
    with pytest.raises(SystemExit) as exc:
        cli.main(["train"])
    assert exc.value.code == code


def test_dapo_train_in_process_gives_the_signal_handlers_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from dapo_rl import launch

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(launch, "train_from_cli", lambda *a: {})
    with pytest.raises(SystemExit):
        cli.main(["train"])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
