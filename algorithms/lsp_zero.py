"""LSP-Zero: the zero-sum challenger/solver game of the paper.

Solver rows (the G answers to one query, `branch=True`):
    A_ij = R(q_i, a_ij) - V(q_i),   V(q_i) = mean_j R(q_i, a_ij)
Challenger rows (one per query):
    reward r_i = mean over its G episodes of the challenger's reward (= -V(q_i))
    A_i = r_i - mean_k r_k          (= V_bar - V(q_i))
Loss = L_solver + alpha_ch * L_challenger, each a mean over its own rows.

Penalties break zero-sum: a guard (`lsp_env.guards`) or an invalid move lowers
one role's reward and leaves the other's as it was. With `zero_sum=True` the
game credits the other role with each penalty (`TextGame.zero_sum`), so the
two rewards of every episode add up to 0 exactly: the challenger gains what
the solver loses to the length or code guard or to an invalid answer. The
trainer logs each role's penalty total either way (`penalty/ROLE`).
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase

from algorithms.base import SelfPlayLoss, group_mean
from algorithms.configs import LSPZeroConfig


class LSPZero(SelfPlayLoss):
    """Language Self-Play without self-reward (LSP-Zero)."""

    Config = LSPZeroConfig

    def compute_advantages(self, batch: TensorDictBase) -> TensorDictBase:
        reward = batch.get(self.tensor_keys.reward).float()
        solver = batch.get(self.tensor_keys.branch).bool()
        group = batch.get(self.tensor_keys.group)
        groups = torch.where(solver, group, torch.full_like(group, -1))
        # Solver rows compare within their query's group; challenger rows with each other (group -1).
        centred = reward - group_mean(reward, groups)
        advantage = self._normalize(centred, reward, groups)
        rows = float(len(reward))
        solver_rows, challenger_rows = solver.sum().clamp_min(1), (~solver).sum().clamp_min(1)
        weight = torch.where(solver, rows / solver_rows, self.config.challenger_weight * rows / challenger_rows)
        return self._set_advantages(batch, advantage, weight)
