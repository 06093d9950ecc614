"""Generations on disk: which groups a step writes, the record fields, the printer, the trackers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dapo_rl.batch import TrainSample
from dapo_rl.data.types import PromptRow
from dapo_rl.generations import (
    eval_records,
    format_groups,
    pick_groups,
    read_jsonl,
    select_records,
    step_records,
    without_responses,
)
from dapo_rl.rollout.base import Response
from dapo_rl.sampling import Collected, Group
from dapo_rl.tracking import MetricsLogger


def _group(uid: str, accs: list[bool], age: int = 0) -> Group:
    responses = [
        Response([1] * (3 + j), f"{uid} answer {j}", "length" if j == 0 else "eos") for j in range(len(accs))
    ]
    scores = [1.0 if a else -1.0 for a in accs]
    rewards = [s - 0.25 * (j == 0) for j, s in enumerate(scores)]
    return Group(PromptRow(f"What is {uid}?", "7", uid), [5, 6], responses, scores, accs, rewards, age)


def test_pick_groups_takes_kept_and_filtered() -> None:
    kept = [_group(f"k{i}", [True, False]) for i in range(5)]
    dropped = [_group(f"d{i}", [True, True]) for i in range(3)]
    picked = pick_groups(kept, kept + dropped, 4, seed=1)
    assert sorted(k for _, k in picked) == [False, False, True, True]
    assert pick_groups(kept, kept + dropped, 4, seed=1) == picked  # seeded
    # Only one filtered group: the rest are kept ones. No kept group: all filtered.
    assert sorted(k for _, k in pick_groups(kept, kept + dropped[:1], 4, seed=0)) == [False, True, True, True]
    assert [k for _, k in pick_groups([], dropped, 2, seed=0)] == [False, False]
    assert pick_groups(kept, kept, 0, seed=0) == []


def test_step_records_fields_and_advantages() -> None:
    trained = [_group("a", [True, False]), _group("b", [False, True], age=1)]
    dropped = _group("c", [False, False])
    samples = [TrainSample([5, 6], [1], adv, 0, True) for adv in (1.0, -1.0, -0.5, 0.5)]
    collected = Collected(trained, [trained[0], dropped], {}, [0, 1], 2)
    records = step_records(3, collected, samples, n=3)
    by_uid = {(r["uid"], r["sample"]): r for r in records}
    assert set(by_uid) == {("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)}
    assert by_uid[("b", 1)]["advantage"] == 0.5 and by_uid[("b", 1)]["age"] == 1
    assert by_uid[("a", 0)]["advantage"] == 1.0
    assert by_uid[("c", 0)]["advantage"] is None and by_uid[("c", 0)]["kept"] is False
    first = by_uid[("a", 0)]
    assert first == {
        "step": 3, "group": first["group"], "kept": True, "age": 0, "version": 0, "uid": "a", "prompt": "What is a?",
        "ground_truth": "7", "sample": 0, "response": "a answer 0", "score": 1.0, "acc": True,
        "reward": 0.75, "advantage": 1.0, "length": 3, "finish_reason": "length",
    }  # fmt: skip


def _eval_result() -> dict:
    return {
        "k": 2,
        "problems": [
            {
                "uid": "p0", "answer": "4", "prompt": "2+2", "num_correct": 1, "correct": [True, False],
                "preds": ["4", None], "response_tokens": [5, 9], "num_truncated": 1,
                "texts": ["Answer: 4", "no idea"], "scores": [1.0, -1.0], "finish_reasons": ["eos", "length"],
            }
        ],
    }  # fmt: skip


def test_eval_records_and_json_without_texts() -> None:
    recs = eval_records(_eval_result(), step=0)
    assert [r["response"] for r in recs] == ["Answer: 4", "no idea"]
    assert recs[1] == {
        "step": 0, "uid": "p0", "prompt": "2+2", "ground_truth": "4", "sample": 1, "response": "no idea",
        "score": -1.0, "acc": False, "pred": None, "length": 9, "finish_reason": "length",
    }  # fmt: skip
    slim = without_responses(_eval_result())["problems"][0]
    assert "texts" not in slim and "prompt" not in slim and slim["preds"] == ["4", None]


def test_printer_puts_reward_next_to_response() -> None:
    recs = step_records(
        1, Collected([_group("a", [True, False])], [_group("a", [True, False])], {}, [0], 1),
        [TrainSample([5], [1], 0.7, 0, True), TrainSample([5], [1], -0.7, 0, True)], n=2,
    )  # fmt: skip
    plain = format_groups(recs, width=60, color=False)
    lines = plain.splitlines()
    i = next(n for n, line in enumerate(lines) if "reward +0.75" in line)
    assert "✓ right" in lines[i] and "adv +0.70" in lines[i] and "3 tok, length" in lines[i]
    assert lines[i + 1].strip() == "a answer 0"
    assert "\033[" not in plain
    assert "\033[32m" in format_groups(recs, width=60, color=True)


def test_a_groups_version_is_recorded_and_printed() -> None:
    """dapo samples shows which weights version generated each group (async: step - 1 - staleness)."""
    stale = _group("s", [True, False])
    stale.version = 4
    recs = step_records(
        7, Collected([stale], [stale], {}, [0], 1), [TrainSample([5], [1], 0.5, 0, True)] * 2, n=1
    )
    assert {r["version"] for r in recs} == {4}
    assert "step 7  s  ground truth: 7  kept  version 4" in format_groups(recs, width=100)


def test_logger_writes_generations_eval_files_and_tensorboard_text(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, tensorboard=True)
    group = _group("a", [True, False])
    recs = step_records(
        1, Collected([group], [group], {}, [0], 1), [TrainSample([5], [1], 0.1, 0, True)] * 2, 2
    )
    logger.log_generations(1, recs)
    logger.log_generations(2, [{**r, "step": 2} for r in recs])
    logger.log_eval_samples(2, eval_records(_eval_result(), step=2))
    logger.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "generations.jsonl")] == [1, 1, 2, 2]
    assert len(read_jsonl(tmp_path / "eval" / "step_2.jsonl")) == 2
    assert select_records(tmp_path, None, False)[0][0]["step"] == 2
    assert select_records(tmp_path, 1, False)[0][0]["step"] == 1
    assert select_records(tmp_path, None, True)[0][0]["uid"] == "p0"
    with pytest.raises(ValueError, match="no generations at step 9"):
        select_records(tmp_path, 9, False)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    tags = acc.Tags()["tensors"]
    assert "generations/text_summary" in tags and "eval_samples/text_summary" in tags
    text = acc.Tensors("generations/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "a answer 0" in text and "| step |" in text
    # resume truncation also trims generations.jsonl
    MetricsLogger(tmp_path, tensorboard=False).truncate_after(1)
    assert [r["step"] for r in read_jsonl(tmp_path / "generations.jsonl")] == [1, 1]


def test_wandb_offline_names_the_run_and_reuses_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "my_run"
    run_dir.mkdir()
    logger = MetricsLogger(run_dir, tensorboard=False, wandb=True, config={"optim": {"lr": 0.5}})
    assert logger._wandb.name == "my_run"
    assert dict(logger._wandb.config)["optim"] == {"lr": 0.5}
    first_id = logger._wandb.id
    logger.log(1, {"reward/mean": 0.5})
    logger.close()
    assert (run_dir / "wandb_id.txt").read_text().strip() == first_id
    again = MetricsLogger(run_dir, tensorboard=False, wandb=True, config={})
    assert again._wandb.id == first_id
    again.close()
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline and all(p.name.endswith(first_id) for p in offline)
