"""The embedded synthetic task: column-wise integer arithmetic with a verifiable ``Answer:`` line.

A problem is ``a+b``, ``a-b`` (``a >= b``) or ``a*b`` (``b`` one digit, 2-9). Its *level* is the
number of digits of ``a`` (1 to :data:`MAX_LEVEL`); the level sets the difficulty and the length of
the worked solution. The prompt is the bare problem, e.g. ``"347+85="``; the reference solution
(:func:`format_solution`, used as the SFT target) works the columns right to left, one line each,
and ends with the answer line::

    347+85=            <- prompt
    7+5=12             <- response: ones column, carry 1
    4+8+1=13
    3+1=4
    Answer: 432

Subtraction lines borrow explicitly (``13-8-1=4``); multiplication lines add the carry
(``4*6+4=28``). A response ends with the tokenizer's EOS token right after the answer line.

Checking rule (the ``synthetic`` reward): the last line of the form ``Answer: N`` is the prediction,
compared with the ground truth as an integer. :func:`extract_answer` implements exactly that.

Train and test never overlap: every problem is assigned to a split by a hash of its text
(:func:`split_of`, :data:`TEST_FRACTION` of the problem space is held out), and ``make_rows``
rejects problems of the other split.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import Literal

from dapo_rl.data.types import PromptRow

#: Bump when the problem distribution or the solution format changes (invalidates cached SFT models).
TASK_VERSION = "arith-v1"
#: Largest level (digits of the first operand).
MAX_LEVEL = 4
#: Levels drawn (uniformly) when ``difficulty`` is not given: the RL and evaluation default. Level 1
#: (single-digit facts) is in the SFT mixture but too easy for RL (its groups are all right).
DEFAULT_LEVELS: tuple[int, ...] = (2, 3, 4)
#: Levels of the SFT warm-start data.
SFT_LEVELS: tuple[int, ...] = (1, 2, 3, 4)
#: Operations and their sampling weights.
OPS: tuple[str, ...] = ("+", "-", "*")
OP_WEIGHTS: tuple[float, ...] = (0.4, 0.3, 0.3)
#: Fraction of the problem space held out for the test split.
TEST_FRACTION = 0.1

Split = Literal["train", "test"]

_ANSWER_LINE = re.compile(r"^\s*answer:\s*(-?\d+)\s*$", re.IGNORECASE)


def split_of(problem: str) -> Split:
    """The split a problem text (e.g. ``"347+85="``) belongs to, by a stable hash."""
    digest = hashlib.blake2b(problem.encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") / 2**64
    return "test" if bucket < TEST_FRACTION else "train"


def _digits(x: int) -> list[int]:
    """Decimal digits of ``x >= 0``, least significant first."""
    return [int(c) for c in reversed(str(x))]


def _problem_text(a: int, op: str, b: int) -> str:
    return f"{a}{op}{b}="


def _sample_problem(rng: random.Random, level: int) -> tuple[int, str, int]:
    op = rng.choices(OPS, weights=OP_WEIGHTS)[0]
    lo = 0 if level == 1 else 10 ** (level - 1)
    a = rng.randint(lo, 10**level - 1)
    if op == "*":
        b = rng.randint(2, 9)
    elif op == "-":
        b = rng.randint(0, a)
    else:
        b_level = rng.randint(1, level)
        b = rng.randint(0 if b_level == 1 else 10 ** (b_level - 1), 10**b_level - 1)
    return a, op, b


def _parse_problem(text: str) -> tuple[int, str, int]:
    match = re.fullmatch(r"(\d+)([+\-*])(\d+)=", text.strip())
    if match is None:
        raise ValueError(f"not a synthetic arithmetic problem: {text!r}")
    return int(match.group(1)), match.group(2), int(match.group(3))


def _solution_lines(a: int, op: str, b: int) -> list[str]:
    """The column-wise worked solution, one line per digit of ``a``."""
    da, db = _digits(a), _digits(b)
    lines: list[str] = []
    carry = 0
    for i, x in enumerate(da):
        if op == "*":
            value = x * b + carry
            lines.append(f"{x}*{b}+{carry}={value}" if carry else f"{x}*{b}={value}")
            carry = value // 10
        elif op == "+":
            y = db[i] if i < len(db) else 0
            value = x + y + carry
            lines.append(f"{x}+{y}+{carry}={value}" if carry else f"{x}+{y}={value}")
            carry = value // 10
        else:
            y = db[i] if i < len(db) else 0
            borrow = 1 if x - y - carry < 0 else 0
            top = x + 10 * borrow
            value = top - y - carry
            lines.append(f"{top}-{y}-{carry}={value}" if carry else f"{top}-{y}={value}")
            carry = borrow
    return lines


def answer_of(problem: str) -> int:
    """The integer answer of a problem text such as ``"347+85="``."""
    a, op, b = _parse_problem(problem)
    return a + b if op == "+" else a - b if op == "-" else a * b


def format_solution(row: PromptRow) -> str:
    """The reference response for ``row`` (the SFT target), without the EOS token.

    It starts with a newline (the prompt ends with ``=``) and ends with ``Answer: N``; append the
    tokenizer's EOS token id after it.
    """
    if not isinstance(row.prompt, str):
        raise TypeError("synthetic rows have a plain-text prompt")
    a, op, b = _parse_problem(row.prompt)
    return "\n" + "\n".join([*_solution_lines(a, op, b), f"Answer: {answer_of(row.prompt)}"])


def extract_answer(text: str) -> int | None:
    """The prediction in a response: the last line of the form ``Answer: N``, or ``None``."""
    for line in reversed(text.splitlines()):
        match = _ANSWER_LINE.match(line)
        if match is not None:
            return int(match.group(1))
    return None


def _levels(difficulty: int | Sequence[int] | None) -> tuple[int, ...]:
    if difficulty is None:
        levels: tuple[int, ...] = DEFAULT_LEVELS
    elif isinstance(difficulty, int):
        levels = (difficulty,)
    else:
        levels = tuple(difficulty)
    bad = [lv for lv in levels if not isinstance(lv, int) or not 1 <= lv <= MAX_LEVEL]
    if not levels or bad:
        raise ValueError(f"difficulty levels must be integers in 1..{MAX_LEVEL}, got {difficulty!r}")
    return levels


def make_rows(
    n: int,
    seed: int,
    split: Split = "train",
    difficulty: int | Sequence[int] | None = None,
) -> list[PromptRow]:
    """``n`` problems of ``split``, reproducible from ``seed``.

    ``difficulty`` is a level (1-4, the digits of the first operand), a sequence of levels drawn
    uniformly, or ``None`` for :data:`DEFAULT_LEVELS`. Duplicates within the returned list are
    avoided while the problem space allows (level 1 has only a few hundred problems).
    ``answer`` is the integer as a string; ``extra`` holds ``level``, ``op``, ``a``, ``b`` and
    ``task_version``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    levels = _levels(difficulty)
    rng = random.Random(f"{TASK_VERSION}:{split}:{seed}")
    rows: list[PromptRow] = []
    seen: set[str] = set()
    while len(rows) < n:
        level = rng.choice(levels)
        for attempt in range(200):
            a, op, b = _sample_problem(rng, level)
            text = _problem_text(a, op, b)
            if split_of(text) == split and (text not in seen or attempt >= 100):
                break
        else:  # pragma: no cover - every level has problems in both splits
            raise RuntimeError(f"could not sample a {split} problem at level {level}")
        seen.add(text)
        rows.append(
            PromptRow(
                prompt=text,
                answer=str(answer_of(text)),
                uid=f"synthetic-{split}-s{seed}:{len(rows)}",
                extra={"level": level, "op": op, "a": a, "b": b, "task_version": TASK_VERSION},
            )
        )
    return rows
