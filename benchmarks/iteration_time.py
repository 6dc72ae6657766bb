"""Time per self-play iteration, broken down by phase.

    python -m benchmarks.iteration_time --iterations 4 --warmup 1

Runs real training iterations (SmolLM2-135M-Instruct by default, N=8, G=4,
64 new tokens) and prints the median time of each phase and its share of the
iteration, as a Markdown table.
"""
from __future__ import annotations

import platform
import statistics
import tempfile
from dataclasses import dataclass

from jsonargparse import auto_cli

from agents.models import DEFAULT_MODEL
from algorithms.config import TrainConfig
from algorithms.trainer import Trainer

PHASES = ["generate", "env_and_judge", "reference", "train", "sync"]


@dataclass
class Settings:
    iterations: int = 4
    """Measured iterations (after the warm-up)."""
    warmup: int = 1
    """Iterations run first and not counted."""
    model: str = DEFAULT_MODEL
    algorithm: str = "lsp"
    engine: str = "hf"
    dtype: str = "float32"
    num_queries: int = 8
    group_size: int = 4
    max_new_tokens: int = 64


def measure(settings: Settings) -> list[dict]:
    """The metrics of each measured iteration (after the warm-up)."""
    config = TrainConfig(model=settings.model, algorithm=settings.algorithm, engine=settings.engine,
                         game="LanguageSelfPlay-v0", lora_rank=0, min_p=0.0, autocast=False, eval_suite=None,
                         dtype=settings.dtype, num_queries=settings.num_queries, group_size=settings.group_size,
                         batch_size=settings.num_queries // 2, grad_accumulation=2,
                         max_new_tokens=settings.max_new_tokens, iterations=settings.warmup + settings.iterations,
                         output=tempfile.mkdtemp(prefix="lsp-bench-"), save_every=10**6)
    trainer = Trainer(config)
    records = []
    try:
        for iteration in range(1, config.iterations + 1):
            metrics, _ = trainer.iteration(iteration)
            if iteration > settings.warmup:
                records.append(metrics)
    finally:
        trainer.close()
    return records


def run(settings: Settings) -> str:
    return table(settings, measure(settings))


def table(settings: Settings, records: list[dict]) -> str:
    """A Markdown table of the median time of each phase."""
    total = statistics.median(r["time/iteration"] for r in records)
    lines = [f"{settings.algorithm}, engine {settings.engine}, {settings.dtype}, N={settings.num_queries}, "
             f"G={settings.group_size}, {settings.max_new_tokens} new tokens, median of {len(records)} iterations "
             f"after {settings.warmup} warm-up, {platform.machine()} with {_cores()} cores", "",
             "| phase | seconds (median) | share of iteration |", "|---|---|---|"]
    for phase in PHASES:
        seconds = statistics.median(r[f"time/{phase}"] for r in records)
        lines.append(f"| {phase} | {seconds:.1f} | {seconds / total:.2f} |")
    lines.append(f"| **iteration** | **{total:.1f}** | 1.00 |")
    tokens = statistics.median(r["throughput/generated_tokens_per_s"] for r in records)
    lines += ["", f"generation throughput: {tokens:.0f} tokens/s"]
    return "\n".join(lines)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
