"""evaluate() with a scripted rollout engine: one record per problem, correct bookkeeping, batching."""

from __future__ import annotations

import json

import pytest

from dapo_rl.data.encoder import PromptEncoder
from dapo_rl.data.types import PromptRow
from dapo_rl.eval_metrics import to_json
from dapo_rl.evaluation import EvalSpec, evaluate
from dapo_rl.rewards.runner import RewardRunner
from dapo_rl.rollout.base import Response, SamplingParams


class _CharTokenizer:
    """Just enough of a HF tokenizer: one id per character, EOS id 0."""

    eos_token_id = 0
    eos_token = "\x00"
    bos_token_id = None
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(ch) for ch in text]}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids if i != 0)


class _ScriptedEngine:
    """Sample i of a prompt answers ``script[prompt text][i]`` (None: no Answer line)."""

    def __init__(self, script: dict[str, list[str | None]]) -> None:
        self.script = script
        self.calls: list[tuple[int, int, SamplingParams]] = []

    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingParams) -> list[list[Response]]:
        self.calls.append((len(prompt_ids), n, params))
        out = []
        for ids in prompt_ids:
            text = "".join(chr(i) for i in ids)
            key = next(k for k in self.script if k in text)
            group = []
            for i in range(n):
                ans = self.script[key][i]
                body = "no idea" if ans is None else f"thinking\nAnswer: {ans}"
                truncated = ans is None
                tokens = [ord(c) for c in body] + ([] if truncated else [0])
                group.append(Response(tokens, body, "length" if truncated else "eos"))
            out.append(group)
        return out


def _rows() -> list[PromptRow]:
    return [
        PromptRow(prompt="What is 1+1?", answer="2", uid="p0"),
        PromptRow(prompt="What is 2+3?", answer="5", uid="p1"),
        PromptRow(prompt="What is 4+4?", answer="8", uid="p2"),
    ]


SCRIPT: dict[str, list[str | None]] = {
    "1+1": ["2", "3", "2"],  # 2 correct, majority 2 (right)
    "2+3": [None, "6", None],  # 0 correct, 2 invalid, majority 6 (wrong)
    "4+4": ["7", "8", "9"],  # 1 correct, tie -> 7 first (wrong)
}


@pytest.mark.parametrize("batch_prompts", [1, 2, 64])
def test_evaluate_records_and_metrics(batch_prompts: int) -> None:
    engine = _ScriptedEngine(SCRIPT)
    encode = PromptEncoder(_CharTokenizer(), "plain", use_chat_template=False, system_prompt=None)
    spec = EvalSpec(
        k=3, max_response_tokens=32, eos_token_ids=[0], temperature=1.0, top_p=0.7, seed=5,
        batch_prompts=batch_prompts,
    )  # fmt: skip
    with RewardRunner("synthetic", timeout_s=None, eos_text=_CharTokenizer.eos_token) as runner:
        out = evaluate(engine, encode, runner, _rows(), spec)
    assert out["num_problems"] == 3 and out["k"] == 3
    assert [p["uid"] for p in out["problems"]] == ["p0", "p1", "p2"]
    assert [p["num_correct"] for p in out["problems"]] == [2, 0, 1]
    assert out["problems"][1]["preds"] == [None, "6", None]
    assert out["problems"][0]["correct"] == [True, False, True]
    assert out["problems"][1]["num_truncated"] == 2
    assert out["avg_at_k"]["mean"] == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)
    assert out["pass_at_k"]["mean"] == pytest.approx(2 / 3)
    assert out["maj_at_k"]["mean"] == pytest.approx(1 / 3)
    assert out["invalid_rate"] == pytest.approx(2 / 9)
    assert out["truncation_rate"] == pytest.approx(2 / 9)
    assert out["reward"] == {"timeouts": 0, "errors": 0}
    # Batching: ceil(3 / batch_prompts) calls, k samples each, sampling settings passed through.
    assert len(engine.calls) == -(-3 // batch_prompts)
    assert sum(c[0] for c in engine.calls) == 3
    for b, (_, n, params) in enumerate(engine.calls):
        assert n == 3
        assert params.max_new_tokens == 32 and params.top_p == 0.7 and params.temperature == 1.0
        assert params.eos_token_ids == [0]
        assert params.seed == 5 + b


def test_evaluate_rejects_empty_and_bad_k() -> None:
    engine = _ScriptedEngine(SCRIPT)
    encode = PromptEncoder(_CharTokenizer(), "plain", use_chat_template=False, system_prompt=None)
    kwargs = dict(max_response_tokens=8, eos_token_ids=[0], temperature=1.0, top_p=1.0)
    with RewardRunner("synthetic", timeout_s=None) as runner:
        with pytest.raises(ValueError, match="no problems"):
            evaluate(engine, encode, runner, [], EvalSpec(k=2, **kwargs))
        with pytest.raises(ValueError, match="k must be"):
            evaluate(engine, encode, runner, _rows(), EvalSpec(k=0, **kwargs))


def test_to_json_round_trips_with_one_line_per_problem() -> None:
    result = {
        "num_problems": 2,
        "avg_at_k": {"mean": 0.5, "ci95": [0.1, 0.9]},
        "problems": [{"uid": "a", "preds": [None, "1"]}, {"uid": "b", "preds": ["2", "2"]}],
    }
    text = to_json(result)
    assert json.loads(text) == result
    lines = text.splitlines()
    assert sum(line.strip().startswith('{"uid"') for line in lines) == 2
    for case in ({"problems": []}, {"problems": [{"uid": "a"}]}, {"k": 1}):
        assert json.loads(to_json(case)) == case


def _bare_float_reward(response: str, ground_truth: str) -> float:
    """A user reward as docs/extending.md shows it: a plain score, no extracted answer."""
    return 1.0 if response.strip().endswith(ground_truth) else 0.0


def test_bare_float_reward_leaves_maj_unavailable_and_texts_are_kept() -> None:
    engine = _ScriptedEngine(SCRIPT)
    encode = PromptEncoder(_CharTokenizer(), "plain", use_chat_template=False, system_prompt=None)
    spec = EvalSpec(k=3, max_response_tokens=32, eos_token_ids=[0], keep_texts=True)
    with RewardRunner(_bare_float_reward, timeout_s=None, eos_text=_CharTokenizer.eos_token) as runner:
        out = evaluate(engine, encode, runner, _rows(), spec)
    assert out["avg_at_k"]["mean"] == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)  # same as the checker
    # Before: maj@k 0.0 and invalid rate 1.0, from preds that were never extracted.
    assert out["maj_at_k"]["mean"] is None and out["maj_at_k"]["unavailable"]
    assert out["invalid_rate"] is None and out["answers_extracted"] is False
    first = out["problems"][0]
    assert first["prompt"] == "What is 1+1?" and first["texts"][1] == "thinking\nAnswer: 3"
    assert first["scores"] == [1.0, 0.0, 1.0] and first["finish_reasons"] == ["eos", "eos", "eos"]
