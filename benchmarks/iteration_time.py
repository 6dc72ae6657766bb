"""Time per self-play iteration, broken down by phase.

    python -m benchmarks.iteration_time --iterations 4 --warmup 1 [--train.engine vllm ...]

Runs real training iterations (SmolLM2-135M-Instruct by default, N=8, G=4,
64 new tokens) and prints the median time of each phase and its share of the
iteration, as a Markdown table. The run is an `lsp train` config (`--train.*`,
every `TrainConfig` setting), by default the judged game with full fine-tuning.
"""
from __future__ import annotations

import platform
import statistics
import tempfile
from dataclasses import dataclass, field, replace

from jsonargparse import auto_cli

from algorithms.config import TrainConfig
from algorithms.trainer import Trainer

PHASES = ["generate", "env_and_judge", "reference", "train", "overlap_wait", "sync"]


# The run timed by default: the judged game (self-judges on every answer), full fine-tuning, plain sampling.
TIMED_RUN = TrainConfig(game="LanguageSelfPlay-v0", algorithm="lsp", engine="hf", dtype="float32", lora_rank=0,
                        min_p=0.0, autocast=False, eval_suite=None, num_queries=8, group_size=4,
                        max_new_tokens=64, save_every=10**6)


@dataclass
class Settings:
    iterations: int = 4
    """Measured iterations (after the warm-up)."""
    warmup: int = 1
    """Iterations run first and not counted."""
    train: TrainConfig = field(default_factory=lambda: replace(TIMED_RUN))
    """The run (`lsp train` settings; its iterations and output are set here)."""


def measure(settings: Settings) -> list[dict]:
    """The metrics of each measured iteration (after the warm-up)."""
    config = replace(settings.train, iterations=settings.warmup + settings.iterations,
                     output=tempfile.mkdtemp(prefix="lsp-bench-"))
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
    run = settings.train
    lines = [f"{run.algorithm}, engine {run.engine}, {run.dtype}, N={run.num_queries}, "
             f"G={run.group_size}, {run.max_new_tokens} new tokens, median of {len(records)} iterations "
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
