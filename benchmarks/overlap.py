"""Iteration time with overlap (sample iteration k+1 while training on k, one step off-policy) against without.

    python -m benchmarks.overlap --settings.iterations 4 --settings.warmup 1

Runs `benchmarks.iteration_time` twice on the same run, without and with `--overlap`, each in a fresh process
(`benchmarks.fresh_process`: one in-process vLLM engine per process). The default run is the CPU recipe's game
with lsp-zero (no model judges, which overlap cannot run on the model being trained with LoRA) on the vllm engine. With overlap, generation runs during
the reference and training phases, so the phases no longer add up to the iteration; `overlap_wait` is the time
the trainer then waits for the next rollout. The last line is `iteration_overlap_vs_sequential=<ratio>` (below 1:
overlap is faster).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace

from jsonargparse import auto_cli

from benchmarks.fresh_process import run_fresh
from benchmarks.iteration_time import Settings as IterationSettings
from benchmarks.iteration_time import TIMED_RUN, table

RECIPE_RUN = replace(TIMED_RUN, game="ConstrainedInstructions-v1", algorithm="lsp-zero", engine="vllm",
                     lora_rank=16, autocast=True, min_p=0.1, max_new_tokens=80,
                     algorithm_args={"aggregation": "prompt_mean", "kl_estimator": "k3"})


@dataclass
class Settings:
    settings: IterationSettings = field(default_factory=lambda: IterationSettings(iterations=4, warmup=1,
                                                                                  train=replace(RECIPE_RUN)))
    """The iteration benchmark's settings (`overlap` is set per run)."""


def run(comparison: Settings) -> str:
    sections, medians = [], {}
    for overlap in (False, True):
        settings = replace(comparison.settings, train=replace(comparison.settings.train, overlap=overlap))
        records = run_fresh("benchmarks.engine_iterations:measured", settings)["records"]
        medians[overlap] = statistics.median(r["time/iteration"] for r in records)
        wait = statistics.median(r["time/overlap_wait"] for r in records)
        clipped = statistics.median(r["loss/clip_fraction"] for r in records)
        sections += [f"### overlap {str(overlap).lower()}", "", table(settings, records), "",
                     f"waiting for the next rollout: {wait:.1f} s; tokens clipped: {clipped:.3f} (medians)", ""]
    sections.append(f"iteration_overlap_vs_sequential={medians[True] / medians[False]:.2f}")
    return "\n".join(sections)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
