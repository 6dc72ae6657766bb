"""Log-probabilities of chosen tokens for training, computing the output head
only where it is needed (the vocabulary is large; responses are short).

With `SamplingParams`, the log-probabilities are those of the distribution
the engines actually sample from: logits divided by the temperature, tokens
outside the min-p / top-p set dropped, the rest renormalised. The kept set
is a constant of the step (no gradient flows through the truncation), as in
the sampler.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from agents.policy import SamplingParams


def pad_rows(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int = 0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt + completion rows: the token ids, the attention mask and the mask of completion
    tokens (both bool). Every batch of rows to score or train on is built here."""
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.bool)
    response = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        end = len(prompt) + len(completion)
        tokens[i, :end] = torch.tensor([*prompt, *completion], dtype=torch.long)
        attention[i, :end] = True
        response[i, len(prompt):end] = True
    return tokens, attention, response


def token_log_probs(model, tokens: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None = None,
                    sampling: SamplingParams | None = None, rows_per_chunk: int = 8, packed: bool = False) -> torch.Tensor:
    """`out[b, t] = log p(tokens[b, t] | tokens[b, :t])` where `response_mask[b, t]`, else 0.

    `p` is the raw model distribution, or the one `sampling` samples from.
    Rows are processed in chunks of similar length (each trimmed to its own
    longest row), and the output head runs only at positions that predict a
    response token. With `packed`, a chunk's rows (right-padded) run as one
    sequence without their padding (`packed_hidden_states`). The result keeps
    the autograd graph.
    """
    response_mask = attention_mask if response_mask is None else response_mask
    response_mask = response_mask.bool() & attention_mask.bool()
    response_mask[:, 0] = False  # nothing predicts the first token
    out = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    lengths = attention_mask.sum(-1)
    order = torch.argsort(lengths, descending=True)
    for chunk in order.split(rows_per_chunk):
        width = int(lengths[chunk].max())
        ids, mask = tokens[chunk, :width], attention_mask[chunk, :width]
        if packed:
            hidden = packed_hidden_states(model, ids, mask)
        else:
            hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        targets = response_mask[chunk, :width]
        rows, cols = targets.nonzero(as_tuple=True)
        logits = output_logits(model, hidden[rows, cols - 1])
        chosen = processed_log_probs(logits, ids[rows, cols], sampling)
        out = out.index_put((chunk[rows], cols), chosen)
    return out


def packed_hidden_states(model, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states of right-padded rows, computed as one sequence of their real tokens:
    position ids restart at each row, from which transformers builds a block-diagonal causal mask, so no row
    sees another and no pad token is computed. Pad positions of the result are 0."""
    lengths = attention_mask.sum(-1)
    if not torch.equal(attention_mask.bool(), torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]):
        raise ValueError("packing needs right-padded rows (each row's tokens first, then its padding)")
    keep = attention_mask.bool()
    positions = torch.cat([torch.arange(int(length), device=tokens.device) for length in lengths])
    packed = model.get_decoder()(input_ids=tokens[keep][None], position_ids=positions[None],
                                 use_cache=False).last_hidden_state[0]
    hidden = packed.new_zeros(*tokens.shape, packed.shape[-1])
    return hidden.index_put(keep.nonzero(as_tuple=True), packed)


def completion_log_probs(model, prompt_ids: list[int], token_ids: list[int],
                         sampling: SamplingParams | None = None) -> list[float]:
    """`token_log_probs` of one completion after its prompt, without gradients (e.g. to check an engine's)."""
    tokens, attention, response = (t.to(model.device) for t in pad_rows([prompt_ids], [token_ids]))
    with torch.no_grad():
        return token_log_probs(model, tokens, attention, response, sampling)[0, len(prompt_ids):].tolist()


def processed_log_probs(logits: torch.Tensor, targets: torch.Tensor, sampling: SamplingParams | None = None) -> torch.Tensor:
    """log p(target) under `sampling`'s distribution over `logits` ([positions, vocab]), in float32.

    Greedy decoding (temperature 0) and `sampling=None` give the raw
    log-softmax. The target always stays in the kept set, so the result is
    finite even where a sampler's rounding differs.
    """
    logits = logits.float()
    kept = logits
    if sampling is not None and sampling.temperature > 0:
        logits = kept = logits / sampling.temperature
        if sampling.min_p > 0 or sampling.top_p < 1:  # else nothing is cut: no mask to build
            keep = _kept_tokens(logits.detach(), sampling)
            keep.scatter_(-1, targets[:, None], True)
            kept = logits.masked_fill(~keep, float("-inf"))
    return logits.gather(-1, targets[:, None]).squeeze(-1) - kept.logsumexp(-1)


def _kept_tokens(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """The min-p, then top-p, set of each row (a boolean mask), as vLLM's sampler keeps it."""
    keep = torch.ones_like(logits, dtype=torch.bool)
    if sampling.min_p > 0:  # p >= min_p * p_max, i.e. logit >= max logit + log(min_p): no softmax needed
        keep &= logits >= logits.max(-1, keepdim=True).values + math.log(sampling.min_p)
    if sampling.top_p < 1:
        probs = logits.masked_fill(~keep, float("-inf")).softmax(-1)
        sorted_probs, order = probs.sort(-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely tokens
        keep_sorted = before < sampling.top_p
        keep &= torch.zeros_like(keep).scatter(-1, order, keep_sorted)
    return keep


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The output head as the model's forward applies it (with Gemma-style soft-capping)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    return logits if cap is None else torch.tanh(logits / cap) * cap
