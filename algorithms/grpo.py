"""GRPO: the data-driven baseline. Queries come from a prompt file instead of
the challenger, and only the solver is trained.

    A_ij = (R_ij - mean_j R_ij) / (std_j R_ij + eps)

Each answer's loss is its token mean (`prompt_mean`), as GRPO was published.
The paper trains it with lr 1e-6 (LSP: 3e-6), which `lsp train` uses for
full fine-tuning when no lr is given (`paper_lr`).
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase

from algorithms.base import SelfPlayLoss, group_mean
from algorithms.configs import GRPOConfig


class GRPO(SelfPlayLoss):
    """Group Relative Policy Optimisation on prompts from a JSONL file."""

    Config = GRPOConfig
    needs_prompts = True
    paper_lr = 1e-6

    def compute_advantages(self, batch: TensorDictBase) -> TensorDictBase:
        reward = batch.get(self.tensor_keys.reward).float()
        solver = batch.get(self.tensor_keys.branch).bool()
        group = batch.get(self.tensor_keys.group)
        groups = torch.where(solver, group, torch.full_like(group, -1))
        advantage = self._normalize(reward - group_mean(reward, groups), reward, groups)
        advantage = torch.where(solver, advantage, torch.zeros_like(advantage))
        weight = solver.float() * len(reward) / solver.sum().clamp_min(1)
        return self._set_advantages(batch, advantage, weight)
