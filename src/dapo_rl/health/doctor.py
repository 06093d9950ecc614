"""``dapo doctor RUN_DIR``: a short diagnosis of a run directory, finished, running or killed
(docs/health.md).

It reads what the run wrote (``config.yaml``, ``metrics.jsonl``, ``health.jsonl``, ``summary.json``,
``checkpoints/``) and prints: where the run stands, the ledger's shares over the run, the guard's
findings with their steps, and the trends of entropy, response length against the cap, the
dynamic-sampling keep rate and the training-inference mismatch, each judged, then a verdict line.
Trends compare the first quarter of the logged steps with the last quarter (one step each at least).

Exit codes: 0 healthy, :data:`EXIT_UNHEALTHY` (6) when a finding or a judged trend says the run is not
learning as it should, 2 when the directory is not a run's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dapo_rl import metric_names as M
from dapo_rl.health.ledger import format_shares, ledger_shares
from dapo_rl.plots import read_metrics
from dapo_rl.storage import RUN_MARKER, is_run_dir

EXIT_UNHEALTHY = 6
FINDINGS_FILE = "health.jsonl"
MIN_LIVE_SHARE = 0.05
"""Less than this share of the run's tokens carrying gradient is a problem."""
MIN_KEEP_RATE = 0.1
"""A keep rate below this at the end: dynamic sampling finds almost no informative group."""
MAX_MISMATCH = 0.05
"""A mean |log-prob| gap between engine and trainer above this at the end is a problem."""


@dataclass
class Diagnosis:
    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, label: str, text: str, problem: str | None = None) -> None:
        self.lines.append((label, text))
        if problem:
            self.problems.append(problem)

    def render(self, run_dir: Path) -> str:
        verdict = (
            "healthy: nothing found that stops this run from learning"
            if not self.problems
            else f"{len(self.problems)} problem(s): " + "; ".join(self.problems)
        )
        rows = [*self.lines, ("verdict", verdict)]
        return "\n".join([f"dapo doctor {run_dir}", *(f"  {label:<11}{text}" for label, text in rows)])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _trend(steps: list[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """(mean over the first quarter, mean over the last quarter) of ``key`` where logged."""
    values = [r[key] for r in steps if isinstance(r.get(key), (int, float))]
    if not values:
        return None
    q = max(1, len(values) // 4)
    return _mean(values[:q]), _mean(values[-q:])  # type: ignore[return-value]


def _load_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _newest_checkpoint(run_dir: Path) -> int | None:
    done = [p for p in (run_dir / "checkpoints").glob("step_*") if (p / "COMPLETE").exists()]
    return max((int(p.name.removeprefix("step_")) for p in done), default=None)


def diagnose(run_dir: Path) -> tuple[str, int]:
    """The report and the exit code for ``run_dir``."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not is_run_dir(run_dir):  # only what a run itself writes makes a folder a run's
        raise FileNotFoundError(
            f"not a run directory (no {RUN_MARKER}, metrics.jsonl or checkpoints/): {run_dir}"
        )
    cfg = _load_config(run_dir)
    records = read_metrics(metrics) if metrics.is_file() else []
    steps = [r for r in records if M.REWARD_MEAN in r or M.LEDGER_TOKENS in r]
    total = (cfg.get("train") or {}).get("total_steps")
    cap = (cfg.get("rollout") or {}).get("max_response_tokens")
    health = cfg.get("health") or {}
    d = Diagnosis()
    _state(d, run_dir, steps, total)
    shares = ledger_shares(steps)
    if shares:
        live = shares.get("live", 0.0)
        problem = None
        if live < MIN_LIVE_SHARE:
            problem = f"only {100 * live:.1f}% of the response tokens carried gradient (ledger)"
        d.add("ledger", format_shares(shares, 0.0005) + f"  (over {len(steps)} steps)", problem)
    _findings(d, run_dir)
    _entropy(d, steps)
    _length(d, steps, cap, float(health.get("max_truncated_frac", 0.9)))
    _keep_rate(d, steps)
    _mismatch(d, steps)
    _heldout(d, records, steps, float(health.get("hacking_drop", 0.05)))
    return d.render(run_dir), EXIT_UNHEALTHY if d.problems else 0


def _state(d: Diagnosis, run_dir: Path, steps: list[dict[str, Any]], total: int | None) -> None:
    last = max((int(r["step"]) for r in steps), default=0)
    ckpt = _newest_checkpoint(run_dir)
    saved = f"newest checkpoint step {ckpt}" if ckpt is not None else "no checkpoint"
    summary = run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        how = "stopped early by " + str(s.get("stopped_by")) if s.get("stopped_early") else "finished"
        d.add("state", f"{how} at step {s.get('steps')} of {total} ({saved})")
    else:
        d.add(
            "state",
            f"not finished: last logged step {last} of {total}, {saved} (killed, stopped by an error, or "
            "still running; dapo train --resume RUN_DIR continues it)",
        )


def _findings(d: Diagnosis, run_dir: Path) -> None:
    path = run_dir / FINDINGS_FILE
    found = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:  # a run killed mid-write
                continue
    if not found:
        d.add("findings", "none from the health guard")
        return
    for i, f in enumerate(found):
        d.add(
            "findings" if i == 0 else "",
            f"step {f.get('step')}: {f.get('sentence')}",
            f"guard: {f.get('kind')}",
        )


def _entropy(d: Diagnosis, steps: list[dict[str, Any]]) -> None:
    t = _trend(steps, M.LOSS_ENTROPY)
    if t is None:
        return
    a, b = t
    problem, word = None, "steady"
    if a > 0 and b < 0.3 * a:
        word, problem = "collapsing", f"entropy collapsed from {a:.3g} to {b:.3g} nats/token"
    elif a > 0 and b > 3 * a:
        word, problem = "exploding", f"entropy exploded from {a:.3g} to {b:.3g} nats/token"
    d.add("entropy", f"{a:.3g} -> {b:.3g} nats/token: {word}", problem)


def _length(d: Diagnosis, steps: list[dict[str, Any]], cap: int | None, max_truncated: float) -> None:
    t, tr = _trend(steps, M.ROLLOUT_RESPONSE_LEN_MEAN), _trend(steps, M.ROLLOUT_TRUNCATED_FRAC)
    if t is None:
        return
    text = f"mean {t[0]:.1f} -> {t[1]:.1f} tokens" + (f" of cap {cap}" if cap else "")
    problem = None
    if tr is not None:
        text += f"; truncated {100 * tr[0]:.0f}% -> {100 * tr[1]:.0f}%"
        if tr[1] >= max_truncated:
            text += ": at the cap"
            problem = f"{100 * tr[1]:.0f}% of the responses hit the cap at the end (raise rollout.max_response_tokens)"
        elif tr[1] > 2 * tr[0] + 0.05:
            text += ": growing toward the cap"
    d.add("length", text, problem)


def _keep_rate(d: Diagnosis, steps: list[dict[str, Any]]) -> None:
    t = _trend(steps, M.SAMPLING_KEEP_RATE)
    if t is None:
        return
    a, b = t
    last = steps[-max(1, len(steps) // 4) :]
    correct = sum(r.get(M.SAMPLING_GROUPS_ALL_CORRECT, 0) for r in last)
    wrong = sum(r.get(M.SAMPLING_GROUPS_ALL_WRONG, 0) for r in last)
    why = (
        "the task is getting saturated (more all-correct groups)"
        if correct > wrong
        else "the task is too hard (more all-wrong groups)"
    )
    text, problem = f"{a:.2f} -> {b:.2f}", None
    if b < MIN_KEEP_RATE:
        text += f": almost no informative group; {why}"
        problem = f"keep rate {b:.2f} at the end: {why}"
    elif b < 0.5 * a:
        text += f": falling; {why}"
    d.add("keep rate", text, problem)


def _mismatch(d: Diagnosis, steps: list[dict[str, Any]]) -> None:
    t = _trend(steps, M.ROLLOUT_LOGPROB_ABS_DIFF_MEAN)
    if t is None:
        d.add(
            "mismatch",
            "not logged (the engine returns no log-probs: rollout.engine=hf samples from the policy)",
        )
        return
    a, b = t
    text, problem = f"mean |log-prob gap| engine vs trainer {a:.2g} -> {b:.2g}", None
    if b > MAX_MISMATCH:
        text += ": too large"
        problem = f"the rollout engine's log-probs differ from the trainer's by {b:.2g} on average"
    elif b > 10 * a and b > 1e-3:
        text += ": rising"
    d.add("mismatch", text, problem)


def _heldout(d: Diagnosis, records: list[dict[str, Any]], steps: list[dict[str, Any]], drop: float) -> None:
    """The first and last held-out avg@k against the training reward: a rising reward with a
    falling held-out accuracy is the reward-hacking signal."""
    evals = [
        (int(r["step"]), r[M.EVAL_AVG_AT_K])
        for r in records
        if isinstance(r.get(M.EVAL_AVG_AT_K), (int, float))
    ]
    if len(evals) < 2:
        return
    (s0, e0), (s1, e1) = evals[0], evals[-1]
    text, problem = f"avg@k {e0:.3f} (step {s0}) -> {e1:.3f} (step {s1})", None
    reward = _trend(steps, M.REWARD_MEAN)
    if reward is not None:
        text += f"; training reward {reward[0]:.3f} -> {reward[1]:.3f}"
        if reward[1] > reward[0] and e0 - e1 > drop:
            text += ": the reward rises while held-out accuracy falls"
            problem = "training reward up, held-out accuracy down: the policy may be exploiting the reward"
    d.add("held-out", text, problem)
