"""A custom reward and a custom group filter on the embedded synthetic task, from Python.

    python examples/custom_reward.py                  # 30 steps on the warm-started tiny model
    python examples/custom_reward.py train.total_steps=2 model.path=DIR   # any override

The reward gives full credit for the right answer and half credit when only the last digit is right
(a shaped signal for the tiny model); the filter keeps groups that are neither all right nor all
wrong AND have at least one response that finished (no truncation).
"""

from __future__ import annotations

import re
import sys

import dapo_rl
from dapo_rl import GroupView, RewardResult

ANSWER = re.compile(r"^answer:\s*(-?\d+)\s*$", re.IGNORECASE | re.MULTILINE)


def partial_credit(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """+1 for the right integer on the last ``Answer:`` line, +0.5 for the right last digit, else -1."""
    found = ANSWER.findall(response)
    if not found:
        return RewardResult(score=-1.0, acc=False, pred=None)
    pred = found[-1]
    if int(pred) == int(ground_truth):
        return RewardResult(score=1.0, acc=True, pred=pred)
    return RewardResult(score=0.5 if pred[-1] == ground_truth[-1] else -1.0, acc=False, pred=pred)


def mixed_and_finished(group: GroupView) -> bool:
    """Keep a group when 0 < mean(acc) < 1 and some response ended before the length cap."""
    right = sum(group.accs)
    return 0 < right < len(group.accs) and min(group.lengths) < 64


def main(overrides: list[str]) -> dict:
    cfg = dapo_rl.load_config("tiny", ["train.total_steps=30", "logging.run_name=custom_reward", *overrides])
    summary = dapo_rl.train(cfg, reward_fn=partial_credit, group_filter=mixed_and_finished)
    print(f"held-out before {summary['heldout_before']}, after {summary['heldout_after']}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
