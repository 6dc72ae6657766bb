"""The min-p mask of the training log-probs: from the logits alone against from a full log-softmax (before).

    python -m benchmarks.min_p_mask          # = lsp bench min-p-mask

`agents.logprobs.processed_log_probs` (forward and backward) on one pass's response positions of the embedded
model's vocabulary, with the recipe's sampling (temperature 1, min_p 0.1), and with nothing cut (min_p 0,
top_p 1, where the mask is now skipped), against the same function with the mask built as before. Interleaved,
median of `repeats`.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch
from jsonargparse import auto_cli

from agents.logprobs import processed_log_probs
from agents.policy import SamplingParams


@dataclass
class Settings:
    positions: int = 320
    """Response positions of one pass (4 rows of 80 tokens)."""
    vocab: int = 49152
    repeats: int = 20


def before(logits: torch.Tensor, targets: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """The previous code: the min-p set from a full log-softmax, and a mask even when nothing is cut."""
    logits = logits.float() / sampling.temperature
    keep = torch.ones_like(logits, dtype=torch.bool)
    if sampling.min_p > 0:
        logp = logits.detach().log_softmax(-1)
        keep &= logp >= logp.max(-1, keepdim=True).values + math.log(sampling.min_p)
    keep.scatter_(-1, targets[:, None], True)
    kept = logits.masked_fill(~keep, float("-inf"))
    return logits.gather(-1, targets[:, None]).squeeze(-1) - kept.logsumexp(-1)


def timed(function, logits, targets, sampling) -> float:
    leaf = logits.clone().requires_grad_()
    start = time.perf_counter()
    function(leaf, targets, sampling).sum().backward()
    return time.perf_counter() - start


def run(settings: Settings) -> str:
    torch.manual_seed(0)
    logits = torch.randn(settings.positions, settings.vocab) * 3
    targets = torch.randint(settings.vocab, (settings.positions,))
    lines = [f"{settings.positions} positions x {settings.vocab} logits, forward and backward, {platform.machine()} "
             f"with {len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads, median of "
             f"{settings.repeats}", "", "| sampling | before (ms) | now (ms) | before / now |", "|---|---|---|---|"]
    for name, sampling in (("min_p 0.1", SamplingParams(min_p=0.1)), ("nothing cut", SamplingParams())):
        torch.testing.assert_close(processed_log_probs(logits, targets, sampling), before(logits, targets, sampling))
        times = {"before": [], "now": []}
        for _ in range(settings.repeats + 1):
            for label, function in (("before", before), ("now", processed_log_probs)):
                times[label].append(timed(function, logits, targets, sampling))
        old, new = (1000 * statistics.median(times[label][1:]) for label in ("before", "now"))
        lines.append(f"| {name} | {old:.1f} | {new:.1f} | {old / new:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
