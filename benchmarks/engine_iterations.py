"""LSP iteration time on the vllm engine vs hf with the same config, and the
weight sync's share of an iteration, measured in one run.

    python -m benchmarks.engine_iterations --settings.iterations 3 --settings.warmup 1

Runs `benchmarks.iteration_time` once per engine (hf first, then vllm) and
prints each phase table, the speed-up (target: vllm at least 1.5x faster)
and the weight sync (push + verification) as a share of the vllm iteration
(target: under 5%).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace

from jsonargparse import auto_cli

from benchmarks.iteration_time import Settings as IterationSettings
from benchmarks.iteration_time import measure, table


@dataclass
class Settings:
    settings: IterationSettings = field(default_factory=lambda: IterationSettings(iterations=3, warmup=1))
    """The iteration benchmark's settings (its engine is set per run)."""
    engines: list[str] = field(default_factory=lambda: ["hf", "vllm"])
    """The first is the baseline, the last the engine compared with it."""


def run(comparison: Settings) -> str:
    return compare(comparison)[0]


def compare(comparison: Settings, between_runs=lambda engine: None) -> tuple[str, float]:
    """The report, and how many times faster the last engine's iteration is than the first's (medians).
    `between_runs(engine)` is called after each engine's run (e.g. to read and reset peak memory)."""
    medians, sections = {}, []
    for engine in comparison.engines:
        settings = replace(comparison.settings, train=replace(comparison.settings.train, engine=engine))
        records = measure(settings)
        medians[engine] = {key: statistics.median(r[key] for r in records)
                           for key in ("time/iteration", "time/sync", "time/generate")}
        sync_share = statistics.median(r["time/sync"] / r["time/iteration"] for r in records)
        gap = max(r["sync/max_logprob_gap"] for r in records)
        sections += [f"### engine {engine}", "", table(settings, records), "",
                     f"weight sync: {medians[engine]['time/sync']:.2f} s, {100 * sync_share:.1f}% of the iteration "
                     f"(median); largest probe log-prob gap after a sync: {gap:.1e}", ""]
        if note := between_runs(engine):
            sections += [note, ""]
    base, other = comparison.engines[0], comparison.engines[-1]
    speedup = medians[base]["time/iteration"] / medians[other]["time/iteration"]
    generate = medians[base]["time/generate"] / medians[other]["time/generate"]
    sections.append(f"**{other} vs {base}: iteration {speedup:.2f}x faster, generation {generate:.2f}x faster** "
                    f"(medians)")
    return "\n".join(sections), speedup


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
