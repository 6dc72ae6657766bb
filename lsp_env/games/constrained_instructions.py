"""
# Constrained Instructions

| Creation           | `lsp_env.make("ConstrainedInstructions-v2", quality_judge=None)` (v0: no topics, strict) |
|--------------------|------------------------------------------------------|
| Actions            | Text (`UnicodeText`)                                 |
| Parallel API       | No                                                   |
| Agents             | `agents= ['challenger', 'solver']`                   |
| Agents             | 2                                                    |
| Action Values      | non-blank text, up to `max_query_chars` / `max_answer_chars` |
| Observation Values | text                                                 |
| Branch point       | `solver` (`branch_agent`)                            |

Verifiable instruction following (in the style of IFEval). The challenger
writes a task; the environment attaches 1 to 3 constraints drawn from
`lsp_env.constraints` (at least 15 kinds, each with a checker), seeded by
`reset(seed)`; the solver answers the task under the constraints.

### Observation Space

The challenger observes `CHALLENGER_PROMPT`, or with `topics` a short ask for
one question about a topic drawn from `TOPICS` (`TOPIC_PROMPT`): small models
answer the long prompt as an assistant would ("I'm ready to help...") rather
than with a task, and most of the time answer the short one with a real
question (`benchmarks/RESULTS.md`). The solver observes "" until the
task exists, then the task followed by the constraints, one per line; with
`rule_layout="mixed"`, half of the episodes (drawn with the seed) state them
instead as sentences after the task, as a user would write them. With
`vocabulary="wide"` the constraints' words, phrases and numbers come from
`lsp_env.constraints.WIDE` (about five times as many as `NARROW`), so that the
solver has to read a rule to meet it rather than learn a few by heart.

### Action Space

The challenger's move is the task, the solver's the answer.

### Rewards

With C the fraction of constraints the answer meets (with `partial_credit`,
a missed constraint adds up to half of one for how close it came, see
`lsp_env.constraints`) and, when a `quality_judge` is given, R_Q its score of
(task with constraints, answer):

| Mode                         | Solver    | Challenger |
| :--------------------------: | :-------: | :--------: |
| no `quality_judge`           | C         | -C         |
| with `quality_judge`         | C + R_Q   | -C + R_Q   |

The guards (by default `length`, `degenerate_query` and `code_answer`, see
`lsp_env.guards`) then subtract their penalties. The infos hold `query`,
`constraints` (the instructions), `met` (one bool per constraint), `reward`
(C), `passed` (the fraction met, without partial credit), `quality` (R_Q or
None) and `guards`.

### Arguments

    ConstrainedInstructions(quality_judge=None, min_constraints=1, max_constraints=3,
                            partial_credit=False, topics=False, vocabulary="narrow", rule_layout="list",
                            max_query_chars=8192, max_answer_chars=32768, guards=None,
                            invalid_move_penalty=-1.0, render_mode=None)

### Version History

* v2: v1 with `vocabulary="wide"` and `rule_layout="mixed"`: the variant the
  CPU recipe trains on.
* v1: `topics=True` and `partial_credit=True` by default (registered kwargs; the
  class is the same).
* v0: Initial version.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal

from lsp_env.constraints import VOCABULARIES, Constraint, fraction_met, partial_credit, sample_constraints
from lsp_env.contract import PASSED_INFO, QUALITY_INFO, REWARD_INFO
from lsp_env.guards import GuardedGame
from lsp_env.text_game import check_judge

if TYPE_CHECKING:
    from agents.judges import Judge

CHALLENGER_PROMPT = (
    "You are helping to test an AI assistant. Write ONE request a user might send it: a question to answer, "
    "a text to write or a problem to explain, from easy to hard. Formatting rules will be added to your request "
    "afterwards, so do not add any yourself. Write the request only, with no answer and no remarks, then stop."
)
TOPIC_PROMPT = "Ask me one question about {topic}. Write only the question."
TOPICS = (
    "the ocean", "cooking", "the history of Rome", "saving money", "learning a language", "volcanoes", "friendship",
    "electric cars", "sleep", "chess", "gardening", "the moon", "music", "football", "birds", "the weather",
    "computers", "ancient Egypt", "coffee", "trains", "mountains", "painting", "the human heart", "rivers",
    "recycling", "photography", "dinosaurs", "bread", "the internet", "time zones", "bees", "job interviews",
    "rain forests", "the solar system", "poetry", "bicycles", "vitamins", "castles", "deserts", "robots",
    "family holidays", "the printing press", "earthquakes", "tea", "city parks", "writing letters", "islands",
    "running",
)


class ConstrainedInstructions(GuardedGame):
    """The challenger writes a task, the env adds verifiable constraints, the solver must meet them."""

    metadata = {
        "name": "ConstrainedInstructions-v0",
        "description": "The challenger writes a task; the env attaches 1-3 verifiable constraints; the solver "
                       "is scored by the fraction met.",
        "roles": ["challenger", "solver"],
        "reward": "verified (fraction of constraints met) + optional judge",
        "is_parallelizable": False,
        "render_modes": ["human", "ansi"],
    }
    branch_agent = "solver"
    judges = ("quality_judge",)

    def __init__(self, quality_judge: Judge | None = None, *, min_constraints: int = 1, max_constraints: int = 3,
                 partial_credit: bool = False, topics: bool = False, vocabulary: Literal["narrow", "wide"] = "narrow",
                 rule_layout: Literal["list", "mixed"] = "list", max_query_chars: int = 8192,
                 max_answer_chars: int = 32768, guards=None, invalid_move_penalty: float = -1.0,
                 render_mode: str | None = None):
        if not 1 <= min_constraints <= max_constraints <= 3:
            raise ValueError("need 1 <= min_constraints <= max_constraints <= 3")
        if vocabulary not in VOCABULARIES or rule_layout not in ("list", "mixed"):
            raise ValueError(f"vocabulary is narrow or wide (got {vocabulary!r}), rule_layout list or mixed "
                             f"(got {rule_layout!r})")
        if quality_judge is not None:
            check_judge("quality_judge", quality_judge)
        super().__init__(
            self.metadata["roles"],
            max_action_chars={"challenger": max_query_chars, "solver": max_answer_chars},
            max_observation_chars=max(len(CHALLENGER_PROMPT), max_query_chars + 1000),
            invalid_move_penalty=invalid_move_penalty,
            render_mode=render_mode,
            guards=guards,
        )
        self.quality_judge = quality_judge
        self.constraint_range = (min_constraints, max_constraints)
        self.partial_credit = partial_credit
        self.topics = topics
        self.vocabulary = VOCABULARIES[vocabulary]
        self.rule_layout = rule_layout
        self.topic: str | None = None
        self.inline_rules = False
        self.rng = random.Random()
        self.constraints: list[Constraint] = []
        self.task: str | None = None

    def _shared_resources(self) -> list[object]:
        judges = [] if self.quality_judge is None else [self.quality_judge]
        return [*super()._shared_resources(), *judges]

    def reset_game(self, seed: int | None, options: dict | None) -> str:
        if seed is not None:
            self.rng.seed(seed)
        self.constraints = sample_constraints(self.rng, self.rng.randint(*self.constraint_range), self.vocabulary)
        self.topic = self.rng.choice(TOPICS) if self.topics else None
        self.inline_rules = self.rule_layout == "mixed" and self.rng.random() < 0.5
        self.task = None
        return "challenger"

    def observation_text(self, agent: str) -> str:
        if agent == "challenger":
            return CHALLENGER_PROMPT if self.topic is None else TOPIC_PROMPT.format(topic=self.topic)
        if self.task is None:
            return ""
        if self.inline_rules:
            return " ".join([self.task, *(constraint.instruction for constraint in self.constraints)])
        rules = "\n".join(f"- {constraint.instruction}" for constraint in self.constraints)
        return f"{self.task}\n\nFollow these rules in your answer:\n{rules}"

    def apply_move(self, agent: str, text: str) -> str | None:
        if agent == "challenger":
            self.task = text
            for info in self.infos.values():
                info.update(query=self.observation_text("solver"),
                            constraints=[constraint.instruction for constraint in self.constraints])
            return "solver"
        query = self.observation_text("solver")
        passed, results = fraction_met(self.constraints, text)
        met = partial_credit(self.constraints, text) if self.partial_credit else passed
        quality = None if self.quality_judge is None else float(self.quality_judge.judge(query, text).score)
        rewards = {"solver": met + (quality or 0.0), "challenger": -met + (quality or 0.0)}
        self.score(self.task, text, rewards, {"answer": text, "met": results, REWARD_INFO: met,
                                              PASSED_INFO: passed, QUALITY_INFO: quality})
        return None
