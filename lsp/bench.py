"""`lsp bench NAME`: run one of the benchmarks in `benchmarks/` and print its Markdown table.

Each benchmark module has a `Settings` dataclass (its flags) and `run(settings) -> str`.
`python -m benchmarks.NAME` runs the same code.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

from jsonargparse import auto_cli
from rich.console import Console
from rich.table import Table

BENCHMARKS = {
    "engine-throughput": "benchmarks.engine_throughput",
    "engine-iterations": "benchmarks.engine_iterations",
    "iteration-time": "benchmarks.iteration_time",
    "collector-overhead": "benchmarks.collector_overhead",
    "trl-comparison": "benchmarks.trl_comparison",
    "learning-result": "benchmarks.learning_result",
    "sampling-sweep": "benchmarks.sampling_sweep",
    "lora-sync": "benchmarks.lora_sync",
    "sandbox-overhead": "benchmarks.sandbox_overhead",
    "collector-load": "benchmarks.collector_load",
    "game-signal": "benchmarks.game_signal",
    "speed": "benchmarks.speed",
    "engine-precision": "benchmarks.engine_precision",
    "overlap": "benchmarks.overlap",
    "rollout-scaling": "benchmarks.rollout_scaling",
    "judge-layout": "benchmarks.judge_layout",
    "engine-threads": "benchmarks.engine_threads",
    "packing": "benchmarks.packing",
    "cluster-eval": "benchmarks.cluster_eval",
    "oversized-actions": "benchmarks.oversized_actions",
    "min-p-mask": "benchmarks.min_p_mask",
}


def summary(path: str) -> str:
    """The first paragraph of a benchmark module's docstring, on one line, read without importing it."""
    source = Path(importlib.util.find_spec(path).origin).read_text()
    return " ".join((ast.get_docstring(ast.parse(source)) or "").split("\n\n")[0].split())


def list_benchmarks(console: Console) -> None:
    table = Table("benchmark", "what it measures")
    for name, path in BENCHMARKS.items():
        table.add_row(name, summary(path))
    console.print(table)
    console.print("run one with: lsp bench NAME [--help]")


def benchmark_settings(name: str, args: list[str]):
    """(the benchmark's module, its settings parsed from `args`)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; benchmarks: {', '.join(BENCHMARKS)}")
    module = importlib.import_module(BENCHMARKS[name])
    return module, auto_cli(module.Settings, args=args, prog=f"lsp bench {name}",
                            description=summary(BENCHMARKS[name]))


def run_benchmark(module, settings, console: Console) -> str:
    """Run a benchmark (`benchmark_settings`), print and return its report."""
    report = module.run(settings)
    console.print(report, markup=False, highlight=False)
    return report
