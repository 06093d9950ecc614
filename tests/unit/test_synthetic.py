"""The synthetic arithmetic task: correct worked solutions, disjoint splits, the answer rule."""

from __future__ import annotations

import random
import re

import pytest

from dapo_rl.data.synthetic import (
    MAX_LEVEL,
    answer_of,
    extract_answer,
    forgotten_carries,
    format_solution,
    make_rows,
    split_of,
)
from dapo_rl.models.tiny import build_tokenizer


def test_rows_are_reproducible_and_well_formed():
    rows = make_rows(300, seed=1)
    assert [(r.prompt, r.answer) for r in rows] == [(r.prompt, r.answer) for r in make_rows(300, seed=1)]
    assert [r.prompt for r in rows] != [r.prompt for r in make_rows(300, seed=2)]
    assert len({r.uid for r in rows}) == 300
    for r in rows:
        a, op, b = r.extra["a"], r.extra["op"], r.extra["b"]
        assert r.prompt == f"{a}{op}{b}="
        assert int(r.answer) == eval(f"{a}{op}{b}") >= 0
        assert len(str(a)) == r.extra["level"]


def test_solution_lines_are_correct_arithmetic_and_end_with_the_answer():
    for r in make_rows(500, seed=0):
        text = format_solution(r)
        lines = text.split("\n")
        assert lines[0] == "" and lines[-1] == f"Answer: {r.answer}"
        assert len(lines) - 2 == r.extra["level"]  # one line per digit of the first operand
        for line in lines[1:-1]:
            lhs, rhs = line.split("=")
            assert re.fullmatch(r"\d+[+\-*]\d+([+\-]\d)?", lhs)
            assert eval(lhs) == int(rhs)
        assert extract_answer(text) == int(r.answer)


def test_worked_example():
    row = make_rows(1, 0)[0]
    row.prompt = "347+85="
    assert format_solution(row) == "\n7+5=12\n4+8+1=13\n3+0+1=4\nAnswer: 432"
    row.prompt = "1000-999="
    assert format_solution(row) == "\n10-9=1\n10-9-1=0\n10-9-1=0\n1-0-1=0\nAnswer: 1"
    row.prompt = "347*6="
    assert format_solution(row) == "\n7*6=42\n4*6+4=28\n3*6+2=20\nAnswer: 2082"
    assert answer_of("347*6=") == 2082


def test_the_fallible_teacher_leaves_out_carries_and_follows_its_own_working():
    row = make_rows(1, 0)[0]
    row.prompt = "347+85="
    always = random.Random(0)
    # Every carry forgotten: 4+8=12 (not 13); the 12 as written carries 1, forgotten again: 3+0=3.
    assert format_solution(row, 1.0, always) == "\n7+5=12\n4+8=12\n3+0=3\nAnswer: 322"
    row.prompt = "347*6="
    assert format_solution(row, 1.0, always) == "\n7*6=42\n4*6=24\n3*6=18\nAnswer: 1842"
    row.prompt = "1000-999="
    assert format_solution(row, 1.0, always) == "\n10-9=1\n10-9=1\n10-9=1\n1-0=1\nAnswer: 1111"
    assert forgotten_carries("\n7+5=12\n4+8=12\n3+0+1=4\nAnswer: 422") == (2, 1)
    assert forgotten_carries("\n7+5=12\n4+8+1=13\n3+0+1=4\nAnswer: 432") == (2, 0)
    assert forgotten_carries("\n10-9=1\n10-9-1=0\n9-9=0\nAnswer: 1") == (2, 1)
    assert forgotten_carries("\n7+5=12\ngarbage\n4+8=12") == (0, 0)


def test_forget_rate_is_per_column_with_a_carry_and_every_forgotten_carry_is_wrong():
    rng = random.Random(1)
    due = forgotten = wrong = 0
    for r in make_rows(2000, seed=3):
        text = format_solution(r, 0.3, rng)
        d, f = forgotten_carries(text)
        due, forgotten = due + d, forgotten + f
        assert (extract_answer(text) != int(r.answer)) == (f > 0)
        wrong += f > 0
        assert forgotten_carries(format_solution(r))[1] == 0
    assert due > 2000 and abs(forgotten / due - 0.3) < 0.03
    assert 0.15 < wrong / 2000 < 0.5
    with pytest.raises(ValueError, match="forget_carry"):
        format_solution(r, 1.5)


def test_train_and_test_never_overlap():
    train = {r.prompt for r in make_rows(5000, seed=0, split="train")}
    test_rows = make_rows(1000, seed=0, split="test")
    test = {r.prompt for r in test_rows}
    assert not train & test
    assert all(split_of(p) == "train" for p in train) and all(split_of(p) == "test" for p in test)
    # Duplicates are avoided where the problem space allows (levels 1-2 are small).
    hard = [r.prompt for r in test_rows if r.extra["level"] >= 3]
    assert len(set(hard)) == len(hard)


@pytest.mark.parametrize("level", range(1, MAX_LEVEL + 1))
def test_difficulty_levels_and_response_lengths(level):
    tok = build_tokenizer()
    rows = make_rows(200, seed=0, difficulty=level)
    assert {r.extra["level"] for r in rows} == {level}
    lengths = [len(tok(format_solution(r), add_special_tokens=False)["input_ids"]) + 1 for r in rows]
    assert max(lengths) <= 49  # EOS included; well under a 64-token generation cap
    assert {r.extra["op"] for r in rows} == {"+", "-", "*"}


def test_mixed_difficulty_and_validation():
    assert {r.extra["level"] for r in make_rows(200, seed=0, difficulty=[1, 3])} == {1, 3}
    with pytest.raises(ValueError):
        make_rows(3, seed=0, difficulty=MAX_LEVEL + 1)
    with pytest.raises(ValueError):
        make_rows(3, seed=0, split="dev")  # type: ignore[arg-type]


def test_extract_answer_takes_the_last_answer_line():
    assert extract_answer("Answer: 3\nAnswer: 5") == 5
    assert extract_answer("7+5=12\nanswer:  -12 ") == -12
    assert extract_answer("Answer: 5\nsomething else") == 5
    assert extract_answer("Answer: 5x") is None
    assert extract_answer("the Answer: 5") is None
    assert extract_answer("") is None
