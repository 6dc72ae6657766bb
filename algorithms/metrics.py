"""What the trainer logs about each iteration's rollout and batch (besides losses and timings)."""
from __future__ import annotations

from statistics import mean, pstdev

from tensordict import TensorDict

from algorithms.base import RESPONSE_MASK, ROLE_KEY, SAMPLER_LOG_PROBS
from algorithms.batch import episode_breakdown, share_without_spread
from algorithms.collector import Rollout
from lsp_env.contract import BREAKDOWN, INVALID_MOVE_INFO
from lsp_env.guards import penalty_totals, trigger_counts
from lsp_env.outcomes import outcome_rates


def iteration_metrics(rollout: Rollout, batch: TensorDict, roles: list[str], guard_names: list[str]) -> dict:
    """Per role: mean reward, length and entropy; the reward breakdown (`judge/*`); the share of groups with no
    reward spread (no gradient); invalid moves, guard triggers and penalties; outcomes; the value across queries."""
    metrics = {}
    mask = batch.get(RESPONSE_MASK)
    lengths = mask.sum(-1).float()
    token_logprobs = (batch.get(SAMPLER_LOG_PROBS) * mask).sum(-1)
    for index, role in enumerate(roles):
        rows = batch.get(ROLE_KEY) == index
        if rows.any():
            metrics[f"reward/{role}"] = float(batch.get("reward")[rows].mean())
            metrics[f"length/{role}"] = float(lengths[rows].mean())
            metrics[f"entropy/{role}"] = float(-token_logprobs[rows].sum() / lengths[rows].sum())
    metrics["groups/no_spread"] = share_without_spread(batch)  # no gradient from these groups
    for key in BREAKDOWN:
        values = [v for e in rollout.episodes if (v := episode_breakdown(e, key)) is not None]
        if values:
            metrics[f"judge/{key}"] = mean(values)
        if (share := share_without_spread(batch, ("breakdown", key))) == share:  # NaN: no group to count
            metrics[f"groups/no_spread_in_{key}"] = share  # e.g. groups only the self-reward R_Q tells apart
    metrics["episodes/invalid_moves"] = sum(any(info.get(INVALID_MOVE_INFO) for info in e.infos.values())
                                            for e in rollout.episodes)
    metrics.update(trigger_counts(rollout.episodes, guard_names))
    metrics.update(penalty_totals(rollout.episodes, roles))
    metrics.update(outcome_rates(rollout.episodes))
    values = [mean(rewards) for episodes in rollout.groups().values()
              if (rewards := [v for e in episodes if (v := episode_breakdown(e, "reward")) is not None])]
    if values:
        metrics["value/mean"], metrics["value/std_across_queries"] = mean(values), pstdev(values)
    return metrics
