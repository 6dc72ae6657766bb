"""The one module that leans on TorchRL internals. It targets torchrl 0.14.1.

TorchRL's `GRPOLoss.forward` computes its terms through private methods (`_log_weight`,
`_compute_policy_objective`, `_aggregate_loss_value`, `_kl_to_ref`, `_set_in_keys`) and hands the current
log-probs from one to the next under the key `_cur_log_prob`. Our losses need what those methods do not
offer: log-probs of the sampling distribution from a plain transformers model (chunked, optionally packed),
per-row weights and aggregations, and three KL estimators. `GRPOLossAdapter` maps the private methods onto
public ones (`current_log_probs`, `importance_log_weight`, `policy_objective`, `aggregate`, `kl_to_reference`),
which `algorithms.base.SelfPlayLoss` implements; nothing else in the project names TorchRL's private methods.
Its extra tensordict keys are declared the way TorchRL documents for custom losses (`_AcceptedKeys`), so
`set_keys` renames them all. After a TorchRL upgrade, this file is the one to check.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives.llm import GRPOLoss

CURRENT_LOG_PROBS = "_cur_log_prob"  # where GRPOLoss.forward (0.14.1) expects, then deletes, the current log-probs


class GRPOLossAdapter(GRPOLoss):
    """`GRPOLoss` computed through the public methods below (module docstring)."""

    @dataclass
    class _AcceptedKeys(GRPOLoss._AcceptedKeys):
        """TorchRL's keys (`advantage`, `action`, `sample_log_prob`, `ref_log_probs`), and those of our batch."""

        attention_mask: NestedKey = ("masks", "all_attention_mask")
        assistant_mask: NestedKey = ("masks", "all_assistant_mask")
        row_weight: NestedKey = "row_weight"
        token_scale: NestedKey = "token_scale"
        role: NestedKey = "role"
        group: NestedKey = "group"
        branch: NestedKey = "branch"
        reward: NestedKey = "reward"

    default_keys = _AcceptedKeys

    # --- the public steps (subclasses implement the first four) ---------------------
    def current_log_probs(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """(the policy's log-probs of the sampled tokens, [rows, tokens], 0 outside the mask; the mask)."""
        raise NotImplementedError

    def importance_log_weight(self, current: torch.Tensor, sampler: torch.Tensor) -> torch.Tensor:
        """log(pi / pi_sampler) per token ([rows, tokens])."""
        return current - sampler

    def aggregate(self, value: torch.Tensor, mask: torch.Tensor, tensordict: TensorDictBase) -> torch.Tensor:
        """A per-token loss term reduced to the scalar that is backpropagated."""
        raise NotImplementedError

    def kl_to_reference(self, tensordict: TensorDictBase, current: torch.Tensor, reference: torch.Tensor,
                        mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the KL term to add to the loss, before its coefficient; the KL as logged)."""
        raise NotImplementedError

    def policy_objective(self, log_weight: torch.Tensor, advantage: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the per-token policy loss, the share of tokens clipped): by default GRPOLoss's clipped objective."""
        return super()._compute_policy_objective(log_weight, advantage)

    # --- GRPOLoss's private methods, in torchrl 0.14.1 ------------------------------
    def _set_in_keys(self):
        keys = self.tensor_keys
        self.in_keys = [keys.action, keys.sample_log_prob, keys.advantage, keys.ref_log_probs, keys.attention_mask,
                        keys.assistant_mask, keys.row_weight, keys.token_scale]

    def _log_weight(self, tensordict: TensorDictBase, adv_shape: torch.Size):
        current, mask = self.current_log_probs(tensordict)
        tensordict.set(CURRENT_LOG_PROBS, current)
        sampler = torch.where(mask, tensordict.get(self.tensor_keys.sample_log_prob), torch.zeros_like(current))
        sampler_gap = (sampler - current).detach().unsqueeze(-1)  # engine vs trainer, for logging
        return self.importance_log_weight(current, sampler).unsqueeze(-1), None, sampler_gap, mask

    def _compute_policy_objective(self, log_weight: torch.Tensor, advantage: torch.Tensor):
        return self.policy_objective(log_weight, advantage)

    def _aggregate_loss_value(self, value: torch.Tensor, mask: torch.Tensor, tensordict=None) -> torch.Tensor:
        return self.aggregate(value, mask, tensordict)

    def _kl_to_ref(self, tensordict: TensorDictBase, key=None, ref_log_prob=None, coeff=None, mask=None,
                   dist=None):
        coeff = self.kl_to_ref_coeff if coeff is None else coeff
        reference = tensordict.get(key or self.tensor_keys.ref_log_probs)
        loss, logged = self.kl_to_reference(tensordict, tensordict.get(CURRENT_LOG_PROBS), reference, mask)
        return coeff * loss, logged
