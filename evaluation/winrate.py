"""Pairwise win rates: both answer orders judged, ties counted, a bootstrap confidence interval.

Each judgement gives the candidate 1 (win), 0.5 (tie) or 0 (loss). A judge
whose verdict depends on the order (an LLM pairwise judge) sees each pair
twice, candidate first and baseline first, which cancels its position bias.
Identical answers are a tie without asking the judge. The win rate is the
mean score over prompts, and its interval resamples prompts (the two orders
of one prompt stay together).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from evaluation.pairwise import Preference


@dataclass
class Comparison:
    """One prompt: both answers and the candidate's score in each judged order."""

    instruction: str
    candidate: str
    baseline: str
    scores: list[float] = field(default_factory=list)
    details: list[dict] = field(default_factory=list)

    @property
    def score(self) -> float:
        return float(np.mean(self.scores))


@dataclass
class WinRate:
    """The candidate's win rate against the baseline, in [0, 1] (ties count half)."""

    win_rate: float
    ci_low: float
    ci_high: float
    confidence: float
    wins: int
    ties: int
    losses: int
    prompts: int
    judgements: int
    order_agreement: float | None
    """Share of prompts whose two orders got the same verdict (None when the judge ignores order)."""

    def as_dict(self) -> dict:
        return asdict(self)


def compare(instructions: Sequence[str], candidate: Sequence[str], baseline: Sequence[str], judge) -> list[Comparison]:
    """Judge each prompt's two answers (both orders when `judge.order_matters`), in one batch."""
    if not len(instructions) == len(candidate) == len(baseline):
        raise ValueError("need one candidate and one baseline answer per instruction")
    orders = 2 if judge.order_matters else 1
    comparisons = [Comparison(*texts) for texts in zip(instructions, candidate, baseline)]
    triples, owners = [], []
    for index, item in enumerate(comparisons):
        if item.candidate == item.baseline:
            item.scores, item.details = [0.5] * orders, [{"order": "identical answers"}] * orders
            continue
        triples.append((item.instruction, item.candidate, item.baseline))
        owners.append((index, False))
        if judge.order_matters:
            triples.append((item.instruction, item.baseline, item.candidate))
            owners.append((index, True))
    preferences: list[Preference] = judge.compare_batch(triples) if triples else []
    for (index, swapped), preference in zip(owners, preferences):
        comparisons[index].scores.append(1.0 - preference.score if swapped else preference.score)
        order = "baseline first" if swapped else "candidate first"
        comparisons[index].details.append({"order": order, **preference.details})
    return comparisons


def summarize(comparisons: Sequence[Comparison], confidence: float = 0.95, resamples: int = 10_000,
              seed: int = 0) -> WinRate:
    """Win/tie/loss counts over judgements, the win rate over prompts, and its bootstrap interval."""
    if not comparisons:
        raise ValueError("no comparisons to summarise")
    scores = np.array([score for item in comparisons for score in item.scores])
    per_prompt = np.array([item.score for item in comparisons])
    low, high = bootstrap_ci(per_prompt, confidence, resamples, seed)
    paired = [item.scores for item in comparisons if len(item.scores) == 2]
    agreement = float(np.mean([first == second for first, second in paired])) if paired else None
    return WinRate(win_rate=float(per_prompt.mean()), ci_low=low, ci_high=high, confidence=confidence,
                   wins=int((scores == 1).sum()), ties=int((scores == 0.5).sum()), losses=int((scores == 0).sum()),
                   prompts=len(comparisons), judgements=len(scores), order_agreement=agreement)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values to resample")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
