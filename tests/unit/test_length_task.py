"""The length task: the rambling teacher, its habit measure, the reward on rambling responses, and
the selection through the config (hand-checked cases)."""

from __future__ import annotations

import random

import pytest

from dapo_rl.config import load_config
from dapo_rl.data import length_task, synthetic
from dapo_rl.data.length_task import (
    MAX_REPEATS,
    ramble_solution,
    repeats,
    teacher_solution,
    warm_start_recipe,
)
from dapo_rl.data.types import PromptRow
from dapo_rl.models.sft import SFTConfig, _encode_examples
from dapo_rl.models.tiny import build_tokenizer
from dapo_rl.rewards.synthetic import synthetic_reward

ROW = PromptRow(prompt="47+85=", answer="132", uid="t", extra={})
WORK = "\n7+5=12\n4+8+1=13"


class Draws(random.Random):
    """A Random whose random() returns the given values in order (then fails)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_ramble_repeats_the_working_before_the_answer():
    text = synthetic.format_solution(ROW)
    assert text == WORK + "\nAnswer: 132"
    # no draw below 0.5: no copy; one, two: one, two copies; the draw that stops is consumed
    assert ramble_solution(text, 0.5, Draws([0.7])) == text
    assert ramble_solution(text, 0.5, Draws([0.2, 0.9])) == WORK + WORK + "\nAnswer: 132"
    assert ramble_solution(text, 0.5, Draws([0.1, 0.4, 0.6])) == WORK * 3 + "\nAnswer: 132"
    # at most MAX_REPEATS copies, however the draws go
    assert ramble_solution(text, 0.9, Draws([0.0] * 10)) == WORK * (MAX_REPEATS + 1) + "\nAnswer: 132"
    # ramble 0 draws nothing and changes nothing
    assert ramble_solution(text, 0.0, Draws([])) == text


def test_ramble_rejects_bad_input():
    with pytest.raises(ValueError, match="ramble must be in"):
        ramble_solution(WORK + "\nAnswer: 132", 1.0, random.Random(0))
    with pytest.raises(ValueError, match="answer line"):
        ramble_solution(WORK, 0.5, random.Random(0))


def test_teacher_copies_its_forgotten_carry_too():
    # forget the carry (draw 0.1 < 0.4), then ramble once (0.2 < 0.6), then stop (0.9)
    text = teacher_solution(ROW, 0.4, 0.6, Draws([0.1, 0.2, 0.9]))
    assert text == "\n7+5=12\n4+8=12" * 2 + "\nAnswer: 122"
    assert synthetic_reward(text, "132").score == -1.0


def test_repeats_counts_whole_copies_of_the_first_block():
    assert repeats(WORK + "\nAnswer: 132") == 0
    assert repeats(WORK + WORK + "\nAnswer: 132") == 1
    assert repeats(WORK * 4 + "\nAnswer: 132") == 3
    assert repeats(WORK + WORK + "\n7+5=12") == 1  # cut short inside the third copy
    assert repeats("\n7+5=12\n7+5=12\nAnswer: 12") == 1
    assert repeats("\n7+5=12\n4+8=12\n7+5=12\n4+8+1=13\nAnswer: 132") == 0  # second block differs
    assert repeats("Answer: 132") == 0
    assert repeats("") == 0


def test_reward_of_rambling_responses():
    # a rambling response that ends in the right answer is right; one cut off by the cap has no answer
    assert synthetic_reward(WORK * 3 + "\nAnswer: 132", "132").score == 1.0
    cut = (WORK * 4)[:40]
    result = synthetic_reward(cut, "132")
    assert (result.score, result.acc, result.pred) == (-1.0, False, None)


def test_teacher_lengths_by_hand_and_the_share_over_the_cap():
    tok = build_tokenizer()
    # "\n7+5=12\n4+8+1=13\nAnswer: 132" is 28 characters, + EOS = 29 tokens; one copy more: 45
    assert length_task.teacher_lengths([ROW], tok, 0.0, 0.0) == [29]
    rows = synthetic.make_rows(2000, seed=0, split="train")
    plain = length_task.teacher_lengths(rows, tok, 0.4, 0.0)
    rambling = length_task.teacher_lengths(rows, tok, 0.4, 0.6)
    assert max(plain) == 49  # correct answers fit well within the 64-token cap
    over = sum(n > 64 for n in rambling) / len(rows)
    assert 0.30 < over < 0.38  # about a third of the teacher's responses run past it


def test_default_warm_start_is_unchanged():
    # ramble=0 keeps the default warm model's hash and its SFT examples, token for token
    assert SFTConfig().digest() == SFTConfig(ramble=0.0).digest()
    assert SFTConfig(ramble=0.6).digest() != SFTConfig().digest()
    tok = build_tokenizer()
    rows = synthetic.make_rows(50, seed=0, split="train")
    assert _encode_examples(tok, rows, 0.4, 0, 0.0) == _encode_examples(tok, rows, 0.4, 0)
    assert _encode_examples(tok, rows, 0.4, 0, 0.6) != _encode_examples(tok, rows, 0.4, 0)


def test_config_selects_the_task():
    assert warm_start_recipe(load_config(None, []).data.synthetic) == {}
    cfg = load_config("length", [])
    assert (cfg.data.synthetic.task, cfg.rollout.max_response_tokens) == ("length", 64)
    assert warm_start_recipe(cfg.data.synthetic) == {"ramble": 0.6}
    cfg = load_config(None, ["data.synthetic.task=length", "data.synthetic.ramble=0.3"])
    assert warm_start_recipe(cfg.data.synthetic) == {"ramble": 0.3}
