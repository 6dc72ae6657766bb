"""Rollout throughput of one Ray rollout worker against two, on the same iterations.

    python -m benchmarks.rollout_scaling

Each worker count gets its own local Ray cluster and `algorithms.cluster.RolloutWorker` actors (one CPU each), as
`lsp train --cluster.address local` starts them. After a warm-up collection, each repeat plays one iteration's
`num_queries` groups split evenly over the workers, side by side, with the same seeds for both counts: generation,
the game's verification and the reference pass, i.e. everything a worker does per iteration. Throughput is the
generated tokens over the wall time. The last line is `rollout_tokens_per_s_2_vs_1=<ratio>` (target: at least 1.6 on
a machine with 4 or more cores; with fewer cores than workers' threads, the workers share them).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field, replace

from jsonargparse import auto_cli

from algorithms.config import ClusterConfig, TrainConfig


@dataclass
class Settings:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        algorithm="lsp-zero", num_queries=8, group_size=4, max_new_tokens=64, eval_suite=None))
    """The run whose rollouts are measured (its game, engine and sampling)."""
    workers: list[int] = field(default_factory=lambda: [1, 2])
    repeats: int = 3


def measure(settings: Settings, workers: int) -> list[float]:
    """Generated tokens per second of `workers` rollout workers, per repeat."""
    import ray

    from algorithms.cluster import RolloutWorker, start_ray

    cluster = ClusterConfig(address="local", rollout_workers=workers, trainer_processes=1)
    config = replace(settings.train, cluster=cluster)
    start_ray(cluster)
    try:
        actors = [ray.remote(num_cpus=1)(RolloutWorker).remote(config) for _ in range(workers)]
        share = config.num_queries // workers
        rates = []
        for repeat in range(settings.repeats + 1):  # the first is a warm-up
            seed = 1_000 * repeat
            start = time.perf_counter()
            results = ray.get([a.collect.remote(share, seed + i * share) for i, a in enumerate(actors)])
            wall = time.perf_counter() - start
            tokens = sum(len(row.completion.token_ids) for collected, _ in results for row in collected.rows)
            if repeat:
                rates.append(tokens / wall)
        ray.get([a.close.remote() for a in actors])
        return rates
    finally:
        ray.shutdown()


def run(settings: Settings) -> str:
    rates = {workers: measure(settings, workers) for workers in settings.workers}
    median = {workers: statistics.median(values) for workers, values in rates.items()}
    lines = [f"machine: {os.cpu_count()} CPUs; engine {settings.train.engine}, N={settings.train.num_queries}, "
             f"G={settings.train.group_size}, {settings.train.max_new_tokens} new tokens, {settings.repeats} repeats",
             "| rollout workers | generated tokens/s (median) | each repeat |", "|---|---|---|"]
    lines += [f"| {w} | {median[w]:.1f} | {', '.join(f'{r:.1f}' for r in rates[w])} |" for w in settings.workers]
    first, last = settings.workers[0], settings.workers[-1]
    lines.append(f"rollout_tokens_per_s_{last}_vs_{first}={median[last] / median[first]:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings, as_positional=False)))
