"""Sandbox overhead: wall-clock seconds per program run, this tree's bwrap sandbox against an earlier one.

    python -m benchmarks.sandbox_overhead --runs 30                     # against the audit-hook sandbox
    python -m benchmarks.sandbox_overhead --runs 30 --baseline REVISION  # against the sandbox at REVISION

Runs one small program (`f(21)`, which returns 42, as the code game calls it) `runs` times in each sandbox,
interleaved so that load on the machine falls on all alike: the baseline (`lsp_env/sandbox.py` at the git
revision `baseline`, read with `git show`; by default the last with the audit hook), this tree's bwrap sandbox,
and the same runner without isolation (`none-unsafe`: the interpreter's own cost). Prints the median of each
and the ratio this tree / baseline.
"""
from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import auto_cli

from lsp_env import sandbox

PROGRAM = "def f(x):\n    return sorted(str(x * 2))"


@dataclass
class Settings:
    runs: int = 30
    baseline: str = "8ad547257e5758ef13747627fa812134571145eb"
    """git revision whose lsp_env/sandbox.py is the baseline (by default the audit-hook sandbox)."""


def old_sandbox(revision: str) -> types.ModuleType:
    """The baseline sandbox module, loaded from git history."""
    source = subprocess.run(["git", "show", f"{revision}:lsp_env/sandbox.py"], check=True, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent).stdout
    module = sys.modules["old_sandbox"] = types.ModuleType("old_sandbox")  # dataclasses look their module up
    exec(compile(source, "old_sandbox.py", "exec"), module.__dict__)
    return module


def run(settings: Settings) -> str:
    old = old_sandbox(settings.baseline)
    sandboxes = {
        f"baseline ({settings.baseline[:7]})": lambda: old.run_python(PROGRAM, "f(21)"),
        "bwrap (this tree)": lambda: sandbox.run_python(PROGRAM, "f(21)"),
        "none-unsafe (rlimits only)": lambda: sandbox.run_python(PROGRAM, "f(21)", isolation="none-unsafe"),
    }
    times = {name: [] for name in sandboxes}
    for name, call in sandboxes.items():  # warm-up; the bwrap check runs once here
        assert call().value == "['2', '4']", name
    for _ in range(settings.runs):
        for name, call in sandboxes.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = [f"| {name} | {1000 * median:.1f} |" for name, median in medians.items()]
    ratio = medians["bwrap (this tree)"] / medians[f"baseline ({settings.baseline[:7]})"]
    return "\n".join([f"{settings.runs} runs each, interleaved, {platform.machine()}", "",
                      "| sandbox | ms per run (median) |", "|---|---|", *rows, "",
                      f"this tree / baseline: {ratio:.2f}x"])


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
