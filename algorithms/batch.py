"""Turn a `Rollout` into one TensorDict batch: a row per trainable turn."""
from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

import torch
from tensordict import TensorDict

from agents.logprobs import pad_rows
from agents.policy import Completion
from algorithms.base import (ATTENTION_MASK, BRANCH_KEY, GROUP_KEY, REF_LOG_PROBS, RESPONSE_MASK, REWARD_KEY,
                             ROLE_KEY, SAMPLER_LOG_PROBS, TOKENS)
from algorithms.collector import Rollout
from lsp_env.contract import BREAKDOWN  # numeric reward components games report in their infos


@dataclass
class Row:
    role: str
    group: int
    branch: bool
    reward: float
    completion: Completion
    breakdown: dict[str, float]
    reference: list[float] | None = None
    """The reference model's log-probs of the completion's tokens, where a rollout worker computed them."""


def rollout_rows(rollout: Rollout) -> list[Row]:
    """One row per sampled turn of a trained player.

    A turn taken before the branch point is shared by the group's G episodes;
    its reward is the mean of the player's returns over them (for the LSP
    challenger: -V(q) + V_Q(q)). Later turns get their own episode's return.
    """
    rows = []
    for group, episodes in sorted(rollout.groups().items()):
        seen = set()
        for episode in episodes:
            for turn in episode.turns:
                if turn.completion is None or id(turn) in seen:
                    continue
                seen.add(id(turn))
                sharing = [episode] if turn.branch else episodes
                reward = mean(e.returns[turn.role] for e in sharing)
                rows.append(Row(turn.role, group, turn.branch, reward, turn.completion, _breakdown(sharing)))
    return rows


def episode_breakdown(episode, key: str) -> float | None:
    """A numeric reward component (e.g. the judge's R) from an episode's final infos."""
    return next((info[key] for info in episode.infos.values() if isinstance(info.get(key), (int, float))), None)


def _breakdown(episodes) -> dict[str, float]:
    """Mean of each reward component over the episodes (NaN where the game reports none)."""
    values = {}
    for key in BREAKDOWN:
        found = [v for e in episodes if (v := episode_breakdown(e, key)) is not None]
        values[key] = mean(found) if found else float("nan")
    return values


def make_batch(rows: list[Row], roles: list[str], pad_token_id: int) -> TensorDict:
    """Right-padded token batch with the masks and keys `SelfPlayLoss` reads."""
    if not rows:
        raise ValueError("the rollout produced no trainable turns (every episode ended before a player moved)")
    tokens, attention, response = pad_rows([r.completion.prompt_ids for r in rows],
                                           [r.completion.token_ids for r in rows], pad_token_id)
    sampler = torch.zeros(tokens.shape)
    sampler[response] = torch.tensor([lp for r in rows for lp in r.completion.logprobs], dtype=sampler.dtype)
    reference = torch.zeros(tokens.shape)
    if all(r.reference is not None for r in rows):
        reference[response] = torch.tensor([lp for r in rows for lp in r.reference], dtype=reference.dtype)
    return TensorDict({
        TOKENS: tokens,
        ATTENTION_MASK: attention,
        RESPONSE_MASK: response,
        SAMPLER_LOG_PROBS: sampler,
        REF_LOG_PROBS: reference,
        ROLE_KEY: torch.tensor([roles.index(r.role) for r in rows]),
        GROUP_KEY: torch.tensor([r.group for r in rows]),
        BRANCH_KEY: torch.tensor([r.branch for r in rows]),
        REWARD_KEY: torch.tensor([r.reward for r in rows], dtype=torch.float32),
        **{("breakdown", key): torch.tensor([r.breakdown[key] for r in rows]) for key in BREAKDOWN},
    }, batch_size=[len(rows)])


def share_without_spread(batch: TensorDict, key=REWARD_KEY) -> float:
    """The share of groups whose branched rows all have the same `key` (by default the reward: such a group's
    advantages are 0, so it teaches nothing). Groups with fewer than two branched rows, and rows where a
    breakdown key is NaN, are not counted; NaN when no group counts."""
    values = batch.get(key)
    rows = batch.get(BRANCH_KEY).bool() & ~values.isnan()
    groups, values = batch.get(GROUP_KEY)[rows], values[rows]
    flat = [bool((values[groups == g] - values[groups == g][0]).abs().max() < 1e-6)
            for g in groups.unique() if int((groups == g).sum()) > 1]
    return sum(flat) / len(flat) if flat else float("nan")
