"""The embedded synthetic task: column-wise integer arithmetic with a verifiable ``Answer:`` line.

A problem is ``a+b``, ``a-b`` (``a >= b``) or ``a*b`` (``b`` one digit, 2-9). Its *level* is the
number of digits of ``a`` (1 to :data:`MAX_LEVEL`); the level sets the difficulty and the length of
the worked solution. The prompt is the bare problem, e.g. ``"347+85="``; the reference solution
(:func:`format_solution`, used as the SFT target) works the columns right to left, one line each,
and ends with the answer line::

    347+85=            <- prompt
    7+5=12             <- response: ones column, carry 1
    4+8+1=13
    3+0+1=4
    Answer: 432

Subtraction lines borrow explicitly (``13-8-1=4``); multiplication lines add the carry
(``4*6+4=28``). A response ends with the tokenizer's EOS token right after the answer line.

``format_solution(row, forget_carry=p)`` writes a fallible teacher's solution instead: each carry
coming into a column is left out with probability ``p`` (``4+8=12`` for ``4+8+1=13``), the working
goes on from the line as written, and the answer line follows the working, so it is wrong. The
embedded warm start imitates such a teacher; :func:`forgotten_carries` measures the habit in any
response (columns with a carry due, and how many of them leave it out).

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
from collections.abc import Callable, Sequence
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


def _column(op: str, x: int, y: int, carry: int) -> tuple[str, int, int, int]:
    """One column: its line's left side, the value written, the digit it contributes, the carry out."""
    if op == "-":
        borrow = 1 if x - y - carry < 0 else 0
        top = x + 10 * borrow
        head = f"{top}-{y}-{carry}" if carry else f"{top}-{y}"
        value = top - y - carry
        return head, value, value, borrow
    value = x * y + carry if op == "*" else x + y + carry
    head = f"{x}{op}{y}+{carry}" if carry else f"{x}{op}{y}"
    return head, value, value % 10, value // 10


def _solution_lines(
    a: int, op: str, b: int, forget_carry: float = 0.0, draw: Callable[[], float] = random.random
) -> tuple[list[str], int]:
    """The column-wise worked solution (one line per digit of ``a``) and the answer it implies.

    At every column that has a carry (or borrow) coming in, ``draw() < forget_carry`` leaves it out:
    the column is worked as if there were none, and the following columns and the answer follow
    the line as written. With ``forget_carry=0`` nothing is drawn and the answer is the true one.
    """
    da, db = _digits(a), _digits(b)
    lines: list[str] = []
    digits: list[int] = []
    carry = 0
    value = 0
    for i, x in enumerate(da):
        if carry and forget_carry > 0.0 and draw() < forget_carry:
            carry = 0
        y = b if op == "*" else db[i] if i < len(db) else 0
        head, value, digit, carry = _column(op, x, y, carry)
        lines.append(f"{head}={value}")
        digits.append(digit)
    # The last line is written whole (its carry is the leading digit); the others give one digit each.
    return lines, int(str(value) + "".join(str(d) for d in reversed(digits[:-1])))


def answer_of(problem: str) -> int:
    """The integer answer of a problem text such as ``"347+85="``."""
    a, op, b = _parse_problem(problem)
    return a + b if op == "+" else a - b if op == "-" else a * b


def format_solution(row: PromptRow, forget_carry: float = 0.0, rng: random.Random | None = None) -> str:
    """The reference response for ``row`` (the SFT target), without the EOS token.

    It starts with a newline (the prompt ends with ``=``) and ends with ``Answer: N``; append the
    tokenizer's EOS token id after it.

    ``forget_carry`` > 0 writes the solution of a fallible teacher instead: at each column with a
    carry or borrow coming in, with that probability (drawn from ``rng``), the carry is left out,
    the working goes on from the line as written and the answer line follows the working (so it is
    wrong). The embedded warm start imitates such a teacher (:mod:`dapo_rl.models.sft`).
    """
    if not isinstance(row.prompt, str):
        raise TypeError("synthetic rows have a plain-text prompt")
    if not 0.0 <= forget_carry <= 1.0:
        raise ValueError(f"forget_carry must be in [0, 1], got {forget_carry}")
    a, op, b = _parse_problem(row.prompt)
    lines, answer = _solution_lines(a, op, b, forget_carry, rng.random if rng is not None else random.random)
    return "\n" + "\n".join([*lines, f"Answer: {answer}"])


_LINE = re.compile(r"^(\d+)([+\-*])(\d+)(?:[+\-](\d+))?=(\d+)$")


def forgotten_carries(text: str) -> tuple[int, int]:
    """``(due, forgotten)``: in a response's column lines, how many columns had a carry (or borrow)
    coming in from the line before, as written, and how many of those leave it out.

    A response that stops following the column format stops being counted at that line.
    """
    due = forgotten = 0
    carry = 0
    for line in text.strip().splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            break
        left, op, _, term, value = match.groups()
        if carry:
            due += 1
            forgotten += term is None
        carry = (int(left) >= 10) if op == "-" else int(value) // 10
    return due, forgotten


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
