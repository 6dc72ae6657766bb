"""The held-out evaluation of a cluster run on one rollout worker against several: the same greedy answers, faster.

    python -m benchmarks.cluster_eval          # = lsp bench cluster-eval

For each worker count in turn, a local Ray cluster run (one trainer process) is built as `lsp train` builds it,
and its held-out evaluation (`Trainer.heldout_score`: the suite's prompts split over the rollout workers) is
timed `repeats` times after a warm-up. The answers are checked to be the same at every worker count.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from jsonargparse import auto_cli

from agents import SamplingParams
from agents.models import DEFAULT_MODEL
from algorithms.config import ClusterConfig, TrainConfig
from algorithms.trainer import Trainer
from evaluation.suite import load_suite


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    workers: list[int] = field(default_factory=lambda: [1, 2])
    """Rollout worker counts; the first is the baseline."""
    engine: str = "hf"
    prompts: int = 16
    """The first prompts of the suite."""
    max_new_tokens: int = 48
    repeats: int = 3
    suite: str = "if-heldout"


def run(settings: Settings) -> str:
    prompts = [item.prompt for item in load_suite(settings.suite).items[:settings.prompts]]
    greedy = SamplingParams(settings.max_new_tokens, temperature=0.0)
    seconds, answers = {}, {}
    for workers in settings.workers:
        with TemporaryDirectory() as output:
            config = TrainConfig(model=settings.model, engine=settings.engine, eval_suite=None,
                                 num_queries=2 * workers, output=output,
                                 cluster=ClusterConfig(address="local", rollout_workers=workers, trainer_processes=1))
            trainer = Trainer(config, run_dir=Path(output) / "run")
            try:
                answers[workers] = trainer.rollout.answer_prompts(prompts, greedy)  # the warm-up
                times = []
                for _ in range(settings.repeats):
                    start = time.perf_counter()
                    again = trainer.rollout.answer_prompts(prompts, greedy)
                    times.append(time.perf_counter() - start)
                    assert again == answers[workers], "greedy answers changed between repeats"
                seconds[workers] = times
            finally:
                trainer.close()
    baseline = settings.workers[0]
    same = all(answers[workers] == answers[baseline] for workers in settings.workers)
    lines = [f"{settings.model}, engine {settings.engine}, {len(prompts)} prompts of {settings.suite}, "
             f"{settings.max_new_tokens} new tokens (greedy), {platform.machine()} with "
             f"{len(os.sched_getaffinity(0))} cores, one CPU per worker, median of {settings.repeats} after a warm-up; "
             f"answers the same at every worker count: {same}", "",
             f"| rollout workers | seconds (median) | spread | speed-up over {baseline} |", "|---|---|---|---|"]
    for workers in settings.workers:
        median = statistics.median(seconds[workers])
        lines.append(f"| {workers} | {median:.1f} | {min(seconds[workers]):.1f}-{max(seconds[workers]):.1f} | "
                     f"{statistics.median(seconds[baseline]) / median:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
