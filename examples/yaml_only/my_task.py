"""User code for the YAML-only example: a dataset, a reward, a group filter and a prompt template,
each named in config.yaml by ``my_task.py:NAME`` (paths are relative to the YAML file)."""

from __future__ import annotations

from dapo_rl.data.synthetic import make_rows

#: A template string with one {problem}; the tiny model was trained on bare problems.
TEMPLATE = "{problem}"


def load(split: str) -> list[dict]:
    """Addition problems only, as plain dicts (prompt, answer, and an extra field)."""
    rows = make_rows(400 if split == "train" else 40, seed=1, split="train" if split == "train" else "test")
    return [
        {"prompt": r.prompt, "answer": r.answer, "uid": r.uid, "op": "+"}
        for r in rows
        if isinstance(r.prompt, str) and "+" in r.prompt
    ]


def exact(response: str, ground_truth: str, op: str = "?") -> float:
    """+1 when the last line reads ``Answer: <ground truth>``, else -1 (a float: acc = score > 0).
    ``op`` arrives from the row's extra fields because the signature names it."""
    lines = [line.strip() for line in response.strip().splitlines()]
    return 1.0 if lines and lines[-1].lower() == f"answer: {ground_truth}" else -1.0


def keep_informative(group) -> bool:
    """The default rule, written by hand: some but not all responses right."""
    return 0 < sum(group.accs) < len(group.accs)
