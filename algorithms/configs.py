"""The typed settings of each built-in algorithm (`--algorithm_args`), importable without torch.

They live apart from the losses, as TRL keeps `GRPOConfig` apart from its
trainer, so that `lsp train` rejects a wrong key or value in a moment,
before torch and the models load. Choices are `Literal` types; a wrong one
is an error that lists the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Literal, get_args, get_type_hints

Aggregation = Literal["sequence_sum", "prompt_mean", "token_mean"]
KLEstimator = Literal["k3", "k1", "exact"]


@dataclass
class AlgorithmConfig:
    """Settings every self-play algorithm shares. The defaults read the paper (Kuba et al., 2025) literally:
    its objective sums over each answer's tokens (`sequence_sum`), and it follows GRPO, whose KL(pi || pi_ref)
    estimator is k3 (`exact` is the KL itself, but costs a full-vocabulary pass of both models)."""

    beta: float = 0.05  # KL(pi || pi_ref) coefficient
    challenger_weight: float = 1.0  # alpha_ch: weight of the challenger's loss
    normalize_advantages: bool = False  # divide by the std of the comparison set
    aggregation: Aggregation = "sequence_sum"  # sequence_sum (paper), prompt_mean or token_mean
    kl_estimator: KLEstimator = "k3"  # k3 (GRPO's), k1, or exact (full vocabulary)
    clip_epsilon: float | None = None  # None: one on-policy step (ratio pi / stopgrad(pi)); a number: PPO's clipped
    # ratio pi / pi_sampler, for samples drawn with older weights (`lsp train --overlap`)
    group_relative: ClassVar[bool] = True  # advantages compare the G answers of a group: G must be at least 2

    def __post_init__(self):
        for name, kind in get_type_hints(type(self)).items():
            if getattr(kind, "__origin__", None) is Literal and getattr(self, name) not in get_args(kind):
                raise ValueError(f"{name} must be one of {', '.join(get_args(kind))}; got {getattr(self, name)!r}")
        if self.beta < 0:
            raise ValueError("beta must be >= 0")
        if self.clip_epsilon is not None and not 0 < self.clip_epsilon < 1:
            raise ValueError("clip_epsilon must be between 0 and 1 (or None: on-policy, no clipping)")

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Build from keyword arguments, rejecting unknown names."""
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting(s) {sorted(unknown)}; it has {sorted(names)}")
        return cls(**kwargs)


@dataclass
class LSPZeroConfig(AlgorithmConfig):
    zero_sum: bool = False  # credit each role with the penalties of the other (exactly zero-sum)


@dataclass
class GRPOConfig(AlgorithmConfig):
    challenger_weight: float = 0.0  # the prompts are data, not a trained player
    normalize_advantages: bool = True
    aggregation: Aggregation = "prompt_mean"


@dataclass
class RAEConfig(AlgorithmConfig):
    group_relative: ClassVar[bool] = False  # a running baseline per role
    baseline_decay: float = 0.95  # SPIRAL's alpha
    aggregation: Aggregation = "prompt_mean"
