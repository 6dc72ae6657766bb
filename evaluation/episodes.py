"""The one episode driver of evaluation: two-move games (a challenger's move, then the solver's) played with
moves fixed in advance, and plain answers to prompts.

Evaluation separates the two roles: challenger moves are sampled once
(`challenger_moves`), stored, and later answered by any solver (`solve`). The
challenger is the game's first agent to move, the solver its `branch_agent`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from agents.agent import LLMAgent
from agents.policy import Policy, SamplingParams
from lsp_env.contract import branch_agent

MAX_THREADS = 64  # episodes stepped at once (their judge calls are batched by the engine)


@dataclass
class Outcome:
    """A finished episode: each role's return and the solver's final info (e.g. a verified `reward`)."""

    challenger: str
    solver: str
    returns: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    query: str | None = None
    """What the solver saw (None when the challenger's move was invalid)."""
    answer: str | None = None


class _Episode:
    def __init__(self, make_env: Callable[[], object], seed: int):
        self.env = make_env()
        self.env.reset(seed=seed)
        self.returns: dict[str, float] = {agent: 0.0 for agent in self.env.possible_agents}
        self.challenger = self.env.agent_selection
        self.solver = branch_agent(self.env)

    @property
    def solver_to_move(self) -> bool:
        env = self.env
        return env.agent_selection == self.solver and not (env.terminations[self.solver] or env.truncations[self.solver])

    def step(self, action: str) -> None:
        self.env.step(action)
        for agent, reward in self.env.rewards.items():
            self.returns[agent] += float(reward)

    def outcome(self, query: str | None, answer: str | None) -> Outcome:
        info = dict(self.env.infos.get(self.solver, {}))
        self.env.close()
        return Outcome(self.challenger, self.solver, dict(self.returns), info, query, answer)


def observations(make_env: Callable[[], object], seeds: Sequence[int]) -> list[str]:
    """What the challenger sees at the start of each seeded episode."""
    texts = []
    for seed in seeds:
        env = make_env()
        env.reset(seed=seed)
        texts.append(str(env.observe(env.agent_selection)))
        env.close()
    return texts


def challenger_moves(make_env: Callable[[], object], policy: Policy, seeds: Sequence[int], params: SamplingParams,
                     sampling_seed: int) -> list[str]:
    """One challenger move per episode seed, sampled in one batch after seeding torch with `sampling_seed`."""
    prompts = observations(make_env, seeds)
    torch.manual_seed(sampling_seed)
    return [completions[0].text for completions in LLMAgent(policy, params=params).sample_batch(prompts)]


def solver_queries(make_env: Callable[[], object], items: Sequence[tuple[int, str]]) -> list[str | None]:
    """What the solver would see after each (episode seed, challenger move); None for an invalid move."""
    episodes = _open(make_env, items)
    queries = [str(e.env.observe(e.solver)) if e.solver_to_move else None for e in episodes]
    for episode in episodes:
        episode.env.close()
    return queries


def solve(make_env: Callable[[], object], policy: Policy, items: Sequence[tuple[int, str]], params: SamplingParams,
          sampling_seed: int) -> list[Outcome]:
    """Play each (episode seed, challenger move) with `policy` as the solver; returns one outcome per item."""
    episodes = _open(make_env, items)
    waiting = [episode for episode in episodes if episode.solver_to_move]
    queries = {id(e): str(e.env.observe(e.solver)) for e in waiting}
    torch.manual_seed(sampling_seed)
    completions = LLMAgent(policy, params=params).sample_batch([queries[id(e)] for e in waiting])
    answers = {id(e): c[0].text for e, c in zip(waiting, completions)}
    with ThreadPoolExecutor(max_workers=MAX_THREADS) as pool:  # env steps call judges; engines batch them
        list(pool.map(lambda episode: episode.step(answers[id(episode)]), waiting))
    return [episode.outcome(queries.get(id(episode)), answers.get(id(episode))) for episode in episodes]


def answer_prompts(policy: Policy, instructions: Sequence[str], params: SamplingParams,
                   seed: int | None = None) -> list[str]:
    """One answer per instruction (a one-turn chat, no game), sampled in one batch, after seeding torch with
    `seed` if given."""
    if seed is not None:
        torch.manual_seed(seed)
    chats = [[{"role": "user", "content": instruction}] for instruction in instructions]
    return [completions[0].text for completions in policy.generate_batch(chats, n=1, params=params)]


def _open(make_env: Callable[[], object], items: Sequence[tuple[int, str]]) -> list[_Episode]:
    """Reset one episode per item and play its challenger move."""
    episodes = [_Episode(make_env, seed) for seed, _ in items]
    for episode, (_, move) in zip(episodes, items):
        if episode.solver is None:
            raise ValueError("evaluation needs a game with a branch agent (the solver)")
        episode.step(move)
        if episode.env.agents and not episode.solver_to_move and not episode.env.terminations[episode.challenger]:
            raise ValueError("evaluation supports games where the challenger moves once, then the solver")
    return episodes
