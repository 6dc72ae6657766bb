"""Run one part of a benchmark in a fresh Python process.

    result = run_fresh("benchmarks.trl_comparison:trl", settings)   # settings: a picklable dataclass

Parts compared with each other must not share a process: an in-process vLLM engine pins torch's threads, and
memory that one part allocated counts in the next one's peak (TRL's first step once took 835 s after our engine
had run in the same process, against ~40 s on its own). The part is `module:function`, called with `settings`;
it returns a dict, to which the child adds its own peak resident memory (`peak_rss_gib`, Linux), its torch
thread count and whether vLLM was imported, so that a report can show nothing slowed it down.
"""
from __future__ import annotations

import importlib
import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path


class PartFailed(RuntimeError):
    """A benchmark part's process exited with an error."""


def run_fresh(target: str, settings, timeout_s: float | None = None) -> dict:
    """`target(settings)` in a new interpreter (its output goes to this one's); returns its result."""
    with tempfile.TemporaryDirectory(prefix="lsp-bench-part-") as folder:
        given, result = Path(folder) / "settings.pkl", Path(folder) / "result.json"
        given.write_bytes(pickle.dumps(settings))
        command = [sys.executable, "-m", "benchmarks.fresh_process", target, str(given), str(result)]
        if subprocess.run(command, timeout=timeout_s).returncode != 0 or not result.exists():
            raise PartFailed(f"the benchmark part {target} failed (its output is above)")
        return json.loads(result.read_text())


def peak_rss_gib() -> float | None:
    """This process's peak resident memory so far (VmHWM), or None where /proc is missing."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    return next(int(line.split()[1]) for line in status.read_text().splitlines()
                if line.startswith("VmHWM:")) / 2**20


def _main(target: str, given: str, result: str) -> None:
    import torch

    module, _, function = target.partition(":")
    settings = pickle.loads(Path(given).read_bytes())
    output = getattr(importlib.import_module(module), function)(settings)
    output.update(peak_rss_gib=peak_rss_gib(), torch_threads=torch.get_num_threads(),
                  vllm_imported="vllm" in sys.modules)
    Path(result).write_text(json.dumps(output))


if __name__ == "__main__":
    _main(*sys.argv[1:4])
