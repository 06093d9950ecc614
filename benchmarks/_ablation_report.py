"""The ablation's report (benchmarks/ablation.py): the markdown tables and the two plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _ablation_arms import LABELS, arm_label


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
        steps = f"{a['steps_mean']:.0f}"  # and the seeds' range where they differ (a token or time budget)
        if a["steps_min"] != a["steps_max"]:
            steps += f" ({a['steps_min']}-{a['steps_max']})"
        lines.append(
            f"| {a['label']} | {100 * a['acc_mean']:.1f}% | {ci_s} | {100 * a['truncated_mean']:.1f}% "
            f"| {100 * a['acc_fit_mean']:.1f}% | {a['length_mean']:.1f} | {a['entropy_mean']:.3f} "
            f"| {steps} | {a['tokens_mean']:,.0f} | {a['seconds_mean']:.0f} |"
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
