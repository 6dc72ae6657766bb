"""`SelfPlayLoss`: the policy-gradient loss shared by the built-in algorithms.

It subclasses TorchRL's `GRPOLoss` and reuses its objective, clipping,
effective-sample-size diagnostic and per-sample ("prompt_mean") aggregation.
It differs from `GRPOLoss` where the paper does:

- the importance ratio is pi / stopgrad(pi) (one on-policy step per batch),
  computed from the trainer's Hugging Face model with chosen-token
  log-probabilities only, instead of a TorchRL LLM wrapper's full
  distribution; pi is the distribution the rollouts were sampled from
  (`sampling`: temperature, min-p and top-p, `agents.logprobs`);
- KL(pi || pi_ref) is the k3 estimator averaged over each row's response
  tokens (not over padding) and weighted per row like the objective, so that
  Loss = L_solver + alpha_ch * L_challenger, each with its own beta * KL.

Algorithms subclass it and implement `compute_advantages`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from tensordict import TensorDictBase
from torchrl.objectives.llm import GRPOLoss

from agents.logprobs import token_log_probs
from agents.policy import SamplingParams

ROLE_KEY, GROUP_KEY, BRANCH_KEY, REWARD_KEY = "role", "group", "branch", "reward"
WEIGHT_KEY, ADVANTAGE_KEY = "row_weight", "advantage"
TOKENS = ("tokens", "full")
ATTENTION_MASK = ("masks", "all_attention_mask")
RESPONSE_MASK = ("masks", "all_assistant_mask")
SAMPLER_LOG_PROBS = ("log_probs", "full")
REF_LOG_PROBS = ("next", "ref_log_probs", "full")


@dataclass
class AlgorithmConfig:
    """Settings every self-play algorithm shares (paper defaults)."""

    beta: float = 0.05  # KL(pi || pi_ref) coefficient
    challenger_weight: float = 1.0  # alpha_ch: weight of the challenger's loss
    clip_epsilon: float = 0.2  # only matters if a batch is reused for several steps
    normalize_advantages: bool = False  # divide by the std of the comparison set

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Build from keyword arguments, rejecting unknown names."""
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting(s) {sorted(unknown)}; it has {sorted(names)}")
        return cls(**kwargs)


def group_mean(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over rows sharing a group id, broadcast back to rows."""
    _, index = groups.unique(return_inverse=True)
    sums = torch.zeros(int(index.max()) + 1, dtype=values.dtype).index_add_(0, index, values)
    counts = torch.bincount(index).to(values.dtype)
    return (sums / counts)[index]


def group_std(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Population standard deviation of `values` per group, broadcast to rows."""
    return (group_mean((values - group_mean(values, groups)) ** 2, groups)).sqrt()


class SelfPlayLoss(GRPOLoss):
    """Policy-gradient loss over a self-play batch (see module docstring).

    Batch keys (one row per sampled turn): `("tokens", "full")`,
    `("masks", "all_attention_mask")`, `("masks", "all_assistant_mask")`,
    `("log_probs", "full")`, `("next", "ref_log_probs", "full")`, `role`,
    `group`, `branch` and `reward`. `compute_advantages` adds `advantage`
    and `row_weight`.
    """

    Config = AlgorithmConfig
    self_reward = False  # whether the game adds the reference model's quality score
    needs_prompts = False  # whether the challenger's moves come from a prompt file

    def __init__(self, actor_network: torch.nn.Module, config: AlgorithmConfig | None = None,
                 sampling: SamplingParams | None = None, **settings):
        """`sampling`: the distribution the rollouts were sampled from (default: the raw model's)."""
        config = config or self.Config.from_kwargs(**settings)
        super().__init__(actor_network, clip_epsilon=config.clip_epsilon, entropy_bonus=False,
                         aggregation="prompt_mean", kl_to_ref_coeff=config.beta or None, masking_strategy="sft")
        self.config = config
        self.sampling = sampling

    def compute_advantages(self, batch: TensorDictBase) -> TensorDictBase:
        """Write `advantage` ([rows, tokens, 1]) and `row_weight` ([rows]) into the batch."""
        raise NotImplementedError

    def algorithm_state(self) -> dict:
        """State beyond the weights that checkpoints keep (e.g. running baselines); none by default."""
        return {}

    def load_algorithm_state(self, state: dict) -> None:
        """Restore what `algorithm_state` returned."""

    # --- helpers for subclasses -------------------------------------------------
    def _set_advantages(self, batch: TensorDictBase, advantage: torch.Tensor, weight: torch.Tensor) -> TensorDictBase:
        tokens = batch.get(TOKENS)
        batch.set(ADVANTAGE_KEY, advantage[:, None, None].expand(*tokens.shape, 1).contiguous())
        batch.set(WEIGHT_KEY, weight)
        return batch

    def _normalize(self, centred: torch.Tensor, values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        if not self.config.normalize_advantages:
            return centred
        return centred / (group_std(values, groups) + 1e-6)

    # --- GRPOLoss hooks -----------------------------------------------------------
    def forward(self, tensordict: TensorDictBase):
        """Weight each row's advantage by `row_weight`, then GRPOLoss's forward."""
        weighted = tensordict.copy()
        weight = tensordict.get(WEIGHT_KEY)
        weighted.set(ADVANTAGE_KEY, tensordict.get(ADVANTAGE_KEY) * weight[:, None, None])
        return super().forward(weighted)

    def _log_weight(self, tensordict: TensorDictBase, adv_shape: torch.Size):
        mask = tensordict.get(RESPONSE_MASK).bool()
        current = token_log_probs(self.actor_network, tensordict.get(TOKENS), tensordict.get(ATTENTION_MASK), mask,
                                  self.sampling)
        current = torch.where(mask, current, torch.zeros_like(current))
        sampler = torch.where(mask, tensordict.get(SAMPLER_LOG_PROBS), torch.zeros_like(current))
        tensordict.set("_cur_log_prob", current)
        log_weight = (current - current.detach()).unsqueeze(-1)  # pi / stopgrad(pi)
        sampler_gap = (sampler - current).detach().unsqueeze(-1)  # engine vs trainer, for logging
        return log_weight, None, sampler_gap, mask

    def _kl_to_ref(self, tensordict: TensorDictBase, key=REF_LOG_PROBS, ref_log_prob=None, coeff=None, mask=None,
                   dist=None):
        coeff = self.kl_to_ref_coeff if coeff is None else coeff
        current = tensordict.get("_cur_log_prob")
        reference = tensordict.get(key)
        diff = torch.where(mask, reference - current, torch.zeros_like(current))
        per_token = diff.expm1() - diff  # k3 estimator of KL(pi || pi_ref), >= 0
        per_row = per_token.sum(-1) / mask.sum(-1).clamp_min(1)
        weighted = (per_row * tensordict.get(WEIGHT_KEY)).mean()  # same row weights as the objective
        return coeff * weighted, per_row.mean()
