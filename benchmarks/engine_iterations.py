"""LSP iteration time on the vllm engine vs hf with the same config, and the
weight sync's share of an iteration, measured in one run.

    python -m benchmarks.engine_iterations --settings.iterations 3 --settings.warmup 1

Runs `benchmarks.iteration_time` once per engine (hf first, then vllm), each
in a fresh process (`benchmarks.fresh_process`), and prints each phase table
with the process's peak memory, the speed-up (target: vllm at least 1.5x
faster), the judges' share of the vllm iteration (target: at most 15%) and the
weight sync (push + verification) as a share of it (target: under 5%).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace

from jsonargparse import auto_cli

from benchmarks.fresh_process import run_fresh
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


def measured(settings: IterationSettings) -> dict:
    """`iteration_time.measure` as a benchmark part (`benchmarks.fresh_process`)."""
    return {"records": measure(settings)}


def compare(comparison: Settings) -> tuple[str, float, dict]:
    """The report, how many times faster the last engine's iteration is than the first's (medians), and each
    engine's part result (its records and peak memory)."""
    medians, sections, results = {}, [], {}
    for engine in comparison.engines:
        settings = replace(comparison.settings, train=replace(comparison.settings.train, engine=engine))
        results[engine] = result = run_fresh("benchmarks.engine_iterations:measured", settings)
        records = result["records"]
        medians[engine] = {key: statistics.median(r[key] for r in records)
                           for key in ("time/iteration", "time/sync", "time/generate", "time/env_and_judge")}
        sync_share = statistics.median(r["time/sync"] / r["time/iteration"] for r in records)
        judge_share = statistics.median(r["time/env_and_judge"] / r["time/iteration"] for r in records)
        gap = max(r["sync/max_logprob_gap"] for r in records)
        peak = "n/a" if result["peak_rss_gib"] is None else f"{result['peak_rss_gib']:.1f} GiB"
        sections += [f"### engine {engine}", "", table(settings, records), "",
                     f"env and judges: {100 * judge_share:.0f}% of the iteration; weight sync: "
                     f"{medians[engine]['time/sync']:.2f} s, {100 * sync_share:.1f}% (medians); largest probe "
                     f"log-prob gap after a sync: {gap:.1e}; peak RSS of the process: {peak}", ""]
    base, other = comparison.engines[0], comparison.engines[-1]
    speedup = medians[base]["time/iteration"] / medians[other]["time/iteration"]
    generate = medians[base]["time/generate"] / medians[other]["time/generate"]
    sections.append(f"**{other} vs {base}: iteration {speedup:.2f}x faster, generation {generate:.2f}x faster** "
                    f"(medians)")
    return "\n".join(sections), speedup, results


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
