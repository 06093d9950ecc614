"""The ablation's arms (benchmarks/ablation.py): DAPO's five pieces, each arm's settings, its label,
and the arm pairs that isolate one piece."""

from __future__ import annotations

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
