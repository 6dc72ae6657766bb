"""RAE: role-conditioned advantage estimation (SPIRAL, Liu et al., 2025).

For games decided by rules and played by one policy in several seats (e.g.
tic-tac-toe), the seats have different expected returns: the first player
wins more often. RAE keeps a running baseline per role,

    b_role <- decay * b_role + (1 - decay) * R        (once per group and role)
    A      = R - b_role                               (for every row of that role)

with R the mean return of that role's rows in a group (in a game without a
branch point, one episode's return). Groups are taken in order, each batch
after the last, and the advantages use the updated baselines, as in SPIRAL.
The baselines are saved in checkpoints and restored on resume
(`algorithm_state`). Rows before the branch point are weighted by alpha_ch,
as in LSP-Zero. Each row's loss is its token mean (`prompt_mean`); the
paper's sequence sum is for LSP.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase

from algorithms.base import SelfPlayLoss
from algorithms.configs import RAEConfig


class RAE(SelfPlayLoss):
    """Role-conditioned advantages: a running per-role baseline, kept in checkpoints."""

    Config = RAEConfig

    def __init__(self, actor_network: torch.nn.Module, config: RAEConfig | None = None, **settings):
        super().__init__(actor_network, config, **settings)
        self.baselines: dict[int, float] = {}  # role index -> running baseline

    def compute_advantages(self, batch: TensorDictBase) -> TensorDictBase:
        reward = batch.get(self.tensor_keys.reward).float()
        roles, groups = batch.get(self.tensor_keys.role), batch.get(self.tensor_keys.group)
        decay = self.config.baseline_decay
        for role in roles.unique().tolist():
            for group in groups[roles == role].unique().tolist():
                value = float(reward[(roles == role) & (groups == group)].mean())
                self.baselines[role] = decay * self.baselines.get(role, 0.0) + (1 - decay) * value
        baseline = torch.tensor([self.baselines[role] for role in roles.tolist()], dtype=reward.dtype, device=reward.device)
        advantage = self._normalize(reward - baseline, reward, roles)
        branch = batch.get(self.tensor_keys.branch).bool()
        rows = float(len(reward))
        weight = torch.where(branch, rows / branch.sum().clamp_min(1),
                             self.config.challenger_weight * rows / (~branch).sum().clamp_min(1))
        return self._set_advantages(batch, advantage, weight)

    def algorithm_state(self) -> dict:
        return {"baselines": dict(self.baselines)}

    def load_algorithm_state(self, state: dict) -> None:
        self.baselines = {int(role): float(value) for role, value in state.get("baselines", {}).items()}
