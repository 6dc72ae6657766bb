"""The speed report: our GRPO step against TRL's `GRPOTrainer`, and an LSP iteration on the vllm engine against
hf, in one process, with each part's phase times and peak memory.

    pip install -e '.[bench]'                       # TRL is a benchmark-only dependency
    python -m benchmarks.speed                      # = lsp bench speed

The parts are `benchmarks.trl_comparison` (8 prompts x 4 completions x 64 new tokens, the same reward) and
`benchmarks.engine_iterations` (lsp on the judged game, N=8, G=4, 64 new tokens, self-judges on, LoRA and
autocast as `lsp train` has them). Peak memory is the process's
resident high-water mark, reset before each part (Linux). The last line is
`grpo_step_vs_trl=<ratio> lsp_iteration_vllm_vs_hf=<ratio>` (targets: at most 0.5 and at least 1.5).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from jsonargparse import auto_cli

from benchmarks import engine_iterations, trl_comparison
from benchmarks.iteration_time import TIMED_RUN
from benchmarks.iteration_time import Settings as IterationSettings

# The LSP iteration timed: the judged game (R and R_Q self-judged for every answer) with `lsp train`'s defaults
# for LoRA, autocast and sampling.
LSP_RUN = replace(TIMED_RUN, lora_rank=16, autocast=True, min_p=0.1)


@dataclass
class Settings:
    grpo: trl_comparison.Settings = field(default_factory=lambda: trl_comparison.Settings(engine="vllm"))
    """The GRPO step comparison (`--grpo.*`)."""
    lsp: engine_iterations.Settings = field(default_factory=lambda: engine_iterations.Settings(
        settings=IterationSettings(iterations=3, warmup=1, train=replace(LSP_RUN))))
    """The LSP iteration comparison (`--lsp.*`; its run under `--lsp.settings.train.*`)."""


def peak_memory(name: str) -> str:
    """'peak RSS X GiB' since the last call (or the process start), then the high-water mark is reset."""
    status = Path("/proc/self/status")
    if not status.exists():
        return "peak RSS: n/a"
    kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark for the next part
    except OSError:
        pass
    return f"peak RSS of {name}: {kib / 2**20:.1f} GiB"


def run(settings: Settings) -> str:
    peak_memory("start-up")
    grpo_report, grpo_ratio = trl_comparison.compare(settings.grpo, after=peak_memory)
    lsp_report, lsp_speedup = engine_iterations.compare(settings.lsp, between_runs=peak_memory)
    return "\n".join(["## GRPO step: ours vs TRL", "", grpo_report, "",
                      "## LSP iteration: vllm vs hf", "", lsp_report, "",
                      f"grpo_step_vs_trl={grpo_ratio:.2f} lsp_iteration_vllm_vs_hf={lsp_speedup:.2f}"])


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
