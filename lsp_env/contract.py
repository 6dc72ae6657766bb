"""What a game may offer the trainer beyond PettingZoo's `AECEnv`.

The trainer needs only PettingZoo's API: `reset`, `step`, `observe`, `last`,
`agents` and `agent_selection`; rewards are read with `env.last()`. Any
`AECEnv` whose actions are text therefore trains (`algorithms.collector`).
A game may also offer, and `TextGame` does:

- a branch point, `branch_agent`: the agent whose one decision is sampled G
  times (the solver in LSP), so that a group shares everything before it.
  Without one, a group is G whole episodes from the same seed.
- `fork()`: an independent copy of the episode, made at the branch point.
  Without it the collector deep-copies the env, or, when that fails, replays
  the episode from its seed and actions in a fresh env.
- a reward breakdown in `infos[agent]`, under the keys below, which the
  trainer logs (`judge/reward`, `judge/quality`, `judge/passed`) and the transcripts show.
- `judges`: the names of its constructor arguments that take a judge
  ("judge", "quality_judge"); the trainer passes its judges to those only.

Algorithms declare what they need from a game (`SelfPlayLoss.self_reward`:
a "quality_judge" among its `judges`); a mismatch is an error before any
model loads.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

REWARD_INFO = "reward"  # the task reward R (e.g. the verified score), before guards
QUALITY_INFO = "quality"  # the self-reward R_Q, or None without a quality judge
PASSED_INFO = "passed"  # the strict pass rate, where R gives partial credit for near misses
INVALID_MOVE_INFO = "invalid_move"  # why a move was invalid
BREAKDOWN = (REWARD_INFO, QUALITY_INFO, PASSED_INFO)


@runtime_checkable
class Branching(Protocol):
    """A game with a branch point."""

    branch_agent: str | None


@runtime_checkable
class Forkable(Protocol):
    """A game that copies an episode in progress itself (cheaper than a deep copy, and it may share judges)."""

    def fork(self): ...


# The two helpers below read attributes rather than `isinstance(env, Branching)`: PettingZoo's wrappers forward
# attributes through `__getattr__`, which protocol checks do not see from Python 3.12 on.
def branch_agent(env) -> str | None:
    """The game's branch point (`Branching`), or None for a game that declares none."""
    return getattr(env, "branch_agent", None)


def can_fork(env) -> bool:
    """Whether the game copies its episodes itself (`Forkable`)."""
    return callable(getattr(env, "fork", None))


def judge_arguments(game) -> tuple[str, ...]:
    """The judge arguments a game class (or env) declares; none for a game that declares nothing."""
    return tuple(getattr(game, "judges", ()))
