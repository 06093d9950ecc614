"""Every metric name the trainer logs, defined once (docs/metrics.md documents each).

The trainer, the step metrics, the plots and the docs test import these constants, so a renamed
metric cannot leave a plot reading a key nobody writes. Names are namespaced by what they measure:
``reward/``, ``rollout/``, ``sampling/``, ``adv/``, ``loss/``, ``optim/``, ``perf/``, ``eval/``.

Two families are built from a part: the stage times ``perf/time_<stage>_s`` (:func:`perf_time`;
stages are whatever the trainer times, e.g. rollout, reward, old_logprobs, update) and the eval
metrics ``eval/<name>`` with their 95% interval bounds ``eval/<name>_ci95_low|high``
(:func:`eval_key`, :func:`ci95_low`, :func:`ci95_high`).
"""

from __future__ import annotations

# ---- reward/ : what the policy did this step, over every generated response ----------------------
REWARD_MEAN = "reward/mean"
REWARD_SCORE_MEAN = "reward/score_mean"
REWARD_ACC = "reward/acc"
REWARD_NO_ANSWER_RATE = "reward/no_answer_rate"
REWARD_TRAINED_MEAN = "reward/trained_mean"
REWARD_TIMEOUTS = "reward/timeouts"
REWARD_ERRORS = "reward/errors"
REWARD_TIMEOUTS_TOTAL = "reward/timeouts_total"
REWARD_ERRORS_TOTAL = "reward/errors_total"

# ---- rollout/ --------------------------------------------------------------------------------------
ROLLOUT_RESPONSE_LEN_MEAN = "rollout/response_len_mean"
ROLLOUT_RESPONSE_LEN_MAX = "rollout/response_len_max"
ROLLOUT_TRUNCATED_FRAC = "rollout/truncated_frac"
ROLLOUT_MASKED_TRUNCATED_FRAC = "rollout/masked_truncated_frac"
# training-inference mismatch (when the engine returns log-probs: the vllm engine), algorithm/importance.py
ROLLOUT_LOGPROB_ABS_DIFF_MEAN = "rollout/logprob_abs_diff_mean"
ROLLOUT_LOGPROB_ABS_DIFF_MAX = "rollout/logprob_abs_diff_max"
ROLLOUT_LOGPROB_KL_K3 = "rollout/logprob_kl_k3"
# the capped importance weight pi_prox / pi_rollout (rollout.importance_correction tis or mask)
ROLLOUT_IS_WEIGHT_MEAN = "rollout/is_weight_mean"
ROLLOUT_IS_CAPPED_FRAC = "rollout/is_capped_frac"

# ---- sampling/ : dynamic sampling ------------------------------------------------------------------
SAMPLING_ROUNDS = "sampling/rounds"
SAMPLING_PROMPTS_GENERATED = "sampling/prompts_generated"
SAMPLING_GROUPS_INFORMATIVE = "sampling/groups_informative"
SAMPLING_GROUPS_ALL_CORRECT = "sampling/groups_all_correct"
SAMPLING_GROUPS_ALL_WRONG = "sampling/groups_all_wrong"
SAMPLING_KEEP_RATE = "sampling/keep_rate"
SAMPLING_GROUPS_TRAINED = "sampling/groups_trained"
SAMPLING_SHORTFALL = "sampling/shortfall"
SAMPLING_DISCARDED_TOKENS = "sampling/discarded_tokens"
SAMPLING_CARRIED_GROUPS = "sampling/carried_groups"
SAMPLING_CARRIED_AGE_MAX = "sampling/carried_age_max"

# ---- adv/ : group-relative advantages of the trained responses ---------------------------------------
ADV_MEAN = "adv/mean"
ADV_ABS_MEAN = "adv/abs_mean"
ADV_STD = "adv/std"
ADV_MAX = "adv/max"
ADV_MIN = "adv/min"
ADV_ZERO_FRAC = "adv/zero_frac"

# ---- loss/ : token-weighted over the step's updates --------------------------------------------------
LOSS_TOTAL = "loss/total"
LOSS_CLIP_FRAC = "loss/clip_frac"
LOSS_CLIP_LOW_FRAC = "loss/clip_low_frac"
LOSS_CLIP_HIGH_FRAC = "loss/clip_high_frac"
LOSS_DUAL_CLIP_FRAC = "loss/dual_clip_frac"
LOSS_APPROX_KL = "loss/approx_kl"
LOSS_RATIO_MEAN = "loss/ratio_mean"
LOSS_RATIO_MAX = "loss/ratio_max"
LOSS_ENTROPY = "loss/entropy"
LOSS_KL_REF = "loss/kl_ref"
LOSS_GUARD_SKIPPED_MICROBATCHES = "loss/guard_skipped_microbatches"

# ---- optim/ ------------------------------------------------------------------------------------------
OPTIM_LR = "optim/lr"
OPTIM_UPDATES = "optim/updates"
OPTIM_GRAD_NORM = "optim/grad_norm"
OPTIM_NONFINITE_SKIPPED = "optim/nonfinite_skipped"
OPTIM_SKIPPED_EMPTY_STEP = "optim/skipped_empty_step"

# ---- async/ : asynchronous rollouts (async.max_staleness > 0), dapo_rl/async_rollout ------------------
ASYNC_STALENESS_MEAN = "async/staleness_mean"
ASYNC_STALENESS_MAX = "async/staleness_max"
ASYNC_STALENESS_HIST_PREFIX = "async/staleness_hist/"
ASYNC_TRAINER_WAIT = "async/trainer_wait_s"
ASYNC_ROLLOUT_WAIT = "async/rollout_wait_s"
ASYNC_IDLE_RATIO_TRAINER = "async/idle_ratio_trainer"
ASYNC_IDLE_RATIO_ROLLOUT = "async/idle_ratio_rollout"
ASYNC_QUEUE_DEPTH = "async/queue_depth"
ASYNC_DROPPED_STALE_GROUPS = "async/dropped_stale_groups"
ASYNC_VERSION = "async/version"


def staleness_hist(staleness: int) -> str:
    """``async/staleness_hist/<k>``: trained groups of the step generated ``k`` versions back."""
    return f"{ASYNC_STALENESS_HIST_PREFIX}{staleness}"


# ---- perf/ -------------------------------------------------------------------------------------------
PERF_TIME_STEP = "perf/time_step_s"
PERF_TOKENS_GENERATED = "perf/tokens_generated"
PERF_TOKENS_TRAINED = "perf/tokens_trained"
PERF_TOKENS_PER_S = "perf/tokens_per_s"
PERF_TIME_PREFIX = "perf/time_"
PERF_TIME_SUFFIX = "_s"

#: The stages the trainer times, in loop order (``perf/time_<stage>_s``).
STAGES = ("rollout", "reward", "old_logprobs", "update", "weight_sync")


def perf_time(stage: str) -> str:
    """``perf/time_<stage>_s``: the wall time of one stage of the step."""
    return f"{PERF_TIME_PREFIX}{stage}{PERF_TIME_SUFFIX}"


def stage_of(key: str) -> str | None:
    """The stage named by a ``perf/time_<stage>_s`` key (None for other keys and for the step total)."""
    if key == PERF_TIME_STEP or not (key.startswith(PERF_TIME_PREFIX) and key.endswith(PERF_TIME_SUFFIX)):
        return None
    return key[len(PERF_TIME_PREFIX) : -len(PERF_TIME_SUFFIX)] or None


# ---- eval/ : held-out evaluation ---------------------------------------------------------------------
EVAL_PREFIX = "eval/"
AVG_AT_K = "avg_at_k"
PASS_AT_K = "pass_at_k"
MAJ_AT_K = "maj_at_k"
EVAL_ESTIMATES = (AVG_AT_K, PASS_AT_K, MAJ_AT_K)
"""The per-problem estimates reported with a 95% interval."""


def eval_key(name: str) -> str:
    """``eval/<name>``: an evaluation metric in the metrics log."""
    return f"{EVAL_PREFIX}{name}"


def ci95_low(key: str) -> str:
    """The lower 95% bound logged next to ``key``."""
    return f"{key}_ci95_low"


def ci95_high(key: str) -> str:
    """The upper 95% bound logged next to ``key``."""
    return f"{key}_ci95_high"


EVAL_AVG_AT_K = eval_key(AVG_AT_K)
EVAL_PASS_AT_K = eval_key(PASS_AT_K)
EVAL_MAJ_AT_K = eval_key(MAJ_AT_K)
EVAL_INVALID_RATE = eval_key("invalid_rate")
EVAL_TIMEOUTS = eval_key("timeouts")
EVAL_ERRORS = eval_key("errors")

# ---- ledger/ : the learning-signal ledger, tokens per reason (health/ledger.py, docs/health.md) ------
LEDGER_PREFIX = "ledger/"
LEDGER_CATEGORIES = (
    "filtered_all_correct",
    "filtered_all_wrong",
    "filtered_other",
    "surplus",
    "overlong_masked",
    "zero_advantage",
    "skipped_guard",
    "skipped_nonfinite",
    "masked_importance",
    "clipped_low",
    "clipped_high",
    "dual_clipped",
    "live",
)
"""The ledger's reasons, in the order they are decided (a token gets the first that applies)."""
LEDGER_FILTERED_ALL_CORRECT = "ledger/filtered_all_correct"
LEDGER_FILTERED_ALL_WRONG = "ledger/filtered_all_wrong"
LEDGER_FILTERED_OTHER = "ledger/filtered_other"
LEDGER_SURPLUS = "ledger/surplus"
LEDGER_OVERLONG_MASKED = "ledger/overlong_masked"
LEDGER_ZERO_ADVANTAGE = "ledger/zero_advantage"
LEDGER_SKIPPED_GUARD = "ledger/skipped_guard"
LEDGER_SKIPPED_NONFINITE = "ledger/skipped_nonfinite"
LEDGER_MASKED_IMPORTANCE = "ledger/masked_importance"
LEDGER_CLIPPED_LOW = "ledger/clipped_low"
LEDGER_CLIPPED_HIGH = "ledger/clipped_high"
LEDGER_DUAL_CLIPPED = "ledger/dual_clipped"
LEDGER_LIVE = "ledger/live"
LEDGER_TOKENS = "ledger/tokens"
LEDGER_CARRIED_IN = "ledger/carried_in"
LEDGER_CARRIED_OUT = "ledger/carried_out"
# the reward guard's view of a step (health/guard.py): the lowest and highest task score generated
REWARD_SCORE_MIN = "reward/score_min"
REWARD_SCORE_MAX = "reward/score_max"


def ledger_key(category: str) -> str:
    """``ledger/<category>``: the step's response tokens counted under ``category``."""
    return f"{LEDGER_PREFIX}{category}"
