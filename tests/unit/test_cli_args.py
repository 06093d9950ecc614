"""Command-line parsing: dotted overrides may stand on both sides of an option, in order."""

from __future__ import annotations

import pytest

from dapo_rl.cli import main


def _shown(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["config", "show", *argv])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_overrides_after_an_option_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    out = _shown(capsys, "train.total_steps=3", "--config", "tiny", "eval.k=2")
    assert "  total_steps: 3\n" in out and "  k: 2\n" in out


def test_a_later_override_wins_across_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    out = _shown(capsys, "eval.k=2", "--config", "tiny", "eval.k=3")
    assert "  k: 3\n" in out and "  k: 2\n" not in out


@pytest.mark.parametrize("stray", ["--bogus", "notanoverride"])
def test_unknown_arguments_are_still_refused(capsys: pytest.CaptureFixture[str], stray: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["config", "show", "eval.k=2", "--config", "tiny", stray])
    assert exc.value.code == 2
    assert f"unrecognized arguments: {stray}" in capsys.readouterr().err


def test_a_command_without_overrides_refuses_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plot", "runs/x", "eval.k=2"])
    assert exc.value.code == 2
