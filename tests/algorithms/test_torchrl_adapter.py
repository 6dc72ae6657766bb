"""The losses follow TorchRL's public contract: keys renamed with `set_keys` are the ones read and written, and
a loss written as TorchRL documents `LossModule` (its keys in `_AcceptedKeys`, a TensorDict of "loss_*" terms)
trains in our step unchanged."""
from dataclasses import dataclass

import pytest
import torch
from tensordict import TensorDict
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

import algorithms
from agents.logprobs import token_log_probs
from algorithms.base import ADVANTAGE_KEY, REWARD_KEY, WEIGHT_KEY
from algorithms.update import optimizer_step


def test_renamed_keys_are_the_ones_the_loss_reads_and_writes(eight_groups):
    model, batch = eight_groups
    default = algorithms.make("lsp-zero", model, beta=0.05)
    renamed = algorithms.make("lsp-zero", model, beta=0.05)
    renamed.set_keys(advantage="adv", row_weight="w", reward="score")
    moved = batch.clone()
    moved.rename_key_(REWARD_KEY, "score")
    default.compute_advantages(batch)
    renamed.compute_advantages(moved)
    assert "adv" in moved.keys() and "w" in moved.keys() and ADVANTAGE_KEY not in moved.keys()
    assert torch.equal(moved.get("adv"), batch.get(ADVANTAGE_KEY)) and torch.equal(moved.get("w"), batch.get(WEIGHT_KEY))
    assert "adv" in renamed.in_keys and "w" in renamed.in_keys
    torch.testing.assert_close(renamed(moved).loss_objective, default(batch).loss_objective)


class DocumentedLoss(LossModule):
    """A REINFORCE loss as TorchRL's docs write a `LossModule`, plus the `compute_advantages` our step calls."""

    @dataclass
    class _AcceptedKeys:
        tokens: NestedKey = ("tokens", "full")
        attention_mask: NestedKey = ("masks", "all_attention_mask")
        assistant_mask: NestedKey = ("masks", "all_assistant_mask")
        reward: NestedKey = "reward"
        advantage: NestedKey = "advantage"

    default_keys = _AcceptedKeys

    def __init__(self, actor_network):
        super().__init__()
        self.actor_network = actor_network

    def compute_advantages(self, batch):
        reward = batch.get(self.tensor_keys.reward)
        batch.set(self.tensor_keys.advantage, reward - reward.mean())

    def forward(self, tensordict):
        keys = self.tensor_keys
        mask = tensordict.get(keys.assistant_mask)
        log_probs = token_log_probs(self.actor_network, tensordict.get(keys.tokens),
                                    tensordict.get(keys.attention_mask), mask)
        objective = -(tensordict.get(keys.advantage) * log_probs.sum(-1)).mean()
        entropy = (log_probs.exp() * log_probs * mask).sum(-1).mean()
        return TensorDict({"loss_objective": objective, "loss_entropy": 0.01 * entropy,  # both backpropagated
                           "length": mask.sum(-1).float().mean()})  # logged only


def test_a_loss_written_against_torchrls_documentation_trains_unchanged(eight_groups):
    model, batch = eight_groups
    loss = DocumentedLoss(model)
    loss.compute_advantages(batch)
    expected_output = loss(batch)
    expected = torch.autograd.grad(expected_output["loss_objective"] + expected_output["loss_entropy"],
                                   list(model.parameters()), allow_unused=True)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    losses = optimizer_step(model, loss, optimizer, batch, groups_per_micro_batch=8, max_grad_norm=1e9)
    assert losses["loss/objective"] == pytest.approx(float(expected_output["loss_objective"]), rel=1e-5)
    for old, new, grad in zip(before, model.parameters(), expected):
        torch.testing.assert_close(old - new.detach(), torch.zeros_like(old) if grad is None else grad,
                                   atol=1e-5, rtol=1e-4)  # the step followed the sum of every "loss_*" term
