"""The speed report: our GRPO step against TRL's `GRPOTrainer`, and an LSP iteration on the vllm engine against
hf, with each part's phase times and peak memory.

    pip install -e '.[bench]'                       # TRL is a benchmark-only dependency
    python -m benchmarks.speed                      # = lsp bench speed

The parts are `benchmarks.trl_comparison` (8 prompts x 4 completions x 64 new tokens, the same reward, each side
at its defaults for this CPU) and `benchmarks.engine_iterations` (lsp on the judged game, N=8, G=4, 64 new tokens,
self-judges on, LoRA and autocast as `lsp train` has them). Every part runs in a fresh process
(`benchmarks.fresh_process`), so no part's engine, thread settings or memory reach another's, and each peak
memory is that process's own. The last line is `grpo_step_vs_trl=<ratio> lsp_iteration_vllm_vs_hf=<ratio>`
(targets: at most 0.5 and at least 1.5); the first ratio is against TRL's defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from jsonargparse import auto_cli

from benchmarks import engine_iterations, trl_comparison
from benchmarks.iteration_time import TIMED_RUN
from benchmarks.iteration_time import Settings as IterationSettings

# The LSP iteration timed: the judged game (R and R_Q self-judged for every answer) with `lsp train`'s defaults
# for LoRA, autocast and sampling.
LSP_RUN = replace(TIMED_RUN, lora_rank=16, autocast=None, min_p=0.1)


@dataclass
class Settings:
    grpo: trl_comparison.Settings = field(default_factory=trl_comparison.Settings)
    """The GRPO step comparison (`--grpo.*`)."""
    lsp: engine_iterations.Settings = field(default_factory=lambda: engine_iterations.Settings(
        settings=IterationSettings(iterations=3, warmup=1, train=replace(LSP_RUN))))
    """The LSP iteration comparison (`--lsp.*`; its run under `--lsp.settings.train.*`)."""


def run(settings: Settings) -> str:
    grpo_report, grpo_ratio, _ = trl_comparison.compare(settings.grpo)
    lsp_report, lsp_speedup, _ = engine_iterations.compare(settings.lsp)
    return "\n".join(["## GRPO step: ours vs TRL", "", grpo_report, "",
                      "## LSP iteration: vllm vs hf", "", lsp_report, "",
                      f"grpo_step_vs_trl={grpo_ratio:.2f} lsp_iteration_vllm_vs_hf={lsp_speedup:.2f}"])


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
