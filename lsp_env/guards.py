"""Reward-hacking guards, usable by any challenger/solver game.

Each guard looks at a finished exchange (the query, the answer) and, when it
fires, lowers one role's reward by a penalty:

| name               | role       | fires when                                                  |
|--------------------|------------|-------------------------------------------------------------|
| `length`           | solver     | the answer is longer than `max_words` (judges favour length) |
| `degenerate_query` | challenger | the query is repetitive, not language, or an unfilled template |
| `code_answer`      | solver     | the answer is code but the query did not ask for code        |

The paper reports the last hack with a reward model: the solver learnt to
answer everything in Python. Games take `guards=` (names or `Guard`
objects; None means the game's `default_guards`, [] turns them off).
`GuardedGame.score` applies them and records every trigger in
`infos[agent]["guards"]` ({name: {"role", "penalty", "reason"}}), which
`trigger_counts` tallies for the trainer's metrics (`guards/NAME`).
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lsp_env.text_game import TextGame

_WORD = re.compile(r"[^\W\d_]{2,}")
_REPEATED_CHUNK = re.compile(r"(.{2,40}?)(?:\s*\1){5,}", re.DOTALL)
_PLACEHOLDER = re.compile(r"\[\s*(?:insert|your|fill|add|put)[^\]\n]*\]|<\s*(?:insert|your|fill|input|query|question|"
                          r"task|text)[^>\n]*>", re.IGNORECASE)
_SLOT = re.compile(r"\{[^{}]*\}|<[^<>]*>|\[[^\[\]]*\]")
_ASKS_FOR_CODE = re.compile(r"\b(code|coding|program\w*|script|function|python|javascript|java|c\+\+|sql|regex|"
                            r"implement\w*|algorithm|snippet|json|html|css|bash|shell|compile|debug\w*|class|api)\b",
                            re.IGNORECASE)
_CODE_LINE = re.compile(r"^\s*(def |class |import |from \w[\w.]* import |#include|public |private |function |"
                        r"return\b|for .+ in .+:|while .+:|if .+:|elif |else:|print\(|console\.log|var |let |const )"
                        r"|;\s*$")


@dataclass
class Trigger:
    """One guard firing: whose reward it lowers, by how much, and why."""

    role: str
    penalty: float
    reason: str


class Guard(ABC):
    """Checks one exchange; `check` returns a `Trigger` when the guard fires."""

    name: ClassVar[str]
    role: ClassVar[str]

    @abstractmethod
    def check(self, query: str, answer: str, template: str = "") -> Trigger | None:
        """The trigger for this exchange (`template`: the one the query had to fill, if any), or None."""


class LengthControl(Guard):
    """Penalise answers longer than `max_words`, up to `penalty` at twice the budget."""

    name, role = "length", "solver"

    def __init__(self, max_words: int = 300, penalty: float = 0.5):
        self.max_words = max_words
        self.penalty = penalty

    def check(self, query, answer, template=""):
        words = len(answer.split())
        if words <= self.max_words:
            return None
        excess = min(1.0, (words - self.max_words) / self.max_words)
        return Trigger(self.role, self.penalty * excess, f"{words} words, over the budget of {self.max_words}")


class DegenerateQuery(Guard):
    """Penalise challenger queries that repeat themselves, are not language, or leave a template unfilled."""

    name, role = "degenerate_query", "challenger"

    def __init__(self, penalty: float = 1.0, min_letter_share: float = 0.5, min_unique_share: float = 0.3):
        self.penalty = penalty
        self.min_letter_share = min_letter_share
        self.min_unique_share = min_unique_share

    def check(self, query, answer, template=""):
        reason = self.reason(query, template)
        return None if reason is None else Trigger(self.role, self.penalty, reason)

    def reason(self, query: str, template: str = "") -> str | None:
        """Why `query` is degenerate, or None."""
        visible = [char for char in query if not char.isspace()]
        letters = sum(char.isalpha() for char in visible)
        if not visible or letters / len(visible) < self.min_letter_share or not _WORD.search(query):
            return "not language (too few letters or words)"
        words = [word.lower() for word in _WORD.findall(query)]
        if _REPEATED_CHUNK.search(query) or (len(words) >= 8 and len(set(words)) / len(words) < self.min_unique_share):
            return "repetition"
        if _PLACEHOLDER.search(query) or (template.strip() and _empty_fill(query, template)):
            return "template not filled in"
        return None


class CodeAnswer(Guard):
    """Penalise answers written as code when the query did not ask for code: `min_code_lines` lines that
    look like code, or one inside a Markdown fence (JSON and prose in fences do not count)."""

    name, role = "code_answer", "solver"

    def __init__(self, penalty: float = 1.0, min_code_lines: int = 2):
        self.penalty = penalty
        self.min_code_lines = min_code_lines

    def check(self, query, answer, template=""):
        if _ASKS_FOR_CODE.search(query):
            return None
        code_lines = sum(bool(_CODE_LINE.search(line)) for line in answer.splitlines())
        if code_lines >= self.min_code_lines or ("```" in answer and code_lines):
            return Trigger(self.role, self.penalty, "the answer is code, but the query did not ask for code")
        return None


GUARDS: dict[str, type[Guard]] = {guard.name: guard for guard in (LengthControl, DegenerateQuery, CodeAnswer)}


def make_guards(guards: Iterable[str | Guard]) -> list[Guard]:
    """Guards from names (see `GUARDS`) or ready-made `Guard` objects."""
    built = []
    for guard in guards:
        if isinstance(guard, str):
            if guard not in GUARDS:
                raise ValueError(f"unknown guard {guard!r}; choose from {', '.join(GUARDS)}")
            guard = GUARDS[guard]()
        built.append(guard)
    return built


def _empty_fill(query: str, template: str) -> bool:
    """Whether `query` leaves a slot of `template` ({...}, <...>, [...]) as it was, or fills the slots with nothing."""
    if any(slot in query for slot in _SLOT.findall(template)):
        return True
    parts = _SLOT.split(template)
    pattern = "(.*?)".join(re.escape(part.strip()) for part in parts)
    match = re.fullmatch(r"\s*" + pattern + r"\s*", query, re.DOTALL)
    return match is not None and all(not _WORD.search(slot) for slot in match.groups())


class GuardedGame(TextGame):
    """A `TextGame` with guards and rule-level invalid moves.

    Subclasses pass `guards=` through, call `reject_move` for a move that is
    valid text but breaks the rules, and `score` to end the game.
    """

    #: Guards used when `guards` is None (names from `GUARDS`).
    default_guards: ClassVar[tuple[str, ...]] = ("length", "degenerate_query", "code_answer")

    def __init__(self, roles: Sequence[str], *, guards: Iterable[str | Guard] | None = None, **settings: Any):
        super().__init__(roles, **settings)
        self.guards = make_guards(self.default_guards if guards is None else guards)

    def reject_move(self, agent: str, reason: str) -> None:
        """End the game on `agent`'s move, which breaks the rules: `invalid_move_penalty` for it, 0 for the others."""
        self.invalid_move(agent, reason)

    def apply_guards(self, query: str, answer: str, rewards: dict[str, float], template: str = "") -> dict:
        """Subtract the penalties of the guards that fire from `rewards` (in place); return the triggers."""
        triggers = {}
        for guard in self.guards:
            trigger = guard.check(query, answer, template)
            if trigger is not None and trigger.role in rewards:
                triggers[guard.name] = vars(trigger)
                rewards[trigger.role] -= trigger.penalty
                self.penalties[trigger.role] += trigger.penalty
        if triggers:
            self.transcript.append(("guards", "\n".join(
                f"{name}: -{t['penalty']:.3f} for the {t['role']} ({t['reason']})" for name, t in triggers.items())))
        return triggers

    def score(self, query: str, answer: str, rewards: dict[str, float], breakdown: dict[str, Any]) -> None:
        """End the game: `rewards` less the guards' penalties; `breakdown` and the triggers go to every info."""
        self.transcript.append(("verdict", "\n".join(f"{key}: {value}" for key, value in breakdown.items()
                                                       if key not in ("query", "answer"))))
        triggers = self.apply_guards(query, answer, rewards)
        self.rewards.update(rewards)
        for info in self.infos.values():
            info.update(breakdown, guards=triggers)


def trigger_counts(episodes: Iterable[Any], names: Iterable[str] = ()) -> dict[str, int]:
    """`guards/NAME`: how often each guard fired in a rollout's episodes (`names` are reported even at 0).

    A challenger guard counts once per query (group), a solver guard once per answer (episode).
    """
    seen = set()
    for number, episode in enumerate(episodes):
        for info in episode.infos.values():
            for name, trigger in (info.get("guards") or {}).items():
                seen.add((name, episode.group) if trigger["role"] == "challenger" else (name, "episode", number))
    counts = Counter(key[0] for key in seen)
    return {f"guards/{name}": counts.get(name, 0) for name in sorted(set(names) | set(counts))}


def penalty_totals(episodes: Iterable[Any], roles: Iterable[str]) -> dict[str, float]:
    """`penalty/ROLE`: the total that penalties (guards, invalid moves) took from each role's rewards in a
    rollout, read from `infos[role]["penalty"]`.

    A role that moves before the branch point has one turn per group, shared by the group's episodes: its
    penalty counts once per group (the mean over them). Other roles' penalties count once per episode.
    """
    groups: dict[Any, list] = {}
    for episode in episodes:
        groups.setdefault(episode.group, []).append(episode)
    totals = dict.fromkeys(roles, 0.0)
    for group in groups.values():
        for role in totals:
            values = [(episode.infos.get(role) or {}).get("penalty", 0.0) for episode in group]
            branched = any(turn.role == role and turn.branch for episode in group for turn in episode.turns)
            totals[role] += sum(values) if branched else sum(values) / len(values)
    return {f"penalty/{role}": total for role, total in totals.items()}
