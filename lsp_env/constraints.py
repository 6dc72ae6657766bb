"""Verifiable constraints on a response (in the style of IFEval), each with a checker.

    rng = random.Random(0)
    constraints = sample_constraints(rng, count=2)
    [c.instruction for c in constraints]        # what the solver is told
    fraction_met(constraints, response)          # the share it satisfies
    partial_credit(constraints, response)        # the same, with credit for near misses

A kind has a group; two constraints of one group are never drawn together
(e.g. all lowercase and all uppercase), and `excludes` lists groups a kind
cannot be combined with (JSON output leaves no room for a title or a P.S.).
Checks of words and phrases ignore case, so they combine with case rules.

Each kind also says how close a failing response came (`closeness`, 0 to 1:
three bullet points of four asked, two capitals left in a lowercase answer).
`partial_credit` gives a missed constraint up to `NEAR_MISS_CREDIT` for it, so
that a group of answers that all fail still differs in reward and so still
has a gradient; a met constraint always earns twice any near miss.
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

KEYWORDS = ("river", "balance", "window", "history", "energy", "garden", "signal", "promise", "market", "silver",
            "journey", "pattern", "winter", "engine", "harbor", "lantern")
FORBIDDEN = ("very", "really", "thing", "good", "important", "basically", "just", "also")
OPENERS = ("Yes", "No", "Certainly", "Honestly", "First", "Imagine")
CLOSERS = ("Is there anything else I can help with?", "That is all.", "Thank you for reading.", "Stay curious.")


@dataclass(frozen=True)
class Vocabulary:
    """What the parameters of drawn constraints are chosen from: words, phrases and numbers."""

    keywords: tuple[str, ...]
    forbidden: tuple[str, ...]
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    max_words: tuple[int, ...] = (20, 40, 60, 100)
    min_words: tuple[int, ...] = (30, 40, 50)
    max_sentences: tuple[int, ...] = (1, 2, 3)
    repeats: tuple[int, ...] = (2, 3)
    """keyword_frequency's counts."""
    marks: tuple[int, ...] = (1, 2, 3)
    """placeholders' and highlights' counts."""


# Few words and numbers (ConstrainedInstructions v0 and v1): a solver can meet the rules by heart.
NARROW = Vocabulary(KEYWORDS, FORBIDDEN, OPENERS, CLOSERS)
# Many (v2): to meet a rule, a solver has to read it. Like NARROW's, none of these words is in the held-out suite.
WIDE = Vocabulary(
    keywords=KEYWORDS + (
        "anchor", "basket", "bridge", "candle", "canyon", "carpet", "castle", "chapter", "circle", "climate",
        "compass", "copper", "cotton", "crystal", "desert", "diamond", "echo", "factory", "feather", "festival",
        "forest", "fountain", "galaxy", "glacier", "hammer", "helmet", "horizon", "island", "jacket", "jungle",
        "kettle", "ladder", "library", "meadow", "mountain", "museum", "needle", "orchard", "palace", "pepper",
        "planet", "pocket", "puzzle", "rabbit", "ribbon", "rocket", "saddle", "shadow", "shelter", "spirit",
        "statue", "storm", "studio", "summit", "thunder", "ticket", "timber", "tunnel", "valley", "velvet",
        "village", "voyage", "wagon", "whistle", "wizard", "zebra"),
    forbidden=FORBIDDEN + (
        "amazing", "awesome", "big", "clearly", "definitely", "great", "huge", "literally", "maybe", "obviously",
        "often", "perhaps", "quite", "rather", "so", "stuff", "totally", "truly", "usually", "way"),
    openers=OPENERS + ("Absolutely", "Briefly", "Indeed", "Interestingly", "Naturally", "Now", "Okay", "Today"),
    closers=CLOSERS + ("Have a great day.", "Let me know if you have questions.", "That is my answer.", "The end.",
                       "Thanks for asking.", "Until next time.", "Enjoy!"),
    max_words=(15, 20, 25, 30, 35, 40, 50, 60, 75, 100),
    min_words=(20, 25, 30, 35, 40, 45, 50),
    max_sentences=(1, 2, 3, 4),
    repeats=(2, 3, 4),
    marks=(1, 2, 3, 4),
)
VOCABULARIES = {"narrow": NARROW, "wide": WIDE}  # by the name a game's `vocabulary` setting gives

NEAR_MISS_CREDIT = 0.5  # the most a missed constraint earns in `partial_credit`

_WORDS = re.compile(r"\b[\w'-]+\b")
_BULLET = re.compile(r"^\s*[-*•]\s+\S", re.MULTILINE)


def _words(text: str) -> list[str]:
    return _WORDS.findall(text)


def _mentions(text: str, word: str) -> int:
    return len(re.findall(rf"\b{re.escape(word)}\b", text, re.IGNORECASE))


def _is_json(text: str) -> bool:
    body = _json_body(text)
    try:
        json.loads(body)
    except ValueError:
        return False
    return body.strip()[:1] in ("{", "[")


def _sentences(text: str) -> int:
    return len([part for part in re.split(r"(?<=[.!?])\s+", text.strip()) if re.search(r"\w", part)])


def _paragraphs(text: str) -> int:
    return len([part for part in re.split(r"\n\s*\n", text.strip()) if part.strip()])


def _json_body(text: str) -> str:
    return re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text)


def _ratio(count: int, n: int) -> float:
    """How close `count` is to a target `n` (1 when equal, 0 at twice or none)."""
    return max(0.0, 1.0 - abs(count - n) / n)


def _fewer(count: int, allowed: int = 0, scale: int = 10) -> float:
    """Closeness for "no X": 1 at `allowed`, falling by a tenth for each one more."""
    return max(0.0, 1.0 - (count - allowed) / scale)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass(frozen=True)
class Kind:
    """A kind of constraint: how to draw its parameters, phrase it and check it."""

    name: str
    group: str
    instruction: str  # formatted with the parameters
    check: Callable[..., bool]  # check(response, **parameters)
    draw: Callable[[random.Random, Vocabulary], dict[str, Any]] = lambda rng, vocabulary: {}
    excludes: tuple[str, ...] = ()
    closeness: Callable[..., float] = lambda text, **parameters: 0.0  # of a failing response, 0 to 1


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("max_words", "length", "Answer in at most {n} words.",
         lambda text, n: len(_words(text)) <= n, lambda rng, v: {"n": rng.choice(v.max_words)},
         closeness=lambda text, n: n / len(_words(text))),
    Kind("min_words", "length", "Answer in at least {n} words.",
         lambda text, n: len(_words(text)) >= n, lambda rng, v: {"n": rng.choice(v.min_words)},
         closeness=lambda text, n: len(_words(text)) / n),
    Kind("max_sentences", "length", "Use at most {n} sentences.",
         lambda text, n: 0 < _sentences(text) <= n, lambda rng, v: {"n": rng.choice(v.max_sentences)},
         closeness=lambda text, n: n / _sentences(text) if _sentences(text) else 0.0),
    Kind("include_keywords", "keywords", "Include the words {words}.",
         lambda text, words: all(_mentions(text, w) for w in words),
         lambda rng, v: {"words": rng.sample(v.keywords, 2)},
         closeness=lambda text, words: _share(sum(bool(_mentions(text, w)) for w in words), len(words))),
    Kind("forbidden_words", "keywords", "Do not use the words {words}.",
         lambda text, words: bool(text.strip()) and not any(_mentions(text, w) for w in words),
         lambda rng, v: {"words": rng.sample(v.forbidden, 2)},
         closeness=lambda text, words: _fewer(sum(_mentions(text, w) for w in words), scale=5)
         if text.strip() else 0.0),
    Kind("keyword_frequency", "keywords", "Use the word '{word}' at least {n} times.",
         lambda text, word, n: _mentions(text, word) >= n,
         lambda rng, v: {"word": rng.choice(v.keywords), "n": rng.choice(v.repeats)},
         closeness=lambda text, word, n: _mentions(text, word) / n),
    Kind("all_lowercase", "case", "Write everything in lowercase letters, with no capitals.",
         lambda text: any(c.isalpha() for c in text) and text == text.lower(),
         closeness=lambda text: _fewer(sum(c.isupper() for c in text)) if any(c.isalpha() for c in text) else 0.0),
    Kind("all_uppercase", "case", "Write everything in CAPITAL letters.",
         lambda text: any(c.isalpha() for c in text) and text == text.upper(),
         closeness=lambda text: _share(sum(c.isupper() for c in text), sum(c.isalpha() for c in text))),
    Kind("bullet_points", "shape", "Answer with exactly {n} bullet points, each line starting with '- '.",
         lambda text, n: len(_BULLET.findall(text)) == n, lambda rng, v: {"n": rng.choice((2, 3, 4, 5))},
         closeness=lambda text, n: _ratio(len(_BULLET.findall(text)), n)),
    Kind("paragraphs", "shape", "Write exactly {n} paragraphs, separated by blank lines.",
         lambda text, n: _paragraphs(text) == n, lambda rng, v: {"n": rng.choice((2, 3, 4))},
         closeness=lambda text, n: _ratio(_paragraphs(text), n)),
    Kind("json_output", "shape", "Give your whole answer as valid JSON (an object or a list).",
         _is_json, excludes=("opening", "closing", "marks"),
         closeness=lambda text: float(_json_body(text).strip()[:1] in ("{", "["))),
    Kind("quotation", "shape", "Wrap your whole answer in double quotation marks.",
         lambda text: len(text.strip()) > 2 and text.strip()[0] == text.strip()[-1] == '"',
         closeness=lambda text: (text.strip()[:1] == '"') / 2 + (text.strip()[-1:] == '"') / 2),
    Kind("start_with", "opening", "Start your answer with the word '{word}'.",
         lambda text, word: re.match(rf"\W*{word}\b", text, re.IGNORECASE) is not None,
         lambda rng, v: {"word": rng.choice(v.openers)}, excludes=("shape",),
         closeness=lambda text, word: float(any(w.lower() == word.lower() for w in _words(text)[:10]))),
    Kind("title", "opening", "Begin with a title in double angle brackets, like <<my title>>.",
         lambda text: re.match(r"\s*<<[^<>\n]+>>", text) is not None, excludes=("shape",),
         closeness=lambda text: float(re.search(r"<<[^<>\n]+>>", text) is not None)),
    Kind("end_with", "closing", "End your answer with the exact phrase '{phrase}', with nothing after it.",
         lambda text, phrase: text.strip().lower().endswith(phrase.lower()),
         lambda rng, v: {"phrase": rng.choice(v.closers)}, excludes=("shape",),
         closeness=lambda text, phrase: float(phrase.lower() in text.lower())),
    Kind("postscript", "closing", "End with a postscript that starts with 'P.S.'.",
         lambda text: re.search(r"^\s*P\.S\.", text, re.MULTILINE | re.IGNORECASE) is not None,
         excludes=("shape",), closeness=lambda text: float("p.s." in text.lower())),
    Kind("no_commas", "marks", "Do not use any commas.", lambda text: bool(text.strip()) and "," not in text,
         closeness=lambda text: _fewer(text.count(",")) if text.strip() else 0.0),
    Kind("no_digits", "marks", "Do not write any digits; spell numbers out.",
         lambda text: bool(text.strip()) and not any(c.isdigit() for c in text),
         closeness=lambda text: _fewer(sum(c.isdigit() for c in text)) if text.strip() else 0.0),
    Kind("placeholders", "marks", "Include at least {n} placeholders in square brackets, like [name].",
         lambda text, n: len(re.findall(r"\[[^\[\]\n]+\]", text)) >= n, lambda rng, v: {"n": rng.choice(v.marks)},
         closeness=lambda text, n: len(re.findall(r"\[[^\[\]\n]+\]", text)) / n),
    Kind("highlights", "marks", "Highlight at least {n} parts with markdown, like *this part*.",
         lambda text, n: len(re.findall(r"\*[^*\n]+\*", text)) >= n, lambda rng, v: {"n": rng.choice(v.marks)},
         closeness=lambda text, n: len(re.findall(r"\*[^*\n]+\*", text)) / n),
)}


@dataclass(frozen=True)
class Constraint:
    """One drawn constraint: a kind and its parameters."""

    kind: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def instruction(self) -> str:
        shown = {k: ", ".join(f"'{w}'" for w in v) if isinstance(v, list) else v for k, v in self.parameters.items()}
        return KINDS[self.kind].instruction.format(**shown)

    def check(self, response: str) -> bool:
        """Whether `response` meets this constraint."""
        return bool(KINDS[self.kind].check(response, **self.parameters))

    def credit(self, response: str) -> float:
        """1 when `response` meets this constraint, else up to `NEAR_MISS_CREDIT` for how close it came."""
        if self.check(response):
            return 1.0
        return NEAR_MISS_CREDIT * min(1.0, max(0.0, float(KINDS[self.kind].closeness(response, **self.parameters))))


def compatible(kind: Kind, chosen: Sequence[Kind]) -> bool:
    """Whether `kind` can join `chosen` (no shared group, no excluded group either way)."""
    return all(kind.group != other.group and kind.group not in other.excludes and other.group not in kind.excludes
               for other in chosen)


def sample_constraints(rng: random.Random, count: int, vocabulary: Vocabulary = NARROW) -> list[Constraint]:
    """`count` compatible constraints drawn with `rng`, their parameters from `vocabulary`."""
    chosen: list[Kind] = []
    for kind in rng.sample(list(KINDS.values()), len(KINDS)):
        if len(chosen) == count:
            break
        if compatible(kind, chosen):
            chosen.append(kind)
    return [Constraint(kind.name, kind.draw(rng, vocabulary)) for kind in chosen]


def fraction_met(constraints: Sequence[Constraint], response: str) -> tuple[float, list[bool]]:
    """The share of `constraints` that `response` meets, and each result."""
    results = [constraint.check(response) for constraint in constraints]
    return (sum(results) / len(results) if results else 1.0), results


def partial_credit(constraints: Sequence[Constraint], response: str) -> float:
    """The mean credit of `response` over `constraints`: 1 per constraint met, a part of one per near miss."""
    return sum(constraint.credit(response) for constraint in constraints) / len(constraints) if constraints else 1.0
