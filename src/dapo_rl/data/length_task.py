"""The *length* task: the synthetic arithmetic problems, solved by a teacher that rambles.

The problems, splits, checking rule and reward are those of :mod:`dapo_rl.data.synthetic` (the
``synthetic`` reward: the last ``Answer: N`` line). Only the warm start differs: its teacher, after
writing its column-wise working, writes the whole working again ("checks it") with probability
``ramble``, and again with the same probability, up to :data:`MAX_REPEATS` extra copies, then the
answer line. A copy repeats the working as first written (its forgotten carries included)::

    47+85=          <- prompt
    7+5=12          <- working
    4+8+1=13
    7+5=12          <- the same working again (probability ramble)
    4+8+1=13
    Answer: 132

The answer comes last, so a response that rambles past the generation cap (64 tokens in the
``length`` preset) has no answer line and scores -1. Without rambling the longest solution is 49
tokens (EOS included), well within the cap; with ``ramble=0.6`` about a third of the teacher's
solutions to the RL problems (levels 2-4) are longer than 64 tokens (:func:`teacher_lengths`). The
warm model imitates the habit, so a real share of its responses hit the cap: the setting the
paper's overlong filtering, soft overlong punishment and token-level loss are for.

:func:`repeats` measures the habit in any response: how many extra copies of its first working
block it writes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dapo_rl.data import synthetic
from dapo_rl.data.types import PromptRow

#: Task names ``data.synthetic.task`` accepts.
TASKS: tuple[str, ...] = ("arith", "length")
#: Most extra copies of the working the rambling teacher writes.
MAX_REPEATS = 3
#: The ``length`` task's default probability of writing the working once more.
DEFAULT_RAMBLE = 0.6


def ramble_solution(text: str, ramble: float, rng: random.Random) -> str:
    """``text`` (a :func:`~dapo_rl.data.synthetic.format_solution` response) with its working
    written ``k`` more times before the answer line, ``k`` drawn from ``rng``: each further copy
    with probability ``ramble``, at most :data:`MAX_REPEATS`. ``ramble=0`` returns ``text``."""
    if not 0.0 <= ramble < 1.0:
        raise ValueError(f"ramble must be in [0, 1), got {ramble}")
    body, answer = text.rsplit("\n", 1)
    if not answer.startswith("Answer:"):
        raise ValueError(f"not a worked solution ending in an answer line: {text!r}")
    k = 0
    while ramble > 0.0 and k < MAX_REPEATS and rng.random() < ramble:
        k += 1
    return body * (k + 1) + "\n" + answer


def teacher_solution(row: PromptRow, forget_carry: float, ramble: float, rng: random.Random) -> str:
    """The warm start's SFT target for ``row``: the fallible teacher's working (carries left out
    with probability ``forget_carry``), rambled with probability ``ramble`` (no EOS)."""
    return ramble_solution(synthetic.format_solution(row, forget_carry, rng), ramble, rng)


def repeats(text: str) -> int:
    """Extra copies of the first working block in a response, counted while they repeat it whole.

    The working block is the run of column lines before the first line that repeats the first
    column line (or before the answer line); ``"\\n7+5=12\\n7+5=12\\nAnswer: 12"`` has 1.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    working: list[str] = []
    for line in lines:
        if line.lower().startswith("answer") or (working and line == working[0]):
            break
        working.append(line)
    if not working:
        return 0
    n, at = 0, len(working)
    while lines[at : at + len(working)] == working:
        n += 1
        at += len(working)
    return n


def teacher_lengths(
    rows: Sequence[PromptRow], tokenizer: object, forget_carry: float, ramble: float, seed: int = 0
) -> list[int]:
    """Tokens (EOS included) of the teacher's response to each row, drawn reproducibly."""
    rng = random.Random(f"teacher:{seed}")
    texts = [teacher_solution(r, forget_carry, ramble, rng) for r in rows]
    return [len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # type: ignore[operator]


def warm_start_recipe(task_cfg: object) -> dict[str, float]:
    """The :func:`~dapo_rl.models.sft.ensure_warm_model` arguments of ``data.synthetic``'s task:
    none for ``arith`` (the default warm start), the rambling teacher's for ``length``."""
    if getattr(task_cfg, "task", "arith") == "length":
        return {"ramble": float(task_cfg.ramble)}  # type: ignore[attr-defined]
    return {}
