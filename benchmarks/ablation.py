"""The DAPO paper's ablation at laptop scale: its Table 1 progression and each piece removed from DAPO.

    GRPO -> +overlong filtering -> +clip-higher -> +soft overlong punishment -> +token-level loss
         -> +dynamic sampling (= DAPO);        DAPO - each piece

Arms (``--arms``): ``grpo``, ``+filter``, ``+clip``, ``+soft``, ``+token``, ``dapo`` (the progression,
each adding one piece to the arm before), ``no-filter``, ``no-clip``, ``no-soft``, ``no-token``,
``no-dynamic`` (DAPO with one piece off), or the groups ``progression``, ``removal``, ``all``. Every arm starts
from the same warm model of the task (``--task``: ``arith``, the default ``dapo train`` task, or
``length``, whose warm model rambles past the response cap: ``--config length``) and gets the same
budget: ``--steps`` training steps (the default), or ``--budget`` generated tokens (each run stops
at the first step that reaches it). Both are recorded per run.

Measured per run: held-out avg@k (with its bootstrap interval), truncation rate and mean length
before (the warm model, once per seed) and after training; per step the training accuracy,
truncated share, response length, policy entropy and generated tokens. Per piece, the seed-paired
difference (DAPO minus DAPO without it; an arm of the progression minus the arm before it) with a
95% t interval over seeds (training and evaluation noise both), and a bootstrap interval over the
held-out problems of the pooled paired differences (evaluation noise only). "Beyond noise": the
t interval excludes 0.

    .venv/bin/python benchmarks/ablation.py --task length --arms grpo dapo no-filter no-soft no-token \\
        --seeds 0 1 2 --steps 40 train.num_threads=1
    .venv/bin/python benchmarks/ablation.py --jobs 2                 # arith, the progression, 3 seeds
    .venv/bin/python benchmarks/ablation.py --smoke --out /tmp/abl model.path=/some/tiny/model

Writes ``<out>/ablation_<task>.{json,md}``, ``ablation_<task>.png`` (curves and held-out results)
and ``ablation_<task>_effects.png`` (the paired differences); ``--out`` defaults to
benchmarks/results.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import RESULTS, commit, machine

#: The pieces in the paper's order: (DAPO's setting, GRPO's setting).
PIECES = {
    "filter": ("overlong.mask_truncated=true", "overlong.mask_truncated=false"),
    "clip": ("algorithm.clip_ratio_high=0.28", "algorithm.clip_ratio_high=0.2"),
    "soft": ("overlong.enable=true", "overlong.enable=false"),
    "token": ("algorithm.loss_agg_mode=token-mean", "algorithm.loss_agg_mode=seq-mean-token-mean"),
    "dynamic": ("dynamic_sampling.enable=true", "dynamic_sampling.enable=false"),
}
LABELS = {
    "filter": "overlong filtering",
    "clip": "clip-higher",
    "soft": "soft overlong punishment",
    "token": "token-level loss",
    "dynamic": "dynamic sampling",
    "all": "all five pieces",
}
ORDER = list(PIECES)
GROUPS = {
    "progression": ["grpo", "+filter", "+clip", "+soft", "+token", "dapo"],
    "removal": ["dapo", "no-filter", "no-clip", "no-soft", "no-token", "no-dynamic"],
}
GROUPS["all"] = GROUPS["progression"] + GROUPS["removal"][1:]
TASKS = {"arith": [], "length": ["data.synthetic.task=length"]}
#: Two-sided 95% t quantiles by degrees of freedom (no scipy here).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
SMOKE = [
    "batch.prompts_per_step=4",
    "batch.samples_per_prompt=4",
    "batch.prompts_per_update=4",
    "data.synthetic.num_train=64",
    "data.synthetic.num_eval=8",
    "eval.max_problems=8",
    "eval.k=2",
    "dynamic_sampling.max_rounds=2",
]
CURVES = {
    "acc": "reward/acc",
    "truncated": "rollout/truncated_frac",
    "length": "rollout/response_len_mean",
    "entropy": "loss/entropy",
    "tokens": "perf/tokens_generated",
    "seconds": "perf/time_step_s",
    "clip_high": "loss/clip_high_frac",
}


def pieces_on(arm: str) -> set[str]:
    """The pieces an arm turns on."""
    if arm == "grpo":
        return set()
    if arm == "dapo":
        return set(ORDER)
    if arm[0] == "+" and arm[1:] in PIECES:
        return set(ORDER[: ORDER.index(arm[1:]) + 1])
    if arm.startswith("no-") and arm[3:] in PIECES:
        return set(ORDER) - {arm[3:]}
    raise ValueError(f"unknown arm {arm!r}: use grpo, dapo, +PIECE, no-PIECE or {sorted(GROUPS)}")


def arm_overrides(arm: str) -> list[str]:
    on = pieces_on(arm)
    return [PIECES[p][0] if p in on else PIECES[p][1] for p in ORDER]


def arm_label(arm: str) -> str:
    if arm in ("grpo", "dapo"):
        return arm.upper()
    return f"+ {LABELS[arm[1:]]}" if arm[0] == "+" else f"DAPO - {LABELS[arm[3:]]}"


def expand_arms(names: list[str]) -> list[str]:
    """Arm names with groups expanded; arms with the same pieces (``+dynamic`` = ``dapo``) once."""
    out: list[str] = []
    for name in names:
        for arm in GROUPS.get(name, [name]):
            arm = "dapo" if arm == "+dynamic" else arm
            pieces_on(arm)  # validates
            if arm not in out:
                out.append(arm)
    return out


def comparisons(arms: list[str]) -> list[tuple[str, str, str]]:
    """``(piece, with, without)`` arm pairs that isolate one piece, among the arms run."""
    out = []
    for arm in arms:
        if arm.startswith("no-") and "dapo" in arms:
            out.append((arm[3:], "dapo", arm))
        if arm[0] == "+" or arm == "dapo":
            piece = ORDER[-1] if arm == "dapo" else arm[1:]
            i = ORDER.index(piece)
            before = "grpo" if i == 0 else f"+{ORDER[i - 1]}"
            if before in arms:
                out.append((piece, arm, before))
    if "dapo" in arms and "grpo" in arms:
        out.append(("all", "dapo", "grpo"))
    return out


def per_problem(result: dict) -> dict[str, list[float]]:
    problems = result["problems"]
    return {
        "acc": [p["num_correct"] / len(p["correct"]) for p in problems],
        "truncated": [p["num_truncated"] / len(p["correct"]) for p in problems],
        "length": [float(np.mean(p["response_tokens"])) for p in problems],
    }


def summary(result: dict) -> dict:
    fit = sum(len(p["correct"]) - p["num_truncated"] for p in result["problems"])
    return {
        "acc": result["avg_at_k"]["mean"],
        # accuracy among the responses that ended within the cap: the arithmetic, apart from length
        "acc_fit": sum(p["num_correct"] for p in result["problems"]) / fit if fit else 0.0,
        "acc_ci95": result["avg_at_k"]["ci95"],
        "truncated": result["truncation_rate"],
        "length": result["mean_response_tokens"],
        "per_problem": per_problem(result),
    }


def run_arm(
    arm: str,
    task: str,
    seed: int,
    steps: int,
    budget: int | None,
    run_dir: Path,
    extra: list[str],
    before: bool,
) -> dict:
    from dapo_rl.config import load_config
    from dapo_rl.trainer import Trainer

    cfg = load_config(
        None,
        [
            *TASKS[task],
            *arm_overrides(arm),
            f"train.seed={seed}",
            f"train.total_steps={steps}",
            "checkpoint.every_steps=0",
            "checkpoint.save_final=false",
            "eval.every_steps=0",
            "logging.progress=false",
            "logging.plots=false",
            "logging.tensorboard=false",
            f"logging.run_dir={run_dir}",
            *extra,
        ],
    )
    trainer = Trainer(cfg)
    start = time.perf_counter()
    warm = summary(trainer.evaluate()) if before else None
    curves: dict[str, list[float]] = {k: [] for k in CURVES}
    tokens = 0
    while trainer.step < steps and (budget is None or tokens < budget):
        metrics = trainer.train_step()
        trainer.logger.log(trainer.step, metrics)
        for key, name in CURVES.items():
            curves[key].append(float(metrics.get(name, float("nan"))))
        tokens += int(metrics.get("perf/tokens_generated", 0))
    train_seconds = time.perf_counter() - start
    after = summary(trainer.evaluate())
    trainer.reward.close()
    return {
        "arm": arm,
        "seed": seed,
        "before": warm,
        "after": after,
        "steps": trainer.step,
        "updates": trainer.updates,
        "tokens": tokens,
        "curves": curves,
        "final_entropy": float(np.nanmean(curves["entropy"][-5:])) if curves["entropy"] else None,
        "seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
    }


def t_interval(values: list[float]) -> list[float] | None:
    n = len(values)
    if n < 2:
        return None
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = T95.get(n - 1, 1.96) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def paired_bootstrap(diffs: list[np.ndarray], resamples: int = 2000, seed: int = 0) -> list[float]:
    """Interval of the mean over seeds of per-problem paired differences, resampling problems within
    each seed (evaluation noise only)."""
    rng = np.random.default_rng(seed)
    means = np.zeros(resamples)
    for d in diffs:
        idx = rng.integers(0, len(d), size=(resamples, len(d)))
        means += d[idx].mean(axis=1)
    means /= len(diffs)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def effect(runs: dict, piece: str, with_arm: str, without: str, seeds: list[int]) -> dict:
    out: dict = {"piece": piece, "with": with_arm, "without": without}
    for metric in ("acc", "truncated", "length"):
        per_seed = [runs[with_arm, s]["after"][metric] - runs[without, s]["after"][metric] for s in seeds]
        diffs = [
            np.asarray(runs[with_arm, s]["after"]["per_problem"][metric])
            - np.asarray(runs[without, s]["after"]["per_problem"][metric])
            for s in seeds
        ]
        ci = t_interval(per_seed)
        out[metric] = {
            "diff": float(np.mean(per_seed)),
            "per_seed": per_seed,
            "t95": ci,
            "eval_bootstrap95": paired_bootstrap(diffs),
            "beyond_noise": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)),
        }
    for metric, get in (
        ("entropy", lambda r: r["final_entropy"]),
        ("acc_fit", lambda r: r["after"]["acc_fit"]),
        ("trunc_curve", lambda r: float(np.nanmean(r["curves"]["truncated"]))),
        ("acc_curve", lambda r: float(np.nanmean(r["curves"]["acc"]))),
    ):
        per_seed = [get(runs[with_arm, s]) - get(runs[without, s]) for s in seeds]
        ci = t_interval(per_seed)
        out[metric] = {
            "diff": float(np.mean(per_seed)),
            "per_seed": per_seed,
            "t95": ci,
            "beyond_noise": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)),
        }
    return out


def arm_summary(arm: str, runs: list[dict]) -> dict:
    acc = [r["after"]["acc"] for r in runs]
    return {
        "arm": arm,
        "label": arm_label(arm),
        "overrides": arm_overrides(arm),
        "acc_mean": float(np.mean(acc)),
        "acc_t95": t_interval(acc),
        "truncated_mean": float(np.mean([r["after"]["truncated"] for r in runs])),
        "acc_fit_mean": float(np.mean([r["after"]["acc_fit"] for r in runs])),
        "length_mean": float(np.mean([r["after"]["length"] for r in runs])),
        "entropy_mean": float(np.mean([r["final_entropy"] for r in runs])),
        "trunc_curve_mean": float(np.mean([np.nanmean(r["curves"]["truncated"]) for r in runs])),
        "acc_curve_mean": float(np.mean([np.nanmean(r["curves"]["acc"]) for r in runs])),
        "steps_mean": float(np.mean([r["steps"] for r in runs])),
        "tokens_mean": float(np.mean([r["tokens"] for r in runs])),
        "seconds_mean": float(np.mean([r["train_seconds"] for r in runs])),
    }


def _fmt_ci(ci: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    return "n/a" if ci is None else f"[{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]"


def _effect_cells(effect: dict, key: str, scale: float = 100.0, digits: int = 1) -> str:
    """``| diff[ *] | [lo, hi]`` of one measure of a piece's effect (`*`: beyond noise)."""
    m = effect[key]
    star = " *" if m["beyond_noise"] else ""
    return f"| {scale * m['diff']:+.{digits}f}{star} | {_fmt_ci(m['t95'], scale, digits)} "


def tables(arms: list[dict], effects: list[dict], warm: dict, budget: str) -> str:
    lines = [
        "| arm | held-out acc (mean of seeds) | 95% t interval | truncated | acc. of untruncated | mean length "
        "| entropy (last 5 steps) | steps | generated tokens | training s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        ci = a["acc_t95"]
        ci_s = "n/a" if ci is None else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}"
        lines.append(
            f"| {a['label']} | {100 * a['acc_mean']:.1f}% | {ci_s} | {100 * a['truncated_mean']:.1f}% "
            f"| {100 * a['acc_fit_mean']:.1f}% | {a['length_mean']:.1f} | {a['entropy_mean']:.3f} "
            f"| {a['steps_mean']:.0f} | {a['tokens_mean']:,.0f} | {a['seconds_mean']:.0f} |"
        )
    lines.append(
        f"\nWarm start (mean of seeds): held-out acc {100 * warm['acc']:.1f}%, truncated "
        f"{100 * warm['truncated']:.1f}%, mean length {warm['length']:.1f}. Budget: {budget}."
    )
    if effects:
        lines += [
            "",
            "Held-out, after training: with minus without the piece, mean over seeds (`*`: the seed-paired",
            "95% t interval excludes 0; eval-only: bootstrap over problems of the pooled paired differences).",
            "",
            "| piece (with vs without) | d acc (points) | 95% t | eval-only 95% | d truncated (points) | 95% t "
            "| d acc. of untruncated | 95% t | d length (tokens) | 95% t |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for e in effects:
            lines.append(
                f"| {LABELS[e['piece']]} ({arm_label(e['with'])} vs {arm_label(e['without'])}) "
                + _effect_cells(e, "acc")
                + f"| {_fmt_ci(e['acc']['eval_bootstrap95'])} "
                + _effect_cells(e, "truncated")
                + _effect_cells(e, "acc_fit")
                + _effect_cells(e, "length", 1.0)
                + "|"
            )
        lines += [
            "",
            "During training (the rollouts of every step): with minus without, mean over seeds.",
            "",
            "| piece (with vs without) | d truncated, mean over steps (points) | 95% t "
            "| d training acc, mean over steps (points) | 95% t | d entropy, last 5 steps | 95% t |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in effects:
            lines.append(
                f"| {LABELS[e['piece']]} ({arm_label(e['with'])} vs {arm_label(e['without'])}) "
                + _effect_cells(e, "trunc_curve")
                + _effect_cells(e, "acc_curve")
                + _effect_cells(e, "entropy", 1.0, 3)
                + "|"
            )
        lines.append("\n`*`: beyond noise (the seed-paired 95% t interval excludes 0).")
    return "\n".join(lines)


def plot(
    arms: list[dict],
    runs: dict,
    effects: list[dict],
    seeds: list[int],
    warm: dict,
    out: Path,
    task: str,
    name: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    panels = [
        ("acc", "training accuracy"),
        ("truncated", "truncated share"),
        ("length", "response length (tokens)"),
        ("entropy", "policy entropy (nats/token)"),
    ]
    for ax, (key, title) in zip(axes.flat, panels):
        for i, a in enumerate(arms):
            curves = [runs[a["arm"], s]["curves"][key] for s in seeds]
            n = min(len(c) for c in curves)
            mean = np.nanmean([c[:n] for c in curves], axis=0)
            ax.plot(range(1, n + 1), mean, color=f"C{i}", label=a["label"])
        ax.set_title(f"{title} (mean of {len(seeds)} seeds)")
        ax.set_xlabel("step")
    axes.flat[0].legend(fontsize=7)
    for ax, (key, title) in zip(
        axes.flat[4:], [("acc", "held-out accuracy"), ("truncated", "held-out truncated")]
    ):
        names = [a["label"] for a in arms]
        for i, a in enumerate(arms):
            vals = [100 * runs[a["arm"], s]["after"][key] for s in seeds]
            ax.plot(vals, [i] * len(vals), "k.", ms=7)
            ax.barh(i, float(np.mean(vals)), color=f"C{i}", alpha=0.5)
        ax.axvline(100 * warm[key], color="gray", ls="--")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{title} after (%)\ndots: seeds; dashed: warm start", fontsize=9)
    fig.suptitle(f"{name}: task {task}")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)
    if not effects:
        return
    fig, axes = plt.subplots(1, 4, figsize=(17, 0.6 * len(effects) + 1.8))
    for ax, (metric, title, scale) in zip(
        axes,
        [
            ("acc", "d held-out acc (points)", 100),
            ("truncated", "d held-out truncated (points)", 100),
            ("trunc_curve", "d truncated, mean over training steps (points)", 100),
            ("entropy", "d entropy, last 5 steps (nats/token)", 1),
        ],
    ):
        for i, e in enumerate(effects):
            m = e[metric]
            ci = m["t95"] or [m["diff"], m["diff"]]
            ax.plot([scale * ci[0], scale * ci[1]], [i, i], color="C3" if m["beyond_noise"] else "gray", lw=3)
            ax.plot([scale * v for v in m["per_seed"]], [i] * len(m["per_seed"]), "k.", ms=6)
            ax.plot(scale * m["diff"], i, "kD", ms=5)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(
            range(len(effects)),
            [f"{LABELS[e['piece']]}\n{e['with']} vs {e['without']}" for e in effects],
            fontsize=7,
        )
        ax.invert_yaxis()
        ax.set_title(f"{title}\nwith - without; bar: seed-paired 95% t (red: excludes 0)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{name}_effects.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=sorted(TASKS), default="arith")
    parser.add_argument("--arms", nargs="+", default=["progression"], help="arm names or groups (see above)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50, help="training steps per run (equal-steps budget)")
    parser.add_argument(
        "--budget", type=int, default=None, help="generated tokens per run (equal-token budget)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores / jobs threads)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON, table and plots")
    parser.add_argument("--name", default=None, help="file names (default ablation_<task>)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep each run's result here and reuse it when run again (--jobs 1)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny end-to-end run (CI): 2 steps, small batches"
    )
    parser.add_argument(
        "overrides", nargs="*", help="extra dotted overrides for every run, e.g. train.num_threads=1"
    )
    args = parser.parse_intermixed_args()  # overrides may come before or after the options
    arms = expand_arms(args.arms)
    steps, budget = (2, None) if args.smoke else (10**6 if args.budget else args.steps, args.budget)
    extra = (SMOKE if args.smoke else []) + list(args.overrides)
    if args.jobs > 1:
        extra.append(f"train.num_threads={max(1, (os.cpu_count() or 1) // args.jobs)}")
    budget_text = f"{steps} steps" if budget is None else f"{budget:,} generated tokens"
    print(f"ablation: task {args.task}, arms {arms}, seeds {args.seeds}, {budget_text}", flush=True)
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        calls = [
            (arm, args.task, s, steps, budget, Path(tmp) / f"{arm}_{s}", extra, i == 0)
            for s in args.seeds
            for i, arm in enumerate(arms)
        ]
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                done = [pool.submit(run_arm, *c) for c in calls]
                results = [f.result() for f in done]
        else:
            results = []
            for c in calls:
                saved = (
                    args.cache / f"{args.task}_{c[0]}_s{c[2]}_{budget_text.replace(' ', '')}.json"
                    if args.cache
                    else None
                )
                if (
                    saved is not None
                    and saved.is_file()
                    and (not c[-1] or json.loads(saved.read_text())["before"])
                ):
                    results.append(json.loads(saved.read_text()))
                else:
                    results.append(run_arm(*c))
                    if saved is not None:
                        saved.parent.mkdir(parents=True, exist_ok=True)
                        saved.write_text(json.dumps(results[-1]))
                r = results[-1]
                print(
                    f"  {r['arm']} seed {r['seed']}: acc {100 * r['after']['acc']:.1f}%, truncated "
                    f"{100 * r['after']['truncated']:.1f}%, {r['steps']} steps, {r['train_seconds']:.0f} s",
                    flush=True,
                )
    for r in results:
        runs[r["arm"], r["seed"]] = r
    for s in args.seeds:  # the warm model is the same for every arm: measured by the first
        for arm in arms:
            runs[arm, s]["before"] = runs[arms[0], s]["before"]
    warm = {
        k: float(np.mean([runs[arms[0], s]["before"][k] for s in args.seeds]))
        for k in ("acc", "truncated", "length")
    }
    canonical = GROUPS["all"]  # the table in the paper's order, however the arms were given
    arms = sorted(arms, key=lambda a: canonical.index(a))
    arm_rows = [arm_summary(a, [runs[a, s] for s in args.seeds]) for a in arms]
    effects = [effect(runs, *c, args.seeds) for c in comparisons(arms)]
    table = tables(arm_rows, effects, warm, budget_text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"ablation_{args.task}"
    plot(arm_rows, runs, effects, args.seeds, warm, out, args.task, name)
    record = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": commit(),
        "machine": machine(),
        "config": {
            "task": args.task,
            "arms": arms,
            "seeds": args.seeds,
            "steps": steps,
            "budget_tokens": budget,
            "overrides": extra,
        },
        "figures": {
            "warm_start": warm,
            "arms": arm_rows,
            "effects": effects,
            "runs": [runs[a, s] for a in arms for s in args.seeds],
        },
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
