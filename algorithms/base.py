"""`SelfPlayLoss`: the policy-gradient loss shared by the built-in algorithms.

It subclasses TorchRL's `GRPOLoss` and keeps its forward pass (objective,
effective-sample-size diagnostic, KL hook). It differs where the paper does:

- The importance ratio is pi / stopgrad(pi): one on-policy gradient step per
  batch, so the ratio is 1 and there is nothing to clip. pi is computed by the
  trainer's Hugging Face model, chosen-token log-probabilities only, under the
  distribution the rollouts were sampled from (`sampling`: temperature, min-p
  and top-p, `agents.logprobs`). With `clip_epsilon` set, the ratio is
  pi / pi_sampler (the engine's log-probs of the samples) with PPO's clip, as
  GRPOLoss has it: for samples drawn with the weights of a step before
  (`lsp train --overlap`).
- Every loss term is a mean over rows of a per-row sum over the response's
  tokens times a per-row factor set by `aggregation`:

      sequence_sum  1             the paper: log pi(a|q) and the KL of the whole answer
      prompt_mean   1 / |a|       each answer's token mean (GRPO as published, TorchRL's)
      token_mean    1 / mean |a|  a token mean over the rows on the same side of the branch point

  Each mode is a mean over rows, so micro-batches weighted by their share of
  rows add up to the whole batch exactly.
- KL(pi || pi_ref) is estimated per token (`kl_estimator`), aggregated like the
  objective and weighted per row like it, so that
  Loss = L_solver + alpha_ch * L_challenger, each with its own beta * KL:

      k3     r - 1 - log r, r = pi_ref / pi   GRPO's: unbiased, >= 0, low variance; differentiated
                                              directly, as GRPO does
      k1     log(pi / pi_ref)                 unbiased, noisier, can be < 0; its direct gradient
                                              (grad log pi) averages to 0, so it is differentiated
                                              through the score function: each token's log-prob
                                              weighted by the KL still to come in its answer
      exact  sum_v pi(v) log(pi(v) / pi_ref(v)) at each position, over the whole vocabulary:
                                              no sampling noise per position, but a full-vocabulary
                                              pass of both models (small models; needs
                                              `reference_network` and sampling without min-p/top-p)

Algorithms subclass it and implement `compute_advantages`.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase

from agents.logprobs import output_logits, token_log_probs
from agents.lora import base_weights
from agents.policy import SamplingParams
from algorithms.configs import AlgorithmConfig
from algorithms.torchrl_adapter import GRPOLossAdapter

ROLE_KEY, GROUP_KEY, BRANCH_KEY, REWARD_KEY = "role", "group", "branch", "reward"
WEIGHT_KEY, ADVANTAGE_KEY, TOKEN_SCALE_KEY = "row_weight", "advantage", "token_scale"
TOKENS = ("tokens", "full")
ATTENTION_MASK = ("masks", "all_attention_mask")
RESPONSE_MASK = ("masks", "all_assistant_mask")
SAMPLER_LOG_PROBS = ("log_probs", "full")
REF_LOG_PROBS = ("next", "ref_log_probs", "full")
LORA_LR = 1e-4  # moves a LoRA adapter in tens of steps (the CPU recipe's)


def group_mean(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over rows sharing a group id, broadcast back to rows."""
    _, index = groups.unique(return_inverse=True)
    sums = values.new_zeros(int(index.max()) + 1).index_add_(0, index, values)
    counts = torch.bincount(index).to(values.dtype)
    return (sums / counts)[index]


def group_std(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Population standard deviation of `values` per group, broadcast to rows."""
    return (group_mean((values - group_mean(values, groups)) ** 2, groups)).sqrt()


def vocab_log_probs(model, tokens: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                    sampling: SamplingParams | None = None) -> torch.Tensor:
    """log p(. | tokens[b, :t]) over the whole vocabulary ([positions, vocab]) at each position where `mask`,
    in `mask.nonzero()` order; p is the raw distribution, divided by `sampling`'s temperature if any."""
    hidden = model.get_decoder()(input_ids=tokens, attention_mask=attention_mask).last_hidden_state
    rows, cols = mask.nonzero(as_tuple=True)
    logits = output_logits(model, hidden[rows, cols - 1]).float()
    if sampling is not None and sampling.temperature > 0:
        logits = logits / sampling.temperature
    return logits.log_softmax(-1)


class SelfPlayLoss(GRPOLossAdapter):
    """Policy-gradient loss over a self-play batch (see module docstring).

    Batch keys (one row per sampled turn), renamed with TorchRL's `set_keys`
    (`loss.tensor_keys` lists them): `action` ("tokens", "full"),
    `attention_mask`, `assistant_mask`, `sample_log_prob`, `ref_log_probs`,
    `role`, `group`, `branch` and `reward`. `compute_advantages` adds
    `advantage`, `row_weight` and `token_scale`.
    """

    Config = AlgorithmConfig
    self_reward = False  # whether the game adds the reference model's quality score
    needs_prompts = False  # whether the challenger's moves come from a prompt file
    paper_lr = 3e-6  # the paper's learning rate for full fine-tuning (LSP, LSP-Zero)

    def __init__(self, actor_network: torch.nn.Module, config: AlgorithmConfig | None = None,
                 sampling: SamplingParams | None = None, reference_network: torch.nn.Module | None = None,
                 packed: bool = False, **settings):
        """`sampling`: the distribution the rollouts were sampled from (default: the raw model's);
        `reference_network`: pi_ref, for `kl_estimator="exact"` (with LoRA, the actor: its base weights are used);
        `packed`: compute the log-probs on packed rows (`agents.logprobs.packed_hidden_states`)."""
        config = config or self.Config.from_kwargs(**settings)
        super().__init__(actor_network, entropy_bonus=False, aggregation=config.aggregation,
                         kl_to_ref_coeff=config.beta or None, masking_strategy="sft",
                         clip_epsilon=config.clip_epsilon or 0.2)
        self.config = config
        self.sampling = sampling
        self.packed = packed
        if config.kl_estimator == "exact" and config.beta:
            if reference_network is None:
                raise ValueError("kl_estimator='exact' needs the reference model (reference_network)")
            if sampling is not None and (sampling.min_p > 0 or sampling.top_p < 1):
                raise ValueError("kl_estimator='exact' sums over the whole vocabulary, which min_p/top_p sampling "
                                 "truncates; sample with min_p 0 and top_p 1, or use k3")
        self.__dict__["reference_network"] = reference_network  # not a submodule: frozen, or the actor itself

    @classmethod
    def recommended_lr(cls, lora: bool) -> float:
        """The learning rate `lsp train` uses when none is given: the paper's for full fine-tuning,
        `LORA_LR` for a LoRA adapter (the paper trains every weight)."""
        return LORA_LR if lora else cls.paper_lr

    def compute_advantages(self, batch: TensorDictBase) -> TensorDictBase:
        """Write `advantage` ([rows, tokens, 1]), `row_weight` and `token_scale` ([rows]) into the batch."""
        raise NotImplementedError

    def algorithm_state(self) -> dict:
        """State beyond the weights that checkpoints keep (e.g. running baselines); none by default."""
        return {}

    def load_algorithm_state(self, state: dict) -> None:
        """Restore what `algorithm_state` returned."""

    # --- helpers for subclasses -------------------------------------------------
    def _set_advantages(self, batch: TensorDictBase, advantage: torch.Tensor, weight: torch.Tensor) -> TensorDictBase:
        keys = self.tensor_keys
        tokens = batch.get(keys.action)
        batch.set(keys.advantage, advantage[:, None, None].expand(*tokens.shape, 1).contiguous())
        batch.set(keys.row_weight, weight)
        batch.set(keys.token_scale, self._token_scale(batch))
        return batch

    def _token_scale(self, batch: TensorDictBase) -> torch.Tensor:
        """The per-row factor of `aggregation` (module docstring), from the whole batch."""
        lengths = batch.get(self.tensor_keys.assistant_mask).sum(-1).float()
        if self.config.aggregation == "sequence_sum":
            return torch.ones_like(lengths)
        if self.config.aggregation == "prompt_mean":
            return 1 / lengths.clamp_min(1)
        return 1 / group_mean(lengths, batch.get(self.tensor_keys.branch).long()).clamp_min(1)

    def _normalize(self, centred: torch.Tensor, values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """`centred / (std of values in the row's group + 1e-6)` if `normalize_advantages`; a group without
        spread keeps advantages 0."""
        if not self.config.normalize_advantages:
            return centred
        return centred / (group_std(values, groups) + 1e-6)

    # --- the loss's steps (`algorithms.torchrl_adapter`) ---------------------------
    def forward(self, tensordict: TensorDictBase):
        """Weight each row's advantage by `row_weight`, then GRPOLoss's forward."""
        keys = self.tensor_keys
        weighted = tensordict.copy()
        weight = tensordict.get(keys.row_weight)
        weighted.set(keys.advantage, tensordict.get(keys.advantage) * weight[:, None, None])
        return super().forward(weighted)

    def current_log_probs(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self.tensor_keys
        mask = tensordict.get(keys.assistant_mask).bool()
        current = token_log_probs(self.actor_network, tensordict.get(keys.action),
                                  tensordict.get(keys.attention_mask), mask, self.sampling, packed=self.packed)
        return torch.where(mask, current, torch.zeros_like(current)), mask

    def importance_log_weight(self, current: torch.Tensor, sampler: torch.Tensor) -> torch.Tensor:
        if self.config.clip_epsilon is None:
            return current - current.detach()  # pi / stopgrad(pi)
        return current - sampler  # pi / pi_sampler: the samples may be a step old

    def policy_objective(self, log_weight: torch.Tensor, advantage: torch.Tensor):
        """-ratio * A per token, without clipping for one on-policy step (the ratio is 1); else GRPOLoss's clipped
        objective, and the share of tokens clipped."""
        if self.config.clip_epsilon is not None:
            return super().policy_objective(log_weight, advantage)
        return -log_weight.exp() * advantage, torch.zeros((), device=advantage.device)

    def aggregate(self, value: torch.Tensor, mask: torch.Tensor, tensordict: TensorDictBase) -> torch.Tensor:
        per_row = torch.where(mask.unsqueeze(-1), value, torch.zeros_like(value)).flatten(1).sum(-1)
        return (per_row * tensordict.get(self.tensor_keys.token_scale)).mean()

    def kl_to_reference(self, tensordict: TensorDictBase, current: torch.Tensor, reference: torch.Tensor,
                        mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the row-weighted KL term, the KL term as aggregated, unweighted, for logging)."""
        keys = self.tensor_keys
        per_row = self.token_kl(tensordict, current, reference, mask).sum(-1) * tensordict.get(keys.token_scale)
        weighted = (per_row * tensordict.get(keys.row_weight)).mean()  # same row weights as the objective
        return weighted, per_row.detach().mean()

    def token_kl(self, tensordict: TensorDictBase, current: torch.Tensor, reference: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """The `kl_estimator` term of each response token ([rows, tokens], 0 elsewhere); `current` is 0 outside
        the mask."""
        if self.config.kl_estimator == "exact":
            return self._exact_kl(tensordict, mask)
        log_ratio = torch.where(mask, current - reference, torch.zeros_like(current))  # log pi / pi_ref
        if self.config.kl_estimator == "k3":
            return (-log_ratio).expm1() + log_ratio
        to_go = log_ratio.detach().flip(-1).cumsum(-1).flip(-1)  # k1: the KL from this token to the answer's end
        return log_ratio.detach() + to_go * (current - current.detach())

    def _exact_kl(self, tensordict: TensorDictBase, mask: torch.Tensor) -> torch.Tensor:
        tokens, attention = tensordict.get(self.tensor_keys.action), tensordict.get(self.tensor_keys.attention_mask)
        mask = mask.clone()
        mask[:, 0] = False  # nothing predicts the first token
        with torch.no_grad(), base_weights(self.reference_network):
            reference = vocab_log_probs(self.reference_network, tokens, attention, mask, self.sampling)
        current = vocab_log_probs(self.actor_network, tokens, attention, mask, self.sampling)
        kl = (current.exp() * (current - reference)).sum(-1)
        return torch.zeros(mask.shape, dtype=kl.dtype, device=kl.device).index_put(mask.nonzero(as_tuple=True), kl)
