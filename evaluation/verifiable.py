"""Verifiable accuracy: solvers answer a fixed, held-out set of challenger moves.

The held-out set is sampled once by a fixed model with a fixed seed and saved
as JSON, so every later evaluation answers exactly the same problems. Only
games whose solver reward is programmatic (`metadata["reward"]` starting with
"verified") qualify; the score is the verified part of the reward (the
solver's `infos["passed"]`, else `infos["reward"]`: strict even where training
gives partial credit), without judges or guard penalties.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import lsp_env
from agents.policy import Policy, SamplingParams
from evaluation.episodes import Outcome, challenger_moves, solve, solver_queries
from evaluation.winrate import bootstrap_ci
from lsp_env.contract import INVALID_MOVE_INFO, PASSED_INFO, REWARD_INFO


def is_verifiable(game: str) -> bool:
    """Whether a registered game scores its solver programmatically."""
    metadata = getattr(lsp_env.registry[game].load(), "metadata", None) or {}
    return str(metadata.get("reward", "")).startswith("verified")


def verifiable_games() -> list[str]:
    return [game for game, _ in lsp_env.games_table() if is_verifiable(game)]


@dataclass
class HeldoutSet:
    """Challenger moves for a game: each item is {"seed": episode seed, "challenger": move, "query": solver's view}."""

    game: str
    model: str
    seed: int
    items: list[dict]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> HeldoutSet:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def make_heldout_set(game: str, make_env: Callable[[], object], policy: Policy, model: str, size: int, seed: int,
                     params: SamplingParams, max_rounds: int = 5) -> HeldoutSet:
    """Sample `size` valid challenger moves (invalid ones are skipped), in rounds of `size` episodes."""
    items: list[dict] = []
    for round_number in range(max_rounds):
        seeds = [seed + round_number * size + i for i in range(size)]
        moves = challenger_moves(make_env, policy, seeds, params, sampling_seed=seed + round_number)
        queries = solver_queries(make_env, list(zip(seeds, moves)))
        items += [{"seed": s, "challenger": m, "query": q} for s, m, q in zip(seeds, moves, queries) if q is not None]
        if len(items) >= size:
            return HeldoutSet(game, model, seed, items[:size])
    raise ValueError(f"{model} wrote only {len(items)} valid {game} moves in {max_rounds * size} tries; "
                     f"ask for fewer items or use another model")


@dataclass
class Accuracy:
    """Mean verified score over the held-out set, with a bootstrap interval."""

    accuracy: float
    ci_low: float
    ci_high: float
    items: int

    def as_dict(self) -> dict:
        return asdict(self)


def verified_scores(make_env: Callable[[], object], policy: Policy, heldout: HeldoutSet, params: SamplingParams,
                    sampling_seed: int) -> list[dict]:
    """Each held-out item answered by `policy`: {"seed", "query", "answer", "score"}."""
    items = [(item["seed"], item["challenger"]) for item in heldout.items]
    outcomes = solve(make_env, policy, items, params, sampling_seed)
    if any(o.query is None for o in outcomes):
        raise ValueError(f"some held-out moves are invalid in {heldout.game}; was the set made for another game?")
    return [{"seed": seed, "query": o.query, "answer": o.answer, "score": _verified_score(o)}
            for (seed, _), o in zip(items, outcomes)]


def _verified_score(outcome: Outcome) -> float:
    """The verified reward, strict (`passed` where the game's reward gives partial credit); 0 for an invalid
    answer (e.g. empty)."""
    if outcome.info.get(INVALID_MOVE_INFO):
        return 0.0
    for key in (PASSED_INFO, REWARD_INFO):
        if outcome.info.get(key) is not None:
            return float(outcome.info[key])
    raise ValueError("the game reported no verified reward ('reward' in the solver's infos)")


def accuracy(scores: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Accuracy:
    low, high = bootstrap_ci(scores, confidence, resamples, seed)
    return Accuracy(float(np.mean(scores)), low, high, len(scores))

