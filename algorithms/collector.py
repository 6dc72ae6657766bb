"""Rollout collection: many episodes of any PettingZoo AEC game, played
concurrently by agents over one shared policy, in groups.

What the collector needs from a game is PettingZoo's API (`reset`, `step`,
`observe`, `last`, `agents`, `agent_selection`) and nothing else. A game may
also declare a branch point (`lsp_env.GameContract`):

- With a branch agent (`env.branch_agent`, the solver in LSP), each group
  starts from one reset env; play advances until the branch agent is to move,
  it samples G actions there (`n=G`, one engine request), and the collector
  continues G copies of the episode, one per action. The copies come from
  `env.fork()` when the game has it, else `copy.deepcopy(env)`, else a fresh
  env replayed from the episode's seed and actions.
- Without one, the group is G whole episodes played from the same seed.

Decisions of all episodes that wait at the same stage are sent to the engine
together, and env steps (which call judges) run in threads, so every policy
and judge call is batched by its engine.
"""
from __future__ import annotations

import copy
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

from agents.policy import Completion
from lsp_env.contract import branch_agent, can_fork


class Player(Protocol):
    """Anything that picks actions; `LLMAgent` is the trainable one."""

    def act(self, observation: str) -> str: ...


@dataclass
class Turn:
    """One sampled action. `completion` is None for untrained players."""

    role: str
    observation: str
    text: str
    completion: Completion | None
    branch: bool  # taken at or after the group's branch point


@dataclass
class Episode:
    """One finished episode: its turns, each agent's return and final info."""

    group: int
    turns: list[Turn] = field(default_factory=list)
    returns: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    infos: dict[str, dict] = field(default_factory=dict)
    env: object = None
    branched: bool = False  # its turns are the group's samples (after the branch point, or the whole episode)
    seed: int | None = None

    def fork(self, env) -> "Episode":
        return Episode(self.group, list(self.turns), defaultdict(float, self.returns), dict(self.infos), env, True,
                       self.seed)


@dataclass
class Rollout:
    """The episodes of one collection, grouped, with phase timings (seconds)."""

    episodes: list[Episode]
    timings: dict[str, float]

    def groups(self) -> dict[int, list[Episode]]:
        grouped: dict[int, list[Episode]] = defaultdict(list)
        for episode in self.episodes:
            grouped[episode.group].append(episode)
        return dict(grouped)


class Collector:
    """Plays `num_groups` groups of `group_size` episodes per `collect` call."""

    def __init__(self, make_env: Callable[[], object], players: Mapping[str, Player], group_size: int,
                 max_threads: int = 64):
        self.make_env = make_env
        self.players = dict(players)
        self.group_size = group_size
        self.max_threads = max_threads
        self._deepcopy_fails = False

    def collect(self, num_groups: int, seed: int = 0) -> Rollout:
        timings = defaultdict(float)
        with ThreadPoolExecutor(max_workers=self.max_threads) as pool:
            episodes = []
            for group in range(num_groups):
                env = self.make_env()
                env.reset(seed=seed + group)
                if branch_agent(env) is not None:
                    episodes.append(Episode(group, env=env, seed=seed + group))
                    continue
                episodes.append(Episode(group, env=env, branched=True, seed=seed + group))
                for _ in range(self.group_size - 1):  # no branch point: G whole episodes from the same seed
                    replay = self.make_env()
                    replay.reset(seed=seed + group)
                    episodes.append(Episode(group, env=replay, branched=True, seed=seed + group))
            self._advance(episodes, pool, timings, stop_at_branch=True)
            episodes = self._branch(episodes, pool, timings)
            self._advance(episodes, pool, timings, stop_at_branch=False)
        for episode in episodes:
            episode.env.close()
            episode.env = None
        return Rollout(episodes, dict(timings))

    # --- stages -----------------------------------------------------------------
    def _advance(self, episodes: list[Episode], pool, timings, stop_at_branch: bool) -> None:
        """Step every episode until it ends (or, with stop_at_branch, reaches the branch agent)."""
        while True:
            waiting = []
            for episode in episodes:
                env = episode.env
                while env.agents:
                    agent = env.agent_selection
                    if env.terminations[agent] or env.truncations[agent]:
                        self._collect_reward(episode, agent)
                        episode.infos[agent] = dict(env.infos.get(agent, {}))
                        env.step(None)
                        continue
                    if stop_at_branch and agent == branch_agent(env):
                        break
                    waiting.append(episode)
                    break
            if not waiting:
                return
            actions = self._decide(waiting, n=1, timings=timings, at_branch=False)
            self._step(waiting, [a[0] for a in actions], pool, timings)

    def _branch(self, episodes: list[Episode], pool, timings) -> list[Episode]:
        """Sample G actions at the branch point and fork each waiting episode G times."""
        waiting = [e for e in episodes if e.env.agents and not e.branched
                   and e.env.agent_selection == branch_agent(e.env)]
        if not waiting:
            return episodes
        actions = self._decide(waiting, n=self.group_size, timings=timings, at_branch=True)
        forks, fork_actions = [], []
        for episode, group_actions in zip(waiting, actions):
            for action in group_actions:
                forks.append(episode.fork(self._copy_env(episode)))
                fork_actions.append(action)
            episode.env.close()
        self._step(forks, fork_actions, pool, timings)
        return [e for e in episodes if e not in waiting] + forks

    # --- helpers ----------------------------------------------------------------
    def _copy_env(self, episode: Episode):
        """An independent copy of the episode's env: `fork()`, else a deep copy, else a replay."""
        env = episode.env
        if can_fork(env):
            return env.fork()
        if not self._deepcopy_fails:
            try:
                return copy.deepcopy(env)
            except Exception:  # noqa: BLE001 (locks, sockets, generators: any reason means "replay instead")
                self._deepcopy_fails = True
        replay = self.make_env()
        replay.reset(seed=episode.seed)
        for turn in episode.turns:
            while replay.terminations[replay.agent_selection] or replay.truncations[replay.agent_selection]:
                replay.step(None)  # agents that are done leave first, as in play
            replay.step(turn.text)
        return replay

    def _decide(self, waiting: list[Episode], n: int, timings, at_branch: bool) -> list[list[Turn]]:
        """Ask each waiting episode's current player for `n` actions, batched per player."""
        start = time.perf_counter()
        by_player: dict[str, list[int]] = defaultdict(list)
        for index, episode in enumerate(waiting):
            by_player[episode.env.agent_selection].append(index)
        decisions: list[list[Turn]] = [[] for _ in waiting]
        for role, indices in by_player.items():
            player = self.players[role]
            observations = []
            for i in indices:
                self._collect_reward(waiting[i], role)
                observations.append(str(waiting[i].env.observe(role)))
            if hasattr(player, "sample_batch"):
                for k, (i, completions) in enumerate(zip(indices, player.sample_batch(observations, n=n))):
                    branch = at_branch or waiting[i].branched
                    decisions[i] = [Turn(role, observations[k], c.text, c, branch) for c in completions]
            else:
                for i, observation in zip(indices, observations):
                    branch = at_branch or waiting[i].branched
                    decisions[i] = [Turn(role, observation, player.act(observation), None, branch) for _ in range(n)]
        timings["generate"] += time.perf_counter() - start
        return decisions

    def _step(self, episodes: list[Episode], turns: list[Turn], pool, timings) -> None:
        """Apply one action per episode, in threads (env steps may call judges)."""
        start = time.perf_counter()

        def step(episode: Episode, turn: Turn) -> None:
            episode.turns.append(turn)
            episode.env.step(turn.text)

        list(pool.map(step, episodes, turns))
        timings["env_and_judge"] += time.perf_counter() - start

    @staticmethod
    def _collect_reward(episode: Episode, agent: str) -> None:
        """Add `agent`'s reward since its last turn (`env.last()`; `agent` is the one to act) to its return."""
        episode.returns[agent] += float(episode.env.last(observe=False)[1])
