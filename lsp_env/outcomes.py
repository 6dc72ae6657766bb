"""Win, loss, draw and invalid-move rates of games decided by rules.

Such games put `infos[agent]["outcome"]` ("win", "loss", "draw", "invalid",
or None) in every agent's info from `reset` on. An agent whose info holds an
`invalid_move` counts as "invalid" whatever its outcome says.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

OUTCOMES = ("win", "loss", "draw", "invalid")


def outcome_rates(episodes: Iterable[Any]) -> dict[str, float]:
    """`outcome/ROLE/OUTCOME`: the share of episodes that ended that way for each role, reported
    separately (an invalid move is its own outcome, never a partial win). Empty for games without outcomes."""
    counts: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for episode in episodes:
        for role, info in episode.infos.items():
            if "outcome" not in info:
                continue
            outcome = "invalid" if info.get("invalid_move") else info["outcome"]
            totals[role] = totals.get(role, 0) + 1
            role_counts = counts.setdefault(role, dict.fromkeys(OUTCOMES, 0))
            if outcome in role_counts:
                role_counts[outcome] += 1
    return {f"outcome/{role}/{outcome}": count / totals[role]
            for role, role_counts in counts.items() for outcome, count in role_counts.items()}
