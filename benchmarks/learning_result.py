"""The learning result: train `lsp` and `lsp-zero` for the same wall-clock budget and compare both with the
base model.

    python -m benchmarks.learning_result --time_limit_minutes 62

Each algorithm trains in its own `lsp train` process, with the same seed and settings (`train_args`); by default
the runs share the machine, each on an equal share of its cores. Each final checkpoint is then evaluated against
the base model with `lsp eval`: win rate on the bundled held-out prompts under each of `judges`, and accuracy on
a held-out set of `ConstrainedInstructions-v0` moves (written once, shared by both runs). Prints a Markdown table
and writes `curves.png` (both runs' curves, smoothed) to `output`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jsonargparse import auto_cli

from algorithms.run_log import plot_runs
from lsp.evaluate import EvalConfig, evaluate


@dataclass
class Settings:
    algorithms: list[str] = field(default_factory=lambda: ["lsp", "lsp-zero"])
    time_limit_minutes: float = 62.0
    """Training budget of each run."""
    train_args: list[str] = field(default_factory=lambda: [
        "--engine", "hf", "--iterations", "100000", "--num_queries", "4", "--batch_size", "2",
        "--grad_accumulation", "2", "--group_size", "4", "--max_new_tokens", "48", "--lr", "1e-5",
        "--algorithm_args", "{normalize_advantages: true}", "--save_every", "5", "--seed", "0"])
    """Extra `lsp train` flags, the same for every algorithm."""
    parallel: bool = True
    """Train all algorithms at once, each on an equal share of the cores (else one after another)."""
    judges: list[str] = field(default_factory=lambda: ["pairwise", "helpfulness"])
    """Win-rate judges (see `lsp eval --help`)."""
    verifiable_game: str = "ConstrainedInstructions-v0"
    heldout_size: int = 50
    """Held-out moves of the verifiable game."""
    eval_max_new_tokens: int = 128
    """Answer length in the evaluations."""
    output: str = "runs/learning"


def train(settings: Settings) -> dict[str, Path]:
    """Run `lsp train` once per algorithm; returns algorithm -> run folder."""
    output = Path(settings.output)
    threads = max(1, len(os.sched_getaffinity(0)) // (len(settings.algorithms) if settings.parallel else 1))
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    processes = {}
    for algorithm in settings.algorithms:
        command = [sys.executable, "-m", "lsp.cli", "train", "--algorithm", algorithm, *settings.train_args,
                   "--time_limit_minutes", str(settings.time_limit_minutes), "--output", str(output / algorithm)]
        log = open(output / f"{algorithm}.log", "w")
        processes[algorithm] = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        if not settings.parallel:
            processes[algorithm].wait()
    for algorithm, process in processes.items():
        if process.wait() != 0:
            raise RuntimeError(f"training {algorithm} failed; see {output / f'{algorithm}.log'}")
    return {algorithm: max((output / algorithm).iterdir()) for algorithm in settings.algorithms}


def run(settings: Settings) -> str:
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    runs = train(settings)
    lines = ["| algorithm | iterations | judge | win rate vs base (95% CI) | wins / ties / losses |",
             "|---|---|---|---|---|"]
    accuracy = {}
    for algorithm, run_dir in runs.items():
        iterations = len((run_dir / "metrics.jsonl").read_text().splitlines())
        for judge in settings.judges:
            folder = evaluate(EvalConfig(model=str(run_dir), judge=judge, max_new_tokens=settings.eval_max_new_tokens,
                                           output=str(output / "evals")))
            result = json.loads((folder / "report.json").read_text())["winrate"]
            lines.append(f"| {algorithm} | {iterations} | {judge} | {result['win_rate']:.1%} "
                         f"({result['ci_low']:.1%} - {result['ci_high']:.1%}) | "
                         f"{result['wins']} / {result['ties']} / {result['losses']} |")
        folder = evaluate(EvalConfig(mode="verifiable", game=settings.verifiable_game, model=str(run_dir),
                                     heldout=str(output / "verifiable_heldout.json"), heldout_size=settings.heldout_size,
                                     max_new_tokens=settings.eval_max_new_tokens, output=str(output / "evals")))
        accuracy[algorithm] = json.loads((folder / "report.json").read_text())["accuracy"]
    lines += ["", f"| model | {settings.verifiable_game} accuracy (95% CI) |", "|---|---|"]
    base = next(iter(accuracy.values()))["baseline"]
    for name, result in [("base", base)] + [(a, r["candidate"]) for a, r in accuracy.items()]:
        lines.append(f"| {name} | {result['accuracy']:.1%} ({result['ci_low']:.1%} - {result['ci_high']:.1%}) |")
    plot_runs(runs, output / "curves.png", smooth=5)
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
