"""The training step's forward and backward passes on padded rows against packed rows (`--packing`).

    python -m benchmarks.packing          # = lsp bench packing

The base model with the recipe's LoRA adapter (rank 16 on every linear layer) samples 4 answers to each of
`prompts` held-out prompts as the recipe samples (temperature 1, min_p 0.1, 80 new tokens), so that rows vary in
length as a rollout's do. The trainer's passes over them (rows sorted by length, `rows_per_pass` per pass, under
bf16 autocast where it is fast) then run as padded rows and as packed rows in turn, `repeats` times after a
warm-up: each pass computes the chosen tokens' log-probs and backpropagates their sum. The report gives the
seconds of each, the share of pad tokens the padded passes compute, and the largest log-prob difference.
Packing computes no pad token but attends over the whole packed sequence with a block-diagonal mask; on a CPU
that mask is dense, so attention costs (rows x length)^2 instead of rows x length^2.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch
from jsonargparse import auto_cli

from agents.hf import HFPolicy
from agents.logprobs import pad_rows, token_log_probs
from agents.lora import ALL_LINEAR, add_lora
from agents.models import DEFAULT_MODEL, bf16_is_fast, load_model, resolve_model
from agents.policy import SamplingParams
from evaluation.suite import load_suite


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    prompts: int = 8
    """Held-out prompts, each answered 4 times (one iteration's 32 solver rows in the recipe)."""
    rows_per_pass: int = 4
    max_new_tokens: int = 80
    repeats: int = 3
    suite: str = "if-heldout"


def run(settings: Settings) -> str:
    model, tokenizer = load_model(resolve_model(settings.model), dtype=torch.float32)
    policy = HFPolicy(model, tokenizer)
    try:
        torch.manual_seed(0)
        chats = [[{"role": "user", "content": item.prompt}] for item in load_suite(settings.suite).items]
        groups = policy.generate_batch(chats[:settings.prompts], 4,
                                       SamplingParams(settings.max_new_tokens, temperature=1.0, min_p=0.1))
    finally:
        policy.close()
    completions = [c for group in groups for c in group]
    tokens, attention, response = pad_rows([c.prompt_ids for c in completions], [c.token_ids for c in completions],
                                           tokenizer.eos_token_id)
    model = add_lora(model, 16, 32, list(ALL_LINEAR), settings.model)
    passes = torch.argsort(attention.sum(-1), descending=True).split(settings.rows_per_pass)
    autocast = bf16_is_fast("cpu")
    seconds: dict[bool, list[float]] = {False: [], True: []}
    logprobs: dict[bool, torch.Tensor] = {}
    for round_ in range(settings.repeats + 1):
        for packed in (False, True) if round_ % 2 else (True, False):
            start = time.perf_counter()
            logprobs[packed] = forward_backward_passes(model, passes, tokens, attention, response, packed, autocast)
            if round_:
                seconds[packed].append(time.perf_counter() - start)
    computed = sum(int(attention[rows].sum(-1).max()) * len(rows) for rows in passes)
    padding = 1 - int(attention.sum()) / computed
    gap = float((logprobs[True] - logprobs[False]).abs().max())
    padded, packed = statistics.median(seconds[False]), statistics.median(seconds[True])
    return "\n".join([
        f"{settings.model} + LoRA rank 16, {len(completions)} rows of {int(attention.sum(-1).min())}-"
        f"{int(attention.sum(-1).max())} tokens in passes of {settings.rows_per_pass}, "
        f"{'bf16 autocast' if autocast else 'float32'}, {platform.machine()} with {len(os.sched_getaffinity(0))} "
        f"cores, {settings.repeats} rounds", "",
        "| rows | forward + backward, s (median) | rounds | padded / this |", "|---|---|---|---|",
        f"| padded | {padded:.2f} | {', '.join(f'{s:.2f}' for s in seconds[False])} | 1.00 |",
        f"| packed | {packed:.2f} | {', '.join(f'{s:.2f}' for s in seconds[True])} | {padded / packed:.2f} |", "",
        f"pad tokens in the padded passes: {padding:.1%} of the tokens computed; largest log-prob difference, "
        f"packed against padded: {gap:.1e}"])


def forward_backward_passes(model, passes, tokens, attention, response, packed: bool, autocast: bool) -> torch.Tensor:
    """Every pass's chosen-token log-probs, backpropagated; returns them all (detached)."""
    out = torch.zeros(tokens.shape)
    model.zero_grad()
    for rows in passes:
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            logprobs = token_log_probs(model, tokens[rows], attention[rows], response[rows], packed=packed)
        logprobs.sum().backward()
        out[rows] = logprobs.detach()
    return out


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
