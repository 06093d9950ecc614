"""The DAPO algorithm as pure tensor functions: no I/O, no config objects, plain arguments.

DAPO (Yu et al. 2025, arXiv 2503.14476) = GRPO-style group advantages + four techniques:

1. Clip-higher (decoupled eps_low / eps_high):
   ``policy_loss.clipped_policy_loss(..., clip_ratio_low, clip_ratio_high, clip_ratio_c=None)``.
2. Dynamic sampling (keep groups whose accuracy is not constant):
   ``filtering.filter_groups`` / ``filtering.select_informative_groups``, registry ``GROUP_FILTERS``.
3. Token-level policy-gradient loss (``token-mean``, counted over the whole optimizer mini-batch):
   ``aggregation.aggregation_totals`` -> ``aggregation.aggregation_weights`` -> ``aggregation.aggregate``,
   registry ``AGGREGATIONS`` (five modes).
4. Overlong reward shaping (eq. 13) and overlong filtering:
   ``overlong.overlong_penalty`` and ``overlong.truncation_loss_mask``.

Also: group-relative advantages ``advantages.group_advantages`` (registry ``ADVANTAGE_ESTIMATORS``),
dual-clip (``clip_ratio_c``), KL estimators ``kl.kl_penalty``, chunked log-probs and entropy
``logprobs.token_logprobs`` / ``token_entropy`` / ``logprobs_from_hidden``, and the importance-ratio
guard ``guards.importance_ratio_guard``. See docs/algorithm.md for every formula.
"""

from dapo_rl.algorithm.advantages import ADVANTAGE_ESTIMATORS, group_advantages
from dapo_rl.algorithm.aggregation import (
    AGGREGATIONS,
    AggregationTotals,
    aggregate,
    aggregation_totals,
    aggregation_weights,
)
from dapo_rl.algorithm.filtering import (
    GROUP_FILTERS,
    INFORMATIVE_TOL,
    GroupView,
    filter_groups,
    select_informative_groups,
)
from dapo_rl.algorithm.guards import importance_ratio_guard
from dapo_rl.algorithm.kl import KL_ESTIMATORS, kl_penalty
from dapo_rl.algorithm.logprobs import logprobs_from_hidden, token_entropy, token_logprobs
from dapo_rl.algorithm.overlong import overlong_penalty, truncation_loss_mask
from dapo_rl.algorithm.policy_loss import (
    LOG_RATIO_CLAMP,
    POLICY_METRIC_MAXES,
    POLICY_METRIC_SUMS,
    accumulate_policy_metrics,
    clipped_policy_loss,
    finalize_policy_metrics,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "GROUP_FILTERS",
    "INFORMATIVE_TOL",
    "KL_ESTIMATORS",
    "LOG_RATIO_CLAMP",
    "POLICY_METRIC_MAXES",
    "POLICY_METRIC_SUMS",
    "AggregationTotals",
    "GroupView",
    "accumulate_policy_metrics",
    "aggregate",
    "aggregation_totals",
    "aggregation_weights",
    "clipped_policy_loss",
    "filter_groups",
    "finalize_policy_metrics",
    "group_advantages",
    "importance_ratio_guard",
    "kl_penalty",
    "logprobs_from_hidden",
    "overlong_penalty",
    "select_informative_groups",
    "token_entropy",
    "token_logprobs",
    "truncation_loss_mask",
]
