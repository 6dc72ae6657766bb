"""Torch threads for vLLM's sampling on a CPU: one (the engine's setting before) against all the cores (its default).

    python -m benchmarks.engine_threads          # = lsp bench engine-threads

One vLLM engine in bfloat16 samples one iteration's generation as the recipe does (8 questions, then 4 answers
to each of the 8 tasks, temperature 1 with min_p 0.1, 80 new tokens), with each thread count in turn within a
round, for `repeats` rounds after a warm-up round; a round's tasks and seed are the same for every thread count.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field

from jsonargparse import auto_cli

from agents.models import DEFAULT_MODEL, resolve_model
from agents.vllm_engine import VLLMPolicy
from benchmarks.engine_precision import sample_round
from evaluation.suite import load_suite


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    threads: list[int] = field(default_factory=lambda: [1, len(os.sched_getaffinity(0))])
    """Torch thread counts during engine calls; the first is the baseline."""
    dtype: str = "bfloat16"
    max_new_tokens: int = 80
    repeats: int = 3
    suite: str = "if-heldout"


def run(settings: Settings) -> str:
    policy = VLLMPolicy(resolve_model(settings.model), dtype=settings.dtype)
    tokens = {threads: 0 for threads in settings.threads}
    seconds = {threads: 0.0 for threads in settings.threads}
    try:
        items = load_suite(settings.suite).items
        for round_ in range(settings.repeats + 1):
            tasks = [item.prompt for item in items[8 * round_:8 * round_ + 8]]
            for threads in settings.threads[round_ % 2:] + settings.threads[:round_ % 2]:
                policy.threads = threads
                start = time.perf_counter()
                generated = sample_round(policy, tasks, settings.max_new_tokens, seed=round_)
                if round_:
                    seconds[threads] += time.perf_counter() - start
                    tokens[threads] += generated
    finally:
        policy.close()
    baseline = settings.threads[0]
    rate = {threads: tokens[threads] / seconds[threads] for threads in settings.threads}
    lines = [f"{settings.model}, vllm {settings.dtype}, {platform.machine()} with {len(os.sched_getaffinity(0))} "
             f"cores, {settings.repeats} rounds after a warm-up", "",
             f"| torch threads | tokens | seconds | tok/s | this / {baseline} thread(s) |", "|---|---|---|---|---|"]
    lines += [f"| {threads} | {tokens[threads]} | {seconds[threads]:.1f} | {rate[threads]:.0f} | "
              f"{rate[threads] / rate[baseline]:.2f} |" for threads in settings.threads]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
