"""
# Language Self-Play

| Creation           | `lsp_env.make("LanguageSelfPlay-v0", judge=None)`    |
|--------------------|------------------------------------------------------|
| Actions            | Text (`UnicodeText`)                                 |
| Parallel API       | No                                                   |
| Agents             | `agents= ['challenger', 'solver']`                   |
| Agents             | 2                                                    |
| Action Values      | non-blank text, up to `max_query_chars` / `max_answer_chars` |
| Observation Values | text, up to max(prompt length, `max_query_chars`)    |
| Branch point       | `solver` (`branch_agent`)                            |

Language Self-Play (Kuba et al., 2025, arXiv 2509.07414): one language model
plays both roles. The challenger writes a query meant to stress-test the solver;
the solver answers it; a judge scores the answer.

### Observation Space

The challenger observes the challenger prompt (`lsp_env.prompts`). The solver
observes "" until the query exists, then the plain query.

### Action Space

The challenger's action is the query, the solver's the answer. Each episode
has exactly these two moves.

### Rewards

With R = `judge.judge(query, answer).score`:

| Mode                         | Solver    | Challenger |
| :--------------------------: | :-------: | :--------: |
| LSP-Zero (no `quality_judge`)| R         | -R         |
| LSP (`quality_judge` set)    | R + R_Q   | -R + R_Q   |

R_Q = `quality_judge.judge(query, answer).score` is the self-reward for
quality. Averaged over a group of answers to one query (the trainer forks the
episode at the solver's turn) the challenger's reward is -V(q) + V_Q(q), as in
the paper. When the game ends, both agents' infos hold the breakdown: `query`,
`answer`, `reward` (R), `quality` (R_Q or None), `judge_text`, `judge_parsed`, `judged_truncated` (the query or
answer was cut to what the judge reads: `agents.judges.MAX_JUDGED_TOKENS`),
`quality_text`, `quality_parsed`, and `guards`.

### Guards

`guards` (see `lsp_env.guards`; by default `length`, `degenerate_query` and
`code_answer`) subtract penalties after the judges: a too-long answer or an
answer in code the query did not ask for lowers the solver's reward, a
degenerate query the challenger's. Pass `guards=[]` to turn them off.

### Invalid moves

An invalid query ends the episode before the judge is called: the challenger
gets `invalid_move_penalty`, the solver 0. An invalid answer ends it too, also
without a judge call: the solver gets `invalid_move_penalty`, the challenger 0
(a query is not rewarded for an answer that was never valid).
`infos[agent]["invalid_move"]` gives the reason.

### Arguments

    LanguageSelfPlay(judge, quality_judge=None, task=DEFAULT_TASK, template="",
                     challenger_prompt=None, max_query_chars=8192,
                     max_answer_chars=32768, guards=None, invalid_move_penalty=-1.0,
                     render_mode=None)

`judge` is any `agents.judges.Judge`; without one, the game gets the
embedded model's helpfulness self-judge, loaded on its first judgement
(`agents.default_judge`). `challenger_prompt`, when
given, replaces the prompt built from `task` and `template`. The character
limits are generous (about 2k and 8k tokens) so that they only catch runaways.

### Version History

* v0: Initial version.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lsp_env import prompts
from lsp_env.guards import GuardedGame
from lsp_env.text_game import check_judge

if TYPE_CHECKING:
    from agents.judges import Judge, Judgement


class LanguageSelfPlay(GuardedGame):
    """The challenger writes a query, the solver answers, a judge scores the answer."""

    metadata = {
        "name": "LanguageSelfPlay-v0",
        "description": "A challenger writes a query to stress-test the solver; a judge scores the answer.",
        "roles": ["challenger", "solver"],
        "reward": "judged",
        "is_parallelizable": False,
        "render_modes": ["human", "ansi"],
    }
    branch_agent = "solver"
    judges = ("judge", "quality_judge")

    def __init__(
        self,
        judge: Judge | None = None,
        *,
        quality_judge: Judge | None = None,
        task: str = prompts.DEFAULT_TASK,
        template: str = prompts.DEFAULT_TEMPLATE,
        challenger_prompt: str | None = None,
        max_query_chars: int = 8192,
        max_answer_chars: int = 32768,
        guards=None,
        invalid_move_penalty: float = -1.0,
        render_mode: str | None = None,
    ):
        if judge is None:
            from agents.default_judge import EmbeddedJudge

            judge = EmbeddedJudge()
        check_judge("judge", judge)
        if quality_judge is not None:
            check_judge("quality_judge", quality_judge)
        prompt = prompts.challenger_prompt(task, template) if challenger_prompt is None else challenger_prompt
        super().__init__(
            self.metadata["roles"],
            max_action_chars={"challenger": max_query_chars, "solver": max_answer_chars},
            max_observation_chars=max(len(prompt), max_query_chars),
            invalid_move_penalty=invalid_move_penalty,
            render_mode=render_mode,
            guards=guards,
        )
        if not prompt.strip() or not self.observation_space("challenger").contains(prompt):
            raise ValueError("The challenger prompt must be non-blank text without control or private-use characters.")
        self.judge = judge
        self.quality_judge = quality_judge
        self.challenger_prompt = prompt
        self.template = template
        self.query: str | None = None
        self.answer: str | None = None

    def _shared_resources(self) -> list[object]:
        judges = [judge for judge in (self.judge, self.quality_judge) if judge is not None]
        return [*super()._shared_resources(), *judges]

    def reset_game(self, seed: int | None, options: dict | None) -> str:
        self.query = None
        self.answer = None
        return "challenger"

    def observation_text(self, agent: str) -> str:
        if agent == "challenger":
            return self.challenger_prompt
        return self.query or ""

    def apply_move(self, agent: str, text: str) -> str | None:
        if agent == "challenger":
            self.query = text
            for info in self.infos.values():
                info["query"] = text
            return "solver"
        self.answer = text
        self._score()
        return None

    def _score(self) -> None:
        verdict = self.judge.judge(self.query, self.answer)
        reward = float(verdict.score)
        quality_verdict = None if self.quality_judge is None else self.quality_judge.judge(self.query, self.answer)
        quality = None if quality_verdict is None else float(quality_verdict.score)
        rewards = {"solver": reward + (quality or 0.0), "challenger": -reward + (quality or 0.0)}
        breakdown = {
            "query": self.query,
            "answer": self.answer,
            "reward": reward,
            "quality": quality,
            "judge_text": verdict.text,
            "judge_parsed": verdict.parsed,
            "quality_text": None if quality_verdict is None else quality_verdict.text,
            "quality_parsed": None if quality_verdict is None else quality_verdict.parsed,
            "judged_truncated": verdict.truncated or (quality_verdict is not None and quality_verdict.truncated),
        }
        self.transcript.append(("judge", _describe(verdict, quality_verdict)))
        breakdown["guards"] = self.apply_guards(self.query, self.answer, rewards, self.template)
        self.rewards.update(rewards)
        for info in self.infos.values():
            info.update(breakdown)


def _describe(verdict: Judgement, quality_verdict: Judgement | None) -> str:
    lines = [f"reward {verdict.score:.3f}" + ("" if verdict.parsed else " (judge output not parsed)")]
    if verdict.text:
        lines.append(verdict.text)
    if quality_verdict is not None:
        lines.append(f"quality {quality_verdict.score:.3f}")
        if quality_verdict.text:
            lines.append(quality_verdict.text)
    return "\n".join(lines)
