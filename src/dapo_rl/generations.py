"""What the model wrote, on disk: training generations, evaluation responses, and ``dapo samples``.

Files in a run directory (one JSON object per line, one line per response):

- ``generations.jsonl``: each training step appends ``logging.generations_per_step`` of its groups,
  always both kept (trained this step) and filtered-out ones when the step had both. Fields:
  ``step``, ``group`` (index among the step's sampled groups), ``kept``, ``age`` (steps the group
  waited in the carry-over buffer), ``version`` (the policy version whose weights generated it:
  step - 1 when synchronous, older with ``async.max_staleness``), ``uid``, ``prompt``, ``ground_truth``, ``sample``, ``response``,
  ``score`` (task score), ``acc``, ``reward`` (shaped: score + overlong penalty), ``advantage``
  (``null`` for a group that was not trained), ``length`` (tokens), ``finish_reason``
  (``eos``/``stop``/``length``).
- ``eval/step_<N>.jsonl``: every evaluation writes all of its responses: ``step``, ``uid``,
  ``prompt``, ``ground_truth``, ``sample``, ``response``, ``score``, ``acc``, ``pred`` (the extracted
  answer, ``null`` when none), ``length``, ``finish_reason``. ``dapo eval -o X.json`` writes the
  same records to ``X.jsonl``.

With several data-parallel ranks, rank 0 writes its own share of the step's groups.
``dapo samples RUN [--step N] [--eval]`` prints them (:func:`samples_from_cli`).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dapo_rl.storage import atomic_write_lines, storage_error

if TYPE_CHECKING:
    from dapo_rl.batch import TrainSample
    from dapo_rl.sampling import Collected, Group

GENERATIONS_FILE = "generations.jsonl"
EVAL_DIR = "eval"


def eval_path(run_dir: Path, step: int) -> Path:
    """``run_dir/eval/step_<step>.jsonl``."""
    return Path(run_dir) / EVAL_DIR / f"step_{step}.jsonl"


def append_jsonl(path: Path, records: Iterable[dict[str, Any]], mode: str = "a") -> None:
    """Append (``mode="w"``: replace the file atomically, so a partial file never passes for a
    whole one) one JSON line per record; values JSON cannot hold are written with ``str``. A failed
    write (disk full) is a :class:`~dapo_rl.errors.StorageError` naming the path (exit code 4)."""
    lines = [json.dumps(rec, default=str) + "\n" for rec in records]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "w":
            atomic_write_lines(path, lines)
            return
        with path.open(mode) as f:
            f.writelines(lines)
    except OSError as exc:
        raise storage_error("the records file", path, exc) from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file; a truncated last line (a killed run) is ignored."""
    records = []
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not valid JSON") from None
    return records


# ---- training generations --------------------------------------------------------------------------


def pick_groups(
    trained: Sequence[Group], generated: Sequence[Group], n: int, seed: int
) -> list[tuple[Group, bool]]:
    """``n`` groups of a step as ``(group, kept)``: half kept (trained), half filtered out when the
    step has both, the rest from whichever side has more; drawn with a seeded generator."""
    ids = {id(g) for g in trained}
    dropped = [g for g in generated if id(g) not in ids]
    rng = random.Random(seed)
    n_kept = min(len(trained), max((n + 1) // 2, n - len(dropped)))
    n_dropped = min(len(dropped), n - n_kept)
    kept_idx = sorted(rng.sample(range(len(trained)), n_kept))
    drop_idx = sorted(rng.sample(range(len(dropped)), n_dropped))
    return [(trained[i], True) for i in kept_idx] + [(dropped[i], False) for i in drop_idx]


def step_records(
    step: int, collected: Collected, samples: Sequence[TrainSample], n: int, seed: int = 0
) -> list[dict[str, Any]]:
    """The ``generations.jsonl`` records of one step: ``n`` groups (:func:`pick_groups`) with the
    advantages of the trained ones (``samples`` are the step's TrainSamples in group order)."""
    advantages: dict[int, list[float]] = {}
    offset = 0
    for g in collected.groups:
        advantages[id(g)] = [s.advantage for s in samples[offset : offset + len(g.responses)]]
        offset += len(g.responses)
    records = []
    for index, (g, kept) in enumerate(pick_groups(collected.groups, collected.generated, n, seed + step)):
        adv = advantages.get(id(g)) if kept else None
        for j, resp in enumerate(g.responses):
            records.append(
                {
                    "step": step,
                    "group": index,
                    "kept": kept,
                    "age": g.age,
                    "version": g.version,
                    "uid": g.row.uid,
                    "prompt": g.row.prompt,
                    "ground_truth": g.row.answer,
                    "sample": j,
                    "response": resp.text,
                    "score": g.scores[j],
                    "acc": bool(g.accs[j]),
                    "reward": g.rewards[j],
                    "advantage": adv[j] if adv else None,
                    "length": resp.length,
                    "finish_reason": resp.finish_reason,
                }
            )
    return records


# ---- evaluation responses --------------------------------------------------------------------------


def eval_records(result: dict[str, Any], step: int | None = None) -> list[dict[str, Any]]:
    """One record per response of an evaluation result whose problems carry their ``texts`` (see
    :func:`dapo_rl.evaluation.evaluate` with ``EvalSpec(keep_texts=True)``)."""
    records = []
    for prob in result.get("problems", []):
        texts = prob.get("texts") or []
        for j, text in enumerate(texts):
            records.append(
                {
                    "step": step,
                    "uid": prob["uid"],
                    "prompt": prob.get("prompt"),
                    "ground_truth": prob["answer"],
                    "sample": j,
                    "response": text,
                    "score": prob["scores"][j] if "scores" in prob else None,
                    "acc": bool(prob["correct"][j]),
                    "pred": prob["preds"][j],
                    "length": prob["response_tokens"][j],
                    "finish_reason": prob["finish_reasons"][j] if "finish_reasons" in prob else None,
                }
            )
    return records


RESPONSE_FIELDS = ("prompt", "texts", "scores", "finish_reasons")
"""Per-problem fields of an evaluation result that hold texts; left out of the JSON summary."""


def without_responses(result: dict[str, Any]) -> dict[str, Any]:
    """The result with the response texts taken out of each problem (they go to the JSONL file)."""
    if "problems" not in result:
        return result
    problems = [{k: v for k, v in p.items() if k not in RESPONSE_FIELDS} for p in result["problems"]]
    return {**result, "problems": problems}


# ---- dapo samples ----------------------------------------------------------------------------------


class _Style:
    """ANSI colours, or nothing when the output is not a terminal."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # chat messages
        return "\n".join(
            f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt if isinstance(m, dict)
        )
    return str(prompt)


def _num(x: Any, signed: bool = True) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "-"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _wrap(text: str, width: int, indent: str) -> str:
    lines = []
    for para in text.splitlines() or [""]:
        lines += textwrap.wrap(
            para, width - len(indent), replace_whitespace=False, drop_whitespace=False
        ) or [""]
    return "\n".join(indent + line for line in lines)


def format_groups(records: list[dict[str, Any]], width: int = 100, color: bool = False) -> str:
    """Records grouped by problem: a header (step, uid, ground truth, kept), the prompt, then each
    response with its reward numbers on the line above it."""
    st = _Style(color)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec.get("step"), rec.get("group"), rec["uid"]), []).append(rec)
    out = []
    for (step, _, uid), recs in groups.items():
        head = f"step {step}  {uid}  ground truth: {recs[0].get('ground_truth')}"
        if "kept" in recs[0]:
            head += "  " + (st("kept", "32") if recs[0]["kept"] else st("filtered out", "33"))
        if "version" in recs[0]:  # the weights that generated it (async: staleness = step - 1 - version)
            head += f"  version {recs[0]['version']}"
        n_right = sum(bool(r.get("acc")) for r in recs)
        out += [st("=" * min(width, 100), "2"), st(head, "1") + f"  ({n_right}/{len(recs)} correct)"]
        out += [st("prompt:", "36"), _wrap(_prompt_text(recs[0].get("prompt")), width, "  ")]
        for r in recs:
            mark = st("✓ right", "32") if r.get("acc") else st("✗ wrong", "31")
            meta = [f"#{r.get('sample')}", mark, f"score {_num(r.get('score'))}"]
            if "reward" in r:
                meta.append(f"reward {_num(r.get('reward'))}")
            if r.get("advantage") is not None:
                meta.append(f"adv {_num(r['advantage'])}")
            if "pred" in r:
                meta.append("no answer" if r["pred"] is None else f"answer {r['pred']!r}")
            meta.append(f"{r.get('length')} tok, {r.get('finish_reason')}")
            out += ["  " + "  ".join(meta), _wrap(r.get("response", ""), width, "    ")]
    return "\n".join(out)


def _latest_eval(run: Path) -> Path:
    files = sorted((run / EVAL_DIR).glob("step_*.jsonl"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise FileNotFoundError(f"no evaluation files in {run / EVAL_DIR} (the run has not evaluated yet)")
    return files[-1]


def select_records(run: Path, step: int | None, eval_: bool) -> tuple[list[dict[str, Any]], str]:
    """The records ``dapo samples`` shows, and where they came from.

    ``run`` is a run directory or a JSONL file (e.g. the one ``dapo eval -o`` writes). Training
    generations: the given step, else the last one logged. ``--eval``: ``eval/step_<N>.jsonl`` of
    the given step, else the latest evaluation.
    """
    run = Path(run)
    if run.is_file():
        records = read_jsonl(run)
        if step is not None:
            records = [r for r in records if r.get("step") == step]
        return records, str(run)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory or JSONL file at {run}")
    if eval_:
        path = eval_path(run, step) if step is not None else _latest_eval(run)
        if not path.is_file():
            raise FileNotFoundError(f"no evaluation at step {step}: {path} does not exist")
        return read_jsonl(path), str(path)
    path = run / GENERATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist (runs write it from logging.generations_per_step > 0)"
        )
    records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path} is empty")
    want = step if step is not None else max(r["step"] for r in records)
    chosen = [r for r in records if r.get("step") == want]
    if not chosen:
        steps = sorted({r["step"] for r in records})
        raise ValueError(f"no generations at step {want} in {path}; logged steps: {steps[0]}..{steps[-1]}")
    return chosen, f"{path} step {want}"


def samples_from_cli(run: str, step: int | None, eval_: bool, limit: int, color: bool | None = None) -> int:
    """``dapo samples``: print the chosen records, at most ``limit`` problems/groups."""
    records, source = select_records(Path(run), step, eval_)
    color = sys.stdout.isatty() if color is None else color
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    keys = list(dict.fromkeys((r.get("step"), r.get("group"), r["uid"]) for r in records))
    shown = [r for r in records if (r.get("step"), r.get("group"), r["uid"]) in set(keys[:limit])]
    print(f"{source}: {len(keys)} problem(s), {len(records)} response(s)")
    print(format_groups(shown, width, color))
    if len(keys) > limit:
        print(f"... {len(keys) - limit} more problem(s): raise --limit to see them")
    return 0
