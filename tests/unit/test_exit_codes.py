"""Every command ends with the documented exit code: one line for the errors a user can act on,
a traceback for a bug."""

from __future__ import annotations

import pytest

from dapo_rl import cli
from dapo_rl.errors import (
    EXIT_DIVERGED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STORAGE,
    EXIT_USAGE,
    CheckpointError,
    DataError,
    DivergedError,
    StorageError,
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
