"""The learning result: train `lsp` and `lsp-zero` with the CPU recipe, one after the other on the whole machine,
and compare each final model with the base on the held-out instruction-following suite.

    python -m benchmarks.learning_result --time_limit_minutes 120

Each algorithm trains in its own `lsp train --config RECIPE` process with the same seed. Each final adapter is
then evaluated against the base model with `lsp eval`: the strict pass rate on the held-out suite (`suite`,
never read by training) with a paired 95% CI, and the pairwise win rate on the bundled open-ended prompts (a
check that general answers did not get worse). The final adapters, metrics, held-out reports and a plot of both
runs go to `results`, so the result can be checked without retraining.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jsonargparse import auto_cli

from algorithms.checkpoint import latest_checkpoint
from algorithms.run_log import plot_runs, read_metrics
from evaluation.evaluate import EvalConfig, evaluate

RECIPE = str(Path(__file__).resolve().parent.parent / "recipes" / "instruction-following-cpu.yaml")


@dataclass
class Settings:
    algorithms: list[str] = field(default_factory=lambda: ["lsp", "lsp-zero"])
    recipe: str = RECIPE
    time_limit_minutes: float = 120.0
    """Training budget of each run."""
    train_args: list[str] = field(default_factory=list)
    """Extra `lsp train` flags, the same for every algorithm."""
    suite: str = "if-heldout"
    winrate_judge: str = "pairwise"
    eval_max_new_tokens: int = 128
    output: str = "runs/learning"
    results: str = "benchmarks/results/learning"
    """Where the final adapters, metrics and reports are copied."""


def train(settings: Settings, algorithm: str) -> Path:
    """One `lsp train` run of the recipe; returns its run folder."""
    output = Path(settings.output) / algorithm
    output.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "lsp.cli", "train", "--config", settings.recipe, "--algorithm", algorithm,
               "--time_limit_minutes", str(settings.time_limit_minutes), "--output", str(output),
               *settings.train_args]
    with open(Path(settings.output) / f"{algorithm}.log", "w") as log:
        if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise RuntimeError(f"training {algorithm} failed; see {log.name}")
    return max(output.iterdir(), key=lambda path: path.stat().st_mtime)


def keep(settings: Settings, algorithm: str, run_dir: Path, reports: dict[str, Path]) -> None:
    """Copy the final adapter, the run's metrics, transcripts and curves, and the evaluation reports (with the
    held-out summary and plot) into `results/ALGORITHM/`."""
    target = Path(settings.results) / algorithm
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(latest_checkpoint(run_dir) / "model", target)
    for name in ("metrics.jsonl", "config.yaml", "eval.json", "transcripts.md", "curves.png"):
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, target / name)
    for name, folder in reports.items():
        shutil.copy(folder / "report.json", target / f"{name}.report.json")
    for source, name in (("summary.md", "heldout.summary.md"), ("strict_pass.png", "strict_pass.png")):
        if (reports["heldout"] / source).exists():
            shutil.copy(reports["heldout"] / source, target / name)


def run(settings: Settings) -> str:
    Path(settings.output).mkdir(parents=True, exist_ok=True)
    lines = ["| algorithm | iterations | held-out strict pass: base -> trained (paired difference, 95% CI) "
             f"| win rate vs base ({settings.winrate_judge}, 95% CI) | final KL |", "|---|---|---|---|---|"]
    runs = {}
    for algorithm in settings.algorithms:
        runs[algorithm] = run_dir = train(settings, algorithm)
        suite = evaluate(EvalConfig(mode="verifiable", suite=settings.suite, model=str(run_dir),
                                    max_new_tokens=settings.eval_max_new_tokens,
                                    output=str(Path(settings.output) / "evals")))
        winrate = evaluate(EvalConfig(model=str(run_dir), judge=settings.winrate_judge,
                                      max_new_tokens=settings.eval_max_new_tokens,
                                      output=str(Path(settings.output) / "evals")))
        keep(settings, algorithm, run_dir, {"heldout": suite, "winrate": winrate})
        heldout = json.loads((suite / "report.json").read_text())
        win = json.loads((winrate / "report.json").read_text())["winrate"]
        metrics = read_metrics(run_dir)
        base, trained = heldout["scores"]["baseline"]["strict"], heldout["scores"]["candidate"]["strict"]
        difference = heldout["difference"]
        lines.append(f"| {algorithm} | {len(metrics)} | {base:.1%} -> {trained:.1%} ({difference['mean']:+.1%}, "
                     f"{difference['ci_low']:+.1%} to {difference['ci_high']:+.1%}) | {win['win_rate']:.1%} "
                     f"({win['ci_low']:.1%} - {win['ci_high']:.1%}) | {metrics[-1].get('loss/kl', float('nan')):.4f} |")
    plot_runs(runs, Path(settings.results) / "curves.png", smooth=5)
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
