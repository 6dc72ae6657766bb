"""Evaluation reports: `report.json`, a Markdown `summary.md` and PNG plots in one folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from evaluation.league import Rating
from evaluation.suite import PairedDifference, SuiteScore
from evaluation.verifiable import Accuracy
from evaluation.winrate import WinRate


def write_report(folder: str | Path, report: dict, markdown: str) -> Path:
    """Write `report.json` and `summary.md`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "summary.md").write_text(markdown, encoding="utf-8")
    return folder


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def winrate_markdown(result: WinRate, candidate: str, baseline: str, judge: str, plot: str) -> str:
    level = f"{result.confidence:.0%}"
    agreement = "n/a" if result.order_agreement is None else percent(result.order_agreement)
    rows = [[candidate, baseline, judge, percent(result.win_rate),
             f"{percent(result.ci_low)} – {percent(result.ci_high)}", result.wins, result.ties, result.losses,
             result.prompts, agreement]]
    header = ["candidate", "baseline", "judge", "win rate", f"{level} CI", "wins", "ties", "losses", "prompts",
              "order agreement"]
    return (f"# Win rate\n\n{table(header, rows)}\n\nTies count half. Wins, ties and losses are counted over "
            f"judgements (both answer orders for an order-sensitive judge); the interval is a bootstrap over "
            f"prompts.\n\n![win rate]({plot})\n")


def accuracy_markdown(game: str, results: dict[str, Accuracy], difference: Accuracy, heldout: str, plot: str) -> str:
    rows = [[name, percent(r.accuracy), f"{percent(r.ci_low)} – {percent(r.ci_high)}", r.items]
            for name, r in results.items()]
    gap = (f"{100 * difference.accuracy:+.1f} points ({100 * difference.ci_low:+.1f} to "
           f"{100 * difference.ci_high:+.1f}, paired bootstrap)")
    return (f"# Verifiable accuracy on {game}\n\n{table(['model', 'accuracy', '95% CI', 'items'], rows)}\n\n"
            f"Candidate minus baseline: {gap}.\n\nHeld-out challenger moves: `{heldout}`.\n\n"
            f"![accuracy]({plot})\n")


def suite_markdown(suite: str, scores: dict[str, SuiteScore], difference: PairedDifference, plot: str) -> str:
    """Pass rates of each model on a held-out suite, the paired difference of strict passes, and a row per kind."""
    rows = [[name, percent(s.strict), percent(s.constraint_level), s.prompts] for name, s in scores.items()]
    kinds = sorted({kind for s in scores.values() for kind in s.per_kind})
    per_kind = [[kind] + [_met(s.per_kind.get(kind, (0, 0))) for s in scores.values()] for kind in kinds]
    gap = (f"{100 * difference.mean:+.1f} points ({difference.confidence:.0%} CI {100 * difference.ci_low:+.1f} to "
           f"{100 * difference.ci_high:+.1f}, normal approximation over paired prompts); candidate better on "
           f"{difference.wins} prompts, worse on {difference.losses}")
    return (f"# Instruction following on {suite}\n\n"
            f"{table(['model', 'strict pass', 'constraint level', 'prompts'], rows)}\n\n"
            f"Strict pass: every constraint of the prompt met. Candidate minus baseline: {gap}.\n\n"
            f"## Per kind (met / total)\n\n{table(['kind', *scores], per_kind)}\n\n![strict pass]({plot})\n")


def _met(counts: tuple[int, int]) -> str:
    met, total = counts
    return f"{met}/{total} ({percent(met / total)})" if total else "–"


def league_markdown(game: str, ratings: Sequence[Rating], scores: dict[str, dict[str, float]], matches: int,
                    plot: str) -> str:
    rows = [[r.name, r.iteration, f"{r.elo:.0f}", f"{r.ci_low:.0f} – {r.ci_high:.0f}"] for r in ratings]
    names = [r.name for r in ratings]
    grid = [[x] + [f"{scores[x][y]:.2f}" if y in scores.get(x, {}) else "–" for y in names] for x in names]
    return (f"# Checkpoint league on {game}\n\n{table(['player', 'iteration', 'Elo', '95% CI'], rows)}\n\n"
            f"{matches} matches; each is two games with swapped roles. Mean score of the row against the column:\n\n"
            f"{table(['', *names], grid)}\n\n![league]({plot})\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path


def plot_intervals(path: str | Path, labels: Sequence[str], values: Sequence[float], lows: Sequence[float],
                   highs: Sequence[float], ylabel: str, title: str, reference: float | None = None) -> Path:
    """Bars with confidence intervals, e.g. win rates or accuracies (fractions, shown as %)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(labels), 3.6))
    errors = [[100 * (v - lo) for v, lo in zip(values, lows)], [100 * (hi - v) for v, hi in zip(values, highs)]]
    axis.bar(labels, [100 * v for v in values], yerr=errors, capsize=6, color="#4c72b0", alpha=0.85)
    if reference is not None:
        axis.axhline(100 * reference, color="grey", linestyle="--", linewidth=1)
    axis.set_ylim(0, 100)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, Path(path))


def plot_league(path: str | Path, ratings: Sequence[Rating], title: str) -> Path:
    """Elo rating of each checkpoint against its training iteration, with intervals."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    x = [r.iteration if r.iteration is not None else i for i, r in enumerate(ratings)]
    errors = [[r.elo - r.ci_low for r in ratings], [r.ci_high - r.elo for r in ratings]]
    axis.errorbar(x, [r.elo for r in ratings], yerr=errors, marker="o", capsize=5)
    for xi, rating in zip(x, ratings):
        axis.annotate(rating.name, (xi, rating.elo), textcoords="offset points", xytext=(4, 6), fontsize=8)
    axis.set_xlabel("training iteration")
    axis.set_ylabel("Elo (base = 1000)")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    return _save(figure, Path(path))
