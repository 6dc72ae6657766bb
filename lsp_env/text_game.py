"""
# Text games

`TextGame` is the base class for turn-based games whose moves and observations
are text, as PettingZoo AEC environments. A subclass writes the rules only:

| Hook                                   | Job                                               |
|----------------------------------------|---------------------------------------------------|
| `reset_game(seed, options) -> str`     | set up a new episode, return the first agent      |
| `observation_text(agent) -> str`       | what `agent` sees now                             |
| `apply_move(agent, text) -> str\\|None` | play a valid move, set `self.rewards`, return the |
|                                        | next agent, or None when the game is over         |

The base class keeps the AEC bookkeeping (agents, rewards, cumulative rewards,
terminations, truncations, infos, dead steps), the transcript and rendering,
and checks every action before `apply_move` sees it.

### Spaces

Observations and actions are `UnicodeText` spaces (a `gymnasium.spaces.Text`
whose charset is all the Unicode text a game emits). Observations are returned
as `TextObservation`, a `str` that carries the space's `dtype`, as
`pettingzoo.test.api_test` expects.

### Invalid moves

An action is invalid when it is not text (`str`, or `bytes` holding valid
UTF-8), is empty or whitespace only, is longer than the action space's
`max_length`, or holds a character outside the charset (lone surrogates,
control characters other than tab, newline and carriage return, private-use or
unassigned code points). `None` from a live agent is invalid too. An invalid
move ends the episode: the offending agent gets `invalid_move_penalty`, every
other agent 0, and `infos[agent]["invalid_move"]` says why. The game state is
left as it was before the move.

### Penalties and zero-sum

An invalid move's penalty (and a guard's, `lsp_env.guards`) lowers one
agent's reward only, so a game whose own rewards add up to 0 no longer does.
When the game ends, `infos[agent]["penalty"]` holds the total of each agent
that was penalised. With `zero_sum = True` (an attribute a trainer sets),
each penalty is credited to the other agents in equal shares, so the rewards
of a zero-sum game add up to 0 exactly.
"""
from __future__ import annotations

import copy
import functools
import sys
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium.spaces import Text
from pettingzoo import AECEnv

RENDER_MODES = ("human", "ansi")
_SURROGATES = range(0xD800, 0xE000)


def _is_text_character(char: str) -> bool:
    return char in "\t\n\r" or unicodedata.category(char) not in ("Cc", "Cs", "Co", "Cn")


@functools.cache
def _characters() -> tuple[str, ...]:
    return tuple(filter(_is_text_character, map(chr, range(sys.maxunicode + 1))))


@functools.cache
def _character_set() -> frozenset[str]:
    return frozenset(_characters())


@functools.cache
def _character_index() -> dict[str, int]:
    return {char: index for index, char in enumerate(_characters())}


class UnicodeText(Text):
    """A `Text` space over all Unicode text: every character Python's Unicode
    database assigns, except control characters (tab, newline and carriage
    return are kept), surrogates and private-use characters.

    The ~145k-character tables are built once per process and shared by all
    instances, so creating, copying and pickling a space stays cheap.
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: int | np.random.Generator | None = None):
        # The parent's own tables stay empty; the properties below serve the shared ones.
        super().__init__(max_length, min_length=min_length, charset="", seed=seed)

    @property
    def character_set(self) -> frozenset[str]:
        return _character_set()

    @property
    def character_list(self) -> tuple[str, ...]:
        return _characters()

    @property
    def characters(self) -> str:
        return "".join(_characters())

    def character_index(self, char: str) -> np.int32:
        return np.int32(_character_index()[char])

    def sample(self, mask=None, probability=None) -> str:
        """Uniform random text, as `Text.sample`, without turning the charset into an array per call."""
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        length = self.np_random.integers(self.min_length, self.max_length + 1)
        characters = _characters()
        return "".join(characters[index] for index in self.np_random.integers(len(characters), size=length))

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"


class TextObservation(str):
    """A `str` observation that carries the `dtype` of `Text` spaces."""

    dtype = np.dtype(str)


class InvalidMove(ValueError):
    """An action the game does not accept; the message is the reason."""


def parse_action(action: Any, space: Text) -> str:
    """Return `action` as a plain `str`, or raise `InvalidMove` saying why it is not valid text for `space`."""
    if isinstance(action, (bytes, bytearray)):
        try:
            action = bytes(action).decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidMove(f"bytes are not valid UTF-8 ({error.reason} at byte {error.start})") from None
    if not isinstance(action, str):
        raise InvalidMove(f"expected text (str), got {type(action).__name__}")
    text = str(action)
    if not text.strip():
        raise InvalidMove("text is empty or whitespace only")
    if len(text) > space.max_length:
        raise InvalidMove(f"text has {len(text)} characters, over the limit of {space.max_length}")
    outside = sorted({char for char in text if char not in space.character_set})
    if any(ord(char) in _SURROGATES for char in outside):
        raise InvalidMove("text contains lone surrogates, which are not valid UTF-8")
    if outside:
        raise InvalidMove(f"text contains characters outside the action space: {''.join(outside[:5])!r}")
    return text


def check_judge(name: str, judge: object) -> None:
    """Raise a TypeError unless `judge` is a Judge (has a `judge(query, answer)` method)."""
    if not callable(getattr(judge, "judge", None)):
        raise TypeError(f"{name} must be a Judge with a judge(query, answer) method, got {type(judge).__name__}; "
                        "wrap a plain function as FunctionJudge(fn).")


class TextGame(AECEnv, ABC):
    """Base class for turn-based text games (see the module docstring for the hooks).

    Args:
        roles: the agent ids (`possible_agents`); by default the first one moves first.
        max_action_chars: the longest valid action, for all agents or per agent.
        max_observation_chars: the longest observation any agent receives.
        invalid_move_penalty: the reward of an agent whose move is invalid.
        render_mode: None, "human" (print each turn) or "ansi" (`render()` returns the transcript).
    """

    metadata: ClassVar[dict[str, Any]] = {
        "name": "TextGame",
        "render_modes": list(RENDER_MODES),
        "is_parallelizable": False,
    }
    #: The agent whose decision a trainer samples several times, continuing one
    #: `fork()` per sample (the group's branch point); None when not branching.
    branch_agent: ClassVar[str | None] = None
    #: The constructor arguments that take a judge (`agents.judges.Judge`); a trainer passes its judges to these.
    judges: ClassVar[tuple[str, ...]] = ()
    #: Credit every penalty to the other agents, keeping a zero-sum game zero-sum (module docstring).
    zero_sum: bool = False

    def __init__(
        self,
        roles: Sequence[str],
        *,
        max_action_chars: int | Mapping[str, int],
        max_observation_chars: int,
        invalid_move_penalty: float = -1.0,
        render_mode: str | None = None,
    ):
        super().__init__()
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be None or one of {RENDER_MODES}, got {render_mode!r}")
        self.possible_agents = list(roles)
        if isinstance(max_action_chars, int):
            max_action_chars = dict.fromkeys(self.possible_agents, max_action_chars)
        self.observation_spaces = {agent: UnicodeText(max_observation_chars) for agent in self.possible_agents}
        self.action_spaces = {agent: UnicodeText(max_action_chars[agent], min_length=1) for agent in self.possible_agents}
        self.invalid_move_penalty = float(invalid_move_penalty)
        self.render_mode = render_mode
        self.transcript: list[tuple[str, str]] = []

    # -- hooks for subclasses -------------------------------------------------

    def reset_game(self, seed: int | None, options: dict | None) -> str:
        """Set up the game state for a new episode and return the first agent to act."""
        return self.possible_agents[0]

    @abstractmethod
    def observation_text(self, agent: str) -> str:
        """The text `agent` observes now."""

    @abstractmethod
    def apply_move(self, agent: str, text: str) -> str | None:
        """Play `agent`'s valid move `text`: update the state, set `self.rewards`
        for this step (they start at 0), and return the next agent to act, or
        None when the game is over."""

    def _shared_resources(self) -> list[object]:
        """Objects that `fork()` shares instead of copying; add judges and models."""
        return [*self.observation_spaces.values(), *self.action_spaces.values()]

    # -- PettingZoo API -------------------------------------------------------

    def observation_space(self, agent: str) -> UnicodeText:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> UnicodeText:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {agent: {} for agent in self.agents}
        self.penalties = dict.fromkeys(self.agents, 0.0)
        self.transcript = []
        self.agent_selection = self.reset_game(seed, options)

    def observe(self, agent: str) -> TextObservation:
        return TextObservation(self.observation_text(agent))

    def step(self, action: Any) -> None:
        """Play `action` for `agent_selection`; invalid moves end the episode (see the
        module docstring). A finished agent must step with None, as in PettingZoo."""
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        turns_before = len(self.transcript)
        self._cumulative_rewards[agent] = 0.0
        self.rewards = dict.fromkeys(self.agents, 0.0)
        try:
            text = parse_action(action, self.action_space(agent))
        except InvalidMove as invalid:
            self.invalid_move(agent, str(invalid))
            self._end_game()
        else:
            self.transcript.append((agent, text))
            next_agent = self.apply_move(agent, text)
            if next_agent is None:
                self._end_game()
            else:
                self.agent_selection = next_agent
        self._accumulate_rewards()
        if self.render_mode == "human":
            print(_format_transcript(self.transcript[turns_before:]))

    def invalid_move(self, agent: str, reason: str) -> None:
        """Give `agent` `invalid_move_penalty` for this step (the others 0) and record why."""
        self.rewards[agent] = self.invalid_move_penalty
        self.penalties[agent] -= self.invalid_move_penalty
        self.infos[agent]["invalid_move"] = reason
        self.transcript.append(("invalid move", f"{agent}: {reason}"))

    def _end_game(self) -> None:
        others = len(self.agents) - 1
        for agent in self.agents:
            if self.zero_sum and others:
                self.rewards[agent] += sum(p for a, p in self.penalties.items() if a != agent) / others
            if self.penalties[agent]:
                self.infos[agent]["penalty"] = self.penalties[agent]
        self.terminations = dict.fromkeys(self.agents, True)
        self.agent_selection = self.agents[0]
        rewards = ", ".join(f"{agent} {reward:+.3f}" for agent, reward in self.rewards.items())
        self.transcript.append(("rewards", rewards))

    def render(self) -> str | None:
        """Return ("ansi") or print ("human") the episode's transcript."""
        if self.render_mode is None:
            gymnasium.logger.warn("render() was called without a render_mode; pass render_mode='ansi' or 'human'.")
            return None
        text = _format_transcript(self.transcript)
        if self.render_mode == "ansi":
            return text
        print(text)
        return None

    def close(self) -> None:
        """Nothing to release: text games hold no windows or processes."""

    def fork(self) -> TextGame:
        """Return an independent copy of this episode, mid-game, that shares
        `_shared_resources()` (spaces, judges, models) with the original."""
        memo = {id(resource): resource for resource in self._shared_resources()}
        return copy.deepcopy(self, memo)


def _format_transcript(turns: Sequence[tuple[str, str]]) -> str:
    return "\n\n".join(f"[{speaker}]\n{text}" for speaker, text in turns)
