"""`dapo eval` end to end in a subprocess: a saved tiny model on a small synthetic jsonl file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dapo_rl", "eval", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from dapo_rl.data.synthetic import make_rows
    from helpers_model import make_tiny_model_and_tokenizer

    root = tmp_path_factory.mktemp("eval_cli")
    model, tokenizer = make_tiny_model_and_tokenizer(seed=0)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = root / "problems.jsonl"
    rows = make_rows(8, 0, "test")
    assert isinstance(rows[0].prompt, str)
    data.write_text("".join(json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n" for r in rows))
    return model_dir, data


def test_eval_cli_writes_one_record_per_problem(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, data = model_and_data
    out = tmp_path / "out.json"
    proc = _run(
        "--model", str(model_dir), "--data", str(data), "--reward", "synthetic",
        "-k", "2", "--max-problems", "5", "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout) == result  # stdout is exactly the JSON; the table goes to stderr
    assert "avg@2" in proc.stderr and "pass@2" in proc.stderr
    for key in ("avg_at_k", "pass_at_k", "maj_at_k"):
        assert set(result[key]) == {"mean", "ci95", "interval"}
        assert 0.0 <= result[key]["mean"] <= 1.0
        lo, hi = result[key]["ci95"]
        assert 0.0 <= lo <= result[key]["mean"] <= hi <= 1.0
    # every response beside the JSON, readable with `dapo samples`
    responses = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert len(responses) == 5 * 2 and {"response", "score", "acc", "pred"} <= set(responses[0])
    assert "texts" not in result["problems"][0]
    shown = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "samples", str(out.with_suffix(".jsonl")), "--limit", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0 and "4 more problem(s)" in shown.stdout
    for key in ("invalid_rate", "mean_response_tokens", "truncation_rate", "settings", "reward"):
        assert key in result
    assert result["num_problems"] == 5
    assert result["k"] == 2
    assert result["settings"]["reward"] == "synthetic"
    problems = result["problems"]
    uids = [p["uid"] for p in problems]
    assert len(problems) == 5 and len(set(uids)) == 5
    for p in problems:
        assert len(p["preds"]) == 2 and len(p["correct"]) == 2
        assert p["num_correct"] == sum(p["correct"])
    # avg@k is the mean of the per-problem records (no duplicated or missing problems).
    assert result["avg_at_k"]["mean"] == pytest.approx(sum(p["num_correct"] / 2 for p in problems) / 5)


def test_eval_cli_bad_data_path(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, _ = model_and_data
    missing = tmp_path / "does_not_exist.jsonl"
    proc = _run("--model", str(model_dir), "--data", str(missing), "--reward", "synthetic", cwd=tmp_path)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_cli_bad_model_path(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    _, data = model_and_data
    missing = tmp_path / "no_model_here"
    proc = _run("--model", str(missing), "--data", str(data), cwd=tmp_path)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
