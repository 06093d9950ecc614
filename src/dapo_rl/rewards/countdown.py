"""Countdown (the TinyZero task): reach a target with the given numbers and + - * / (score 1 / 0.1 / 0).

The ground truth is ``{"numbers": [...], "target": n}``. It arrives as compact JSON text (how the
data readers and ``dapo_rl.train(train_rows=...)`` both pass a dict ground truth, docs/extending.md)
or as the dict itself. The rule, as in TinyZero's countdown score:

- the prediction is the equation inside the LAST ``<answer> ... </answer>`` of the response;
- format: the equation holds only integers, ``+ - * /``, parentheses and spaces, and parses as an
  arithmetic expression. No answer tag or a malformed equation scores 0 (``pred`` None);
- correct: it uses each given number exactly once (as a multiset: the same numbers, each as often
  as given) and evaluates to the target. Correct scores 1.0 (``acc`` True); a well-formed but wrong
  equation scores 0.1, TinyZero's format reward.

Arithmetic is exact (fractions), so ``(1 + 2) / 3`` is exactly 1; division by zero is wrong. The
equation is evaluated by walking its syntax tree with only these operators, never with ``eval``.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.traits import reward_traits

CORRECT_SCORE = 1.0
FORMAT_SCORE = 0.1
"""Score of a well-formed equation that is wrong (TinyZero's format reward)."""

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ALLOWED = re.compile(r"[\d+\-*/() \t\n]+")
_MAX_DIGITS = 12
"""Longer literals are not Countdown numbers (and would make exact arithmetic slow)."""

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def parse_ground_truth(ground_truth: str | Mapping[str, Any]) -> tuple[list[int], int]:
    """``(numbers, target)`` from ``{"numbers": [...], "target": n}`` as JSON text or a mapping."""
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if not isinstance(truth, Mapping) or "numbers" not in truth or "target" not in truth:
        raise ValueError(
            f"countdown ground truth must be {{'numbers': [...], 'target': n}}, got {ground_truth!r:.80}"
        )
    return [int(n) for n in truth["numbers"]], int(truth["target"])


def extract_equation(response: str) -> str | None:
    """The text of the last ``<answer>...</answer>`` block, stripped (None when there is none)."""
    found = _ANSWER.findall(response)
    return found[-1].strip() if found else None


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    """Exact value of an arithmetic syntax tree; integer literals are appended to ``used``."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, used)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand, used)
        return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"not allowed in a countdown equation: {type(node).__name__}")


def evaluate_equation(equation: str) -> tuple[Fraction, list[int]] | None:
    """``(value, numbers used)`` of a well-formed equation, None when it is malformed.

    Raises ``ZeroDivisionError`` for a well-formed equation that divides by zero.
    """
    if not equation or not _ALLOWED.fullmatch(equation) or re.search(rf"\d{{{_MAX_DIGITS + 1},}}", equation):
        return None
    try:
        tree = ast.parse(equation, mode="eval")
    except SyntaxError:
        return None
    used: list[int] = []
    try:
        value = _evaluate(tree, used)
    except ValueError:
        return None
    return value, used


@reward_traits(wrong_score=0.0, isolate=False)
def countdown_reward(response: str, ground_truth: str | Mapping[str, Any], **extra: object) -> RewardResult:
    """1.0 for an equation that uses each given number once and hits the target, 0.1 for a
    well-formed wrong one, 0 without a well-formed ``<answer>`` (module docstring)."""
    numbers, target = parse_ground_truth(ground_truth)
    equation = extract_equation(response)
    if equation is None:
        return RewardResult(score=0.0, acc=False, pred=None, info={"format": "no <answer> tag"})
    try:
        parsed = evaluate_equation(equation)
    except ZeroDivisionError:
        return RewardResult(score=FORMAT_SCORE, acc=False, pred=equation, info={"wrong": "division by zero"})
    if parsed is None:
        return RewardResult(
            score=0.0, acc=False, pred=None, info={"format": f"malformed equation {equation!r}"}
        )
    value, used = parsed
    if Counter(used) != Counter(numbers):
        return RewardResult(
            score=FORMAT_SCORE, acc=False, pred=equation, info={"wrong": "numbers not used once"}
        )
    if value != target:
        return RewardResult(score=FORMAT_SCORE, acc=False, pred=equation, info={"wrong": f"equals {value}"})
    return RewardResult(score=CORRECT_SCORE, acc=True, pred=equation)
