"""Held-out instruction-following suites (in the style of IFEval), answered by a policy and graded by our checkers.

A suite is a JSON Lines file written once and never read by training; each
line is {"id", "task", "constraints": [{"kind", "parameters"}], "prompt"},
where `kind` names a checker in `lsp_env.constraints.KINDS` and `prompt` is
the task with the constraints stated in words. The bundled `if-heldout` suite
has 120 hand-written tasks with 1 to 3 constraints each.

    suite = load_suite("if-heldout")
    score, graded = evaluate_policy(policy, suite, SamplingParams(256, 0.0))
    score.strict                     # share of prompts with every constraint met
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist, fmean, stdev
from typing import Sequence

from agents.policy import Policy, SamplingParams
from lsp_env.constraints import KINDS, Constraint

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass(frozen=True)
class SuiteItem:
    """One prompt of a suite and the constraints its answer must meet."""

    id: str
    prompt: str
    constraints: tuple[Constraint, ...]


@dataclass(frozen=True)
class Suite:
    """A named, ordered set of prompts (the file's stem for a loaded suite)."""

    name: str
    items: tuple[SuiteItem, ...]


def available_suites() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.jsonl"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A bundled suite by name (e.g. "if-heldout") or a suite file by path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SUITES_DIR / f"{name_or_path}.jsonl"
        if not path.is_file():
            raise ValueError(f"no suite named or at {name_or_path!r}; bundled suites: {', '.join(available_suites())}")
    items = [_item(line, f"{path}, line {number}")
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]
    if not items:
        raise ValueError(f"{path}: the suite has no items")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return Suite(path.stem, tuple(items))


def _item(line: str, where: str) -> SuiteItem:
    """One suite line, checked: a malformed one raises ValueError naming `where`."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict) or not all(isinstance(record.get(key), str) for key in ("id", "prompt")):
        raise ValueError(f"{where}: expected an object with string 'id' and 'prompt'")
    specs = record.get("constraints")
    if not isinstance(specs, list) or not specs:
        raise ValueError(f"{where}: expected a non-empty 'constraints' list")
    constraints = []
    for spec in specs:
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            raise ValueError(f"{where}: unknown constraint {spec!r}; kinds: {', '.join(KINDS)}")
        parameters = spec.get("parameters") or {}
        try:
            inspect.signature(KINDS[spec["kind"]].check).bind("", **parameters)
        except TypeError as error:
            raise ValueError(f"{where}: wrong parameters for {spec['kind']}: {error}") from None
        constraints.append(Constraint(spec["kind"], parameters))
    return SuiteItem(record["id"], record["prompt"], tuple(constraints))


def grade(suite: Suite, answers: Sequence[str]) -> list[dict]:
    """Each answer checked against its item's constraints; `strict` when all are met."""
    if len(answers) != len(suite.items):
        raise ValueError(f"{len(suite.items)} prompts but {len(answers)} answers")
    graded = []
    for item, answer in zip(suite.items, answers):
        met = [constraint.check(answer) for constraint in item.constraints]
        graded.append({"id": item.id, "prompt": item.prompt, "answer": answer, "met": met,
                       "kinds": [constraint.kind for constraint in item.constraints], "strict": all(met)})
    return graded


@dataclass
class SuiteScore:
    """Strict pass rate (prompts with every constraint met), constraint-level rate, and (met, total) per kind."""

    strict: float
    constraint_level: float
    prompts: int
    per_kind: dict[str, tuple[int, int]]

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(graded: Sequence[dict]) -> SuiteScore:
    results = [(kind, met) for item in graded for kind, met in zip(item["kinds"], item["met"])]
    per_kind = {kind: (sum(met for k, met in results if k == kind), sum(k == kind for k, _ in results))
                for kind in sorted({kind for kind, _ in results})}
    return SuiteScore(strict=sum(item["strict"] for item in graded) / len(graded),
                      constraint_level=sum(met for _, met in results) / len(results),
                      prompts=len(graded), per_kind=per_kind)


@dataclass
class PairedDifference:
    """Mean of a - b over the same prompts, with a normal-approximation interval; wins are a > b."""

    mean: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    wins: int
    losses: int

    def as_dict(self) -> dict:
        return asdict(self)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """mean(a - b) ± z·sd/√n, with the sample sd (n - 1) of the paired differences."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError("a paired difference needs at least 2 prompts")
    differences = [x - y for x, y in zip(a, b)]
    mean = fmean(differences)
    half_width = NormalDist().inv_cdf((1 + confidence) / 2) * stdev(differences) / math.sqrt(len(differences))
    return PairedDifference(mean, mean - half_width, mean + half_width, confidence, len(differences),
                            wins=sum(d > 0 for d in differences), losses=sum(d < 0 for d in differences))


def answer_suite(policy: Policy, suite: Suite, params: SamplingParams) -> list[str]:
    """Each prompt answered as a single user turn, in order (`evaluation.episodes.answer_prompts`)."""
    from evaluation.episodes import answer_prompts

    return answer_prompts(policy, [item.prompt for item in suite.items], params)


def evaluate_policy(policy: Policy, suite: Suite, params: SamplingParams) -> tuple[SuiteScore, list[dict]]:
    """`policy`'s score on `suite`, and each graded answer."""
    graded = grade(suite, answer_suite(policy, suite, params))
    return summarize(graded), graded
