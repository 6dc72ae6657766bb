"""LSP: LSP-Zero plus the reference model's quality self-reward R_Q.

The game adds R_Q(q_i, a_ij) (the rubric score of the frozen reference model,
scaled to [0, 1]: `agents.judges`) to the rewards, so the collector already
delivers
    solver:     R + R_Q
    challenger: mean_j(-R + R_Q) = -V(q_i) + V_Q(q_i)
and the advantages and loss are exactly LSP-Zero's. The game is no longer
zero-sum, which keeps queries meaningful over long runs; so LSP has no
`zero_sum` setting. It needs a game that takes a quality judge: the trainer
refuses one that does not, before any model loads.
"""
from __future__ import annotations

from algorithms.configs import AlgorithmConfig
from algorithms.lsp_zero import LSPZero


class LSP(LSPZero):
    """Language Self-Play with quality self-reward."""

    Config = AlgorithmConfig
    self_reward = True
