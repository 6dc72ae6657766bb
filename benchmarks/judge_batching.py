"""Self-judges on the trainer's reference model: one padded pass over a whole batch of exchanges against
chunks of rows of similar length (`HFPolicy(score_batch_rows=...)`), timed and compared.

    python -m benchmarks.judge_batching          # = lsp bench judge-batching

The base model answers `pairs` held-out prompts greedily (one iteration's answers in the recipe: N=8 x G=4).
Both self-judges of the judged game (`helpfulness` for R, `rubric` for R_Q, "expected" mode) then score all the
pairs on the reference as the trainer runs it (transformers under bfloat16 autocast), once per setting of
`rows`, for `repeats` rounds after a warm-up; the settings take turns within each round, so that a slower
stretch of the machine falls on all of them. transformers keeps no cache between calls, so every round does
the whole work again. Each line gives the median seconds for both judges and the largest score difference
from the first setting (one pass over all rows, the behaviour before chunking).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field

import torch
from jsonargparse import auto_cli

from agents.hf import HFPolicy
from agents.judges import build_judge
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from agents.policy import SamplingParams
from evaluation.suite import load_suite


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    pairs: int = 32
    rows: list[int] = field(default_factory=lambda: [64, 16, 8, 4])
    """Rows per forward pass; the first is the baseline (64: all the pairs in one pass)."""
    judges: list[str] = field(default_factory=lambda: ["helpfulness", "rubric"])
    max_new_tokens: int = 80
    repeats: int = 3
    suite: str = "if-heldout"


def run(settings: Settings) -> str:
    model, tokenizer = load_model(resolve_model(settings.model), dtype=torch.float32)
    model.requires_grad_(False)
    policy = HFPolicy(model, tokenizer, autocast=torch.bfloat16)
    try:
        prompts = [item.prompt for item in load_suite(settings.suite).items[:settings.pairs]]
        answers = policy.generate_batch([[{"role": "user", "content": p}] for p in prompts], 1,
                                        SamplingParams(settings.max_new_tokens, temperature=0.0))
        pairs = [(prompt, completion.text) for prompt, (completion,) in zip(prompts, answers)]
        judges = [build_judge(name, policy, mode="expected") for name in settings.judges]
        times: dict[int, list[float]] = {rows: [] for rows in settings.rows}
        scores: dict[int, list[float]] = {}
        for round_ in range(settings.repeats + 1):
            for rows in settings.rows[round_ % len(settings.rows):] + settings.rows[:round_ % len(settings.rows)]:
                policy.score_batch_rows = rows
                start = time.perf_counter()
                scores[rows] = [j.score for judge in judges for j in judge.judge_batch(pairs)]
                if round_:
                    times[rows].append(time.perf_counter() - start)
    finally:
        policy.close()
    baseline = settings.rows[0]
    lines = [f"{settings.model}, judges {' + '.join(settings.judges)} on {len(pairs)} pairs (answers of "
             f"{statistics.mean(len(c.token_ids) for (c,) in answers):.0f} tokens on average), hf bf16 autocast, "
             f"{platform.machine()} with {len(os.sched_getaffinity(0))} cores, {settings.repeats} rounds",
             "", f"| rows per pass | seconds (median) | rounds | {baseline} rows / this | score vs {baseline} rows "
             "(max abs) |", "|---|---|---|---|---|"]
    for rows, seconds in times.items():
        gap = max(abs(a - b) for a, b in zip(scores[rows], scores[baseline]))
        lines.append(f"| {rows} | {statistics.median(seconds):.2f} | {', '.join(f'{s:.2f}' for s in seconds)} | "
                     f"{statistics.median(times[baseline]) / statistics.median(seconds):.2f} | {gap:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
