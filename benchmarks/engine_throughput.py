"""Raw engine throughput, hf vs vllm, measured in one run.

    python -m benchmarks.engine_throughput --batches [16,64] --new_tokens [64,256]

Each engine generates greedily for the same chat prompts (one `generate_batch`
call per cell, after a short warm-up); in float32 both engines produce the
same tokens, so the ratio of tokens/s is the ratio of wall times. Prints a
Markdown table.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field

import torch
from jsonargparse import auto_cli

from agents.hf import HFPolicy
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from agents.policy import SamplingParams

TOPICS = ["a lighthouse keeper", "the history of bread", "a robot learning to paint", "how rivers form",
          "a chess tournament", "the first day of school", "volcanoes", "a city under the sea"]


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    dtype: str = "float32"
    batches: list[int] = field(default_factory=lambda: [16, 64])
    new_tokens: list[int] = field(default_factory=lambda: [64, 256])


def chats(count: int) -> list:
    """Distinct prompts that ask for long answers."""
    return [[{"role": "user", "content": f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]} "
                                         f"(essay number {i + 1})."}] for i in range(count)]


def measure(policy, batch: int, new_tokens: int) -> tuple[int, float]:
    """(tokens generated, seconds) for one greedy batch."""
    start = time.perf_counter()
    groups = policy.generate_batch(chats(batch), n=1, params=SamplingParams(new_tokens, temperature=0.0))
    return sum(len(c.token_ids) for group in groups for c in group), time.perf_counter() - start


def run(settings: Settings) -> str:
    from agents.vllm_engine import VLLMPolicy

    path = resolve_model(settings.model)
    model, tokenizer = load_model(path, dtype=getattr(torch, settings.dtype))
    engines = {"hf": HFPolicy(model, tokenizer, max_batch_size=max(settings.batches)),
               "vllm": VLLMPolicy(path, tokenizer, dtype=settings.dtype)}
    results = {}
    try:
        for name, policy in engines.items():
            measure(policy, 4, 8)  # warm-up
            for batch in settings.batches:
                for new_tokens in settings.new_tokens:
                    results[name, batch, new_tokens] = tokens, seconds = measure(policy, batch, new_tokens)
                    print(f"{name} batch {batch}, {new_tokens} new tokens: {tokens / seconds:.0f} tok/s",
                          file=sys.stderr, flush=True)
    finally:
        for policy in engines.values():
            policy.close()
    cores = len(os.sched_getaffinity(0))
    lines = [f"{settings.model}, {settings.dtype}, greedy, {platform.machine()} with {cores} cores", "",
             "| batch | new tokens | hf tokens | hf tok/s | vllm tokens | vllm tok/s | vllm / hf |",
             "|---|---|---|---|---|---|---|"]
    for batch in settings.batches:
        for new_tokens in settings.new_tokens:
            hf_tokens, hf_s = results["hf", batch, new_tokens]
            vllm_tokens, vllm_s = results["vllm", batch, new_tokens]
            hf_rate, vllm_rate = hf_tokens / hf_s, vllm_tokens / vllm_s
            lines.append(f"| {batch} | {new_tokens} | {hf_tokens} | {hf_rate:.0f} | {vllm_tokens} | {vllm_rate:.0f} "
                         f"| {vllm_rate / hf_rate:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
