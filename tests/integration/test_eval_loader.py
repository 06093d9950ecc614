"""`dapo eval` takes its rows from the same loader as training: `data.loader` works for eval too."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from dapo_rl.cli import main
from tests.helpers_run import save_random_tiny_model

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "yaml_only"


def _eval(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", *args])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err[-2000:]
    return json.loads(out.out)


def test_eval_reads_rows_through_data_loader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # train.num_threads: leave pytest's
    spec = importlib.util.spec_from_file_location("my_task", EXAMPLE / "my_task.py")
    my_task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(my_task)
    expected = [row["uid"] for row in my_task.load("eval")]  # the loader's addition problems only
    assert 0 < len(expected) < 40
    model = save_random_tiny_model(tmp_path / "model")
    result = _eval(
        capsys, "--config", str(EXAMPLE / "config.yaml"), "--model", str(model), "-k", "1",
        "eval.max_response_tokens=4", "train.num_threads=1",
    )  # fmt: skip
    assert [p["uid"] for p in result["problems"]] == expected
    assert result["settings"]["data"].startswith("data.loader ")
