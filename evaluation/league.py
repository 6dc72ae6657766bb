"""A checkpoint league: the checkpoints of one run play each other, and get Elo ratings.

Self-play reward hovers near balance by design, so it says little about
progress; a league does. A match between X and Y is two games on the same
episode seed: X challenges and Y solves, then Y challenges and X solves. The
player with the larger total return wins (equal totals are a draw), so the
game's reward level cancels, as when chess players swap colours.

Ratings are a Bradley-Terry fit on the Elo scale (400 points = 10:1 odds; a
weak Gaussian prior keeps an unbeaten player finite), anchored at 1000 for the
first player (the base model), with bootstrap intervals over matches. The fit
does not depend on the order of the matches, unlike online Elo updates.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import yaml

from agents.policy import Policy, SamplingParams
from evaluation.episodes import challenger_moves, solve

ELO_SCALE = 400 / math.log(10)
ANCHOR = 1000.0


@dataclass(frozen=True)
class Player:
    name: str
    model: str
    """What `HFPolicy.from_pretrained` loads."""
    iteration: int


@dataclass(frozen=True)
class Match:
    """`score` is the first player's result: 1 (win), 0.5 (draw) or 0 (loss)."""

    first: str
    second: str
    score: float


@dataclass
class Rating:
    name: str
    elo: float
    ci_low: float
    ci_high: float
    iteration: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def league_players(run_dir: str | Path, max_players: int = 6) -> list[Player]:
    """The run's base model (iteration 0) and its checkpoints, thinned evenly to `max_players` (first and last kept)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.yaml)")
    base = yaml.safe_load(config_path.read_text())["model"]
    players = [Player("base", base, 0)]
    for folder in sorted((run_dir / "checkpoints").glob("iter_*")):
        if (folder / "model").is_dir() and re.fullmatch(r"iter_\d+", folder.name):
            iteration = int(folder.name.split("_")[1])
            players.append(Player(f"iter {iteration}", str(folder / "model"), iteration))
    if len(players) < 2:
        raise ValueError(f"{run_dir} has no checkpoints to rate against the base model")
    if len(players) > max_players:
        picks = np.unique(np.linspace(0, len(players) - 1, max(max_players, 2)).round().astype(int))
        players = [players[i] for i in picks]
    return players


def play_league(players: Sequence[Player], make_env: Callable[[], object], load: Callable[[str], Policy],
                matches_per_pair: int, challenger_params: SamplingParams, solver_params: SamplingParams,
                seed: int = 0) -> list[Match]:
    """Every pair plays `matches_per_pair` matches; one model is loaded at a time (`load(model)`, then `close()`)."""
    if len({p.name for p in players}) != len(players):
        raise ValueError("player names must be unique")
    seeds = [seed + i for i in range(matches_per_pair)]
    moves: dict[str, list[str]] = {}
    for player in players:  # every player writes its challenger moves, once
        policy = load(player.model)
        moves[player.name] = challenger_moves(make_env, policy, seeds, challenger_params, sampling_seed=seed)
        policy.close()
    returns = {}  # (challenger, solver, match) -> outcome
    for solver in players:  # every player answers everyone else's moves
        opponents = [p for p in players if p != solver]
        items = [(s, moves[p.name][i]) for p in opponents for i, s in enumerate(seeds)]
        policy = load(solver.model)
        outcomes = solve(make_env, policy, items, solver_params, sampling_seed=seed)
        policy.close()
        keys = [(p.name, solver.name, i) for p in opponents for i in range(len(seeds))]
        returns.update(zip(keys, outcomes))
    matches = []
    for first, second in itertools.combinations([p.name for p in players], 2):
        for i in range(len(seeds)):
            one, two = returns[(first, second, i)], returns[(second, first, i)]  # first challenges, then second
            first_total = one.returns[one.challenger] + two.returns[two.solver]
            second_total = one.returns[one.solver] + two.returns[two.challenger]
            score = 0.5 if math.isclose(first_total, second_total, abs_tol=1e-9) else float(first_total > second_total)
            matches.append(Match(first, second, score))
    return matches


def fit_ratings(names: Sequence[str], matches: Sequence[Match], prior: float = 0.1) -> np.ndarray:
    """Bradley-Terry maximum a posteriori strengths (natural log-odds), by Newton's method; draws count half."""
    index = {name: i for i, name in enumerate(names)}
    first = np.array([index[m.first] for m in matches], dtype=int)
    second = np.array([index[m.second] for m in matches], dtype=int)
    scores = np.array([m.score for m in matches], dtype=float)
    strengths = np.zeros(len(names))
    for _ in range(100):
        expected = 1 / (1 + np.exp(strengths[second] - strengths[first]))
        gradient = prior * strengths
        np.add.at(gradient, first, expected - scores)
        np.add.at(gradient, second, scores - expected)
        weight = expected * (1 - expected)
        hessian = prior * np.eye(len(names))
        np.add.at(hessian, (first, first), weight)
        np.add.at(hessian, (second, second), weight)
        np.add.at(hessian, (first, second), -weight)
        np.add.at(hessian, (second, first), -weight)
        step = np.linalg.solve(hessian, gradient)
        strengths -= step
        if np.abs(step).max() < 1e-10:
            break
    return strengths


def elo_ratings(players: Sequence[Player | str], matches: Sequence[Match], confidence: float = 0.95,
                resamples: int = 1000, seed: int = 0, prior: float = 0.1) -> list[Rating]:
    """Elo-scale ratings (the first player at 1000) with bootstrap intervals over matches."""
    names = [p if isinstance(p, str) else p.name for p in players]
    if not matches:
        raise ValueError("no matches to rate")

    def elo(sample: Sequence[Match]) -> np.ndarray:
        strengths = fit_ratings(names, sample, prior)
        return ANCHOR + ELO_SCALE * (strengths - strengths[0])

    estimate = elo(matches)
    rng = np.random.default_rng(seed)
    samples = np.array([elo([matches[i] for i in rng.integers(0, len(matches), len(matches))])
                        for _ in range(resamples)])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    iterations = [None if isinstance(p, str) else p.iteration for p in players]
    return [Rating(name, float(e), float(lo), float(hi), iteration)
            for name, e, lo, hi, iteration in zip(names, estimate, low, high, iterations)]


def score_table(names: Sequence[str], matches: Sequence[Match]) -> dict[str, dict[str, float]]:
    """table[X][Y]: X's mean score against Y."""
    results: dict[tuple[str, str], list[float]] = {}
    for m in matches:
        results.setdefault((m.first, m.second), []).append(m.score)
        results.setdefault((m.second, m.first), []).append(1 - m.score)
    return {x: {y: float(np.mean(results[(x, y)])) for y in names if (x, y) in results} for x in names}
