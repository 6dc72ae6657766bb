"""Log-probabilities of chosen tokens for training, computing the output head
only where it is needed (the vocabulary is large; responses are short)."""
from __future__ import annotations

import torch


def token_log_probs(model, tokens: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None = None,
                    rows_per_chunk: int = 8) -> torch.Tensor:
    """`out[b, t] = log p(tokens[b, t] | tokens[b, :t])` where `response_mask[b, t]`, else 0.

    Rows are processed in chunks of similar length (each trimmed to its own
    longest row), and the output head runs only at positions that predict a
    response token. The result keeps the autograd graph.
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
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        targets = response_mask[chunk, :width]
        rows, cols = targets.nonzero(as_tuple=True)
        logits = output_logits(model, hidden[rows, cols - 1]).float()
        chosen = logits.gather(-1, ids[rows, cols, None]).squeeze(-1) - logits.logsumexp(-1)
        out = out.index_put((chunk[rows], cols), chosen)
    return out


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The output head as the model's forward applies it (with Gemma-style soft-capping)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    return logits if cap is None else torch.tanh(logits / cap) * cap
