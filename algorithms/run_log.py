"""What a training run writes: metrics (JSONL + TensorBoard), readable
transcripts, and a PNG of the main curves."""
from __future__ import annotations

import json
from pathlib import Path

from algorithms.collector import Rollout
from lsp_env.contract import BREAKDOWN, INVALID_MOVE_INFO

PLOTTED = [
    ("reward/solver", "reward/challenger"),
    ("judge/reward", "judge/quality", "judge/passed"),
    ("loss/kl",),
    ("length/solver", "length/challenger"),
    ("groups/no_spread_in_reward", "groups/no_spread"),  # groups that teach nothing
]


class RunLog:
    """Appends per-iteration metrics to `metrics.jsonl` and TensorBoard."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.transcripts_path = self.run_dir / "transcripts.md"
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def log(self, iteration: int, metrics: dict) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(name, value, iteration)
        self.writer.flush()

    def transcripts(self, iteration: int, rollout: Rollout, groups: int = 2) -> None:
        """Append the first `groups` groups of an iteration as Markdown."""
        with self.transcripts_path.open("a") as handle:
            handle.write(f"\n## Iteration {iteration}\n\n" + rollout_markdown(rollout, groups))

    def close(self) -> None:
        self.writer.close()


def rollout_markdown(rollout: Rollout, groups: int | None = None, everything: bool = False) -> str:
    """A readable transcript of the first `groups` groups of a rollout (all by default): each shared move, what
    the first branched player sees, every answer, and each episode's returns with its reward breakdown.
    `everything` adds every prompt and every info key (`lsp play`); a breakdown that is the same for every
    player is shown once."""
    lines = []
    for group, episodes in list(rollout.groups().items())[:groups]:
        lines.append(f"### Group {group}\n")
        shared = [t for t in episodes[0].turns if not t.branch]
        for turn in shared:
            if everything:
                lines.append(f"**{turn.role} sees:**\n\n{_quote(turn.observation)}\n")
            lines.append(f"**{turn.role}:**\n\n{_quote(turn.text)}\n")
        first = next((t for t in episodes[0].turns if t.branch), None)
        if first is not None and (everything or (shared and first.observation != shared[-1].text)):
            lines.append(f"**{first.role} sees:**\n\n{_quote(first.observation)}\n")
        for number, episode in enumerate(episodes, 1):
            for turn in (t for t in episode.turns if t.branch):
                lines.append(f"**{turn.role} #{number}:**\n\n{_quote(turn.text)}\n")
            returns = ", ".join(f"{agent} {value:+.3f}" for agent, value in episode.returns.items())
            lines.append(f"returns: {returns}" + _details(episode.infos, everything) + "\n")
    return "\n".join(lines)


def _details(infos: dict[str, dict], everything: bool) -> str:
    """" (reward 0.500, quality 0.420)": the numbers behind the returns, per player where they differ."""
    shown = {agent: {k: v for k, v in info.items() if v is not None
                     and (k in (*BREAKDOWN, INVALID_MOVE_INFO) or everything and k not in ("query", "answer"))}
             for agent, info in infos.items()}
    if len({repr(values) for values in shown.values()}) <= 1:
        shown = {"": next(iter(shown.values()), {})}  # the same for every player: once
    parts = []
    for agent, values in shown.items():
        text = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in values.items())
        if text:
            parts.append(f"{agent} {text}" if agent else text)
    return f" ({'; '.join(parts)})" if parts else ""


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in (text or "(empty)").splitlines()) or "> (empty)"


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(run_dir: Path) -> Path | None:
    """Plot the main curves of `metrics.jsonl` to `curves.png`."""
    return plot_runs({"": run_dir}, Path(run_dir) / "curves.png")


def plot_runs(runs: dict[str, Path], path: Path, smooth: int = 1) -> Path | None:
    """Plot the main curves of several runs (label -> run folder) on shared axes; `smooth` is a moving-average
    window in iterations. Returns `path`, or None when no run has metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = {label: read_metrics(run_dir) for label, run_dir in runs.items()}
    if not any(metrics.values()):
        return None
    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(4.2 * len(PLOTTED), 3.4))
    for axis, names in zip(axes, PLOTTED):
        for label, records in metrics.items():
            for name in names:
                points = [(r["iteration"], r[name]) for r in records if r.get(name) is not None]
                if len(points) >= smooth:
                    steps, values = map(np.asarray, zip(*points))
                    values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
                    axis.plot(steps[smooth - 1:], values, marker="." if smooth == 1 else None,
                              label=f"{label}: {name}" if label else name)
        axis.set_xlabel("iteration")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    if smooth > 1:
        figure.suptitle(f"moving average over {smooth} iterations", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
