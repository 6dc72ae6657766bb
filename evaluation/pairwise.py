"""Judges that say which of two answers to one instruction is better.

- `PairwiseJudge`: an LLM sees the instruction and answers A and B; its
  verdict is read from its next-token probabilities of "A", "B" and "tie"
  after "Verdict:" (one forward pass, never a parse failure). Order matters,
  so win rates judge both orders. Small judges favour one position so
  strongly that the raw verdict never changes (SmolLM2-135M always says
  "A"), so by default the verdicts are calibrated on the batch: each
  option's mean log-probability over the batch is subtracted before the
  argmax (contextual calibration, Zhao et al. 2021). A batch that holds
  every pair in both orders, as `winrate.compare` sends, makes that mean the
  judge's position bias alone.
- `ScoreComparer`: any pointwise `Judge` (reward model, self-judge rubric)
  scores both answers; the higher score wins. Order does not matter.

Both return `Preference`s from the first answer's point of view.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import torch

from agents.judges import Judge, build_judge
from agents.policy import Policy

PAIRWISE_PROMPT = """You are comparing two AI assistants' responses to the same user request.

User request:
<request>
{instruction}
</request>

Response A:
<response_a>
{first}
</response_a>

Response B:
<response_b>
{second}
</response_b>

Which response is more helpful, correct and complete for this request? Reply with the verdict only, in
exactly this form: "Verdict: A", "Verdict: B", or "Verdict: tie" when they are equally good."""

VERDICT_PREFIX = "Verdict:"
VERDICTS = {"A": 1.0, "B": 0.0, "tie": 0.5}  # the first answer's score for each verdict
MAX_THREADS = 64  # judgements in flight at once (the engine batches them)


@dataclass
class Preference:
    """A judge's verdict on (first, second): `score` is 1 (first better), 0.5 (tie) or 0 (second better)."""

    score: float
    details: dict = field(default_factory=dict)


Triple = tuple[str, str, str]  # (instruction, first answer, second answer)


class PairwiseJudge:
    """An LLM judge comparing two answers, read from its next-token distribution."""

    order_matters = True

    def __init__(self, policy: Policy, prompt: str = PAIRWISE_PROMPT, name: str = "pairwise", calibrate: bool = True):
        self.policy = policy
        self.prompt = prompt
        self.name = name
        self.calibrate = calibrate
        self._prefix, self._options = _verdict_tokens(policy.tokenizer)

    def compare_batch(self, triples: Sequence[Triple]) -> list[Preference]:
        if not triples:
            return []
        with ThreadPoolExecutor(max_workers=MAX_THREADS) as pool:  # concurrent calls share a forward pass
            logprobs = torch.stack(list(pool.map(self._verdict_logprobs, triples)))
        calibrated = calibrate_logprobs(logprobs) if self.calibrate and len(triples) > 1 else logprobs
        preferences = []
        for raw, adjusted in zip(logprobs, calibrated):
            verdict = _best_verdict(adjusted)
            details = {"verdict": verdict, "probabilities": dict(zip(VERDICTS, raw.exp().tolist()))}
            if self.calibrate:
                details["calibrated_logprobs"] = dict(zip(VERDICTS, adjusted.tolist()))
            preferences.append(Preference(VERDICTS[verdict], details))
        return preferences

    def _verdict_logprobs(self, triple: Triple) -> torch.Tensor:
        """Log-probabilities of the verdicts, renormalised over them, in `VERDICTS` order."""
        instruction, first, second = triple
        chat = [{"role": "user", "content": self.prompt.format(instruction=instruction, first=first, second=second)}]
        prompt_ids = self.policy.chat_prompt_ids(chat) + self._prefix
        logprobs = torch.tensor(self.policy.next_token_logprobs(prompt_ids, [self._options[v] for v in VERDICTS]))
        return logprobs.log_softmax(-1)


def calibrate_logprobs(logprobs: torch.Tensor) -> torch.Tensor:
    """Subtract each verdict's mean log-probability over the batch (rows: judgements, columns: verdicts)."""
    return logprobs - logprobs.mean(dim=0, keepdim=True)


def _best_verdict(scores: torch.Tensor, tolerance: float = 1e-6) -> str:
    """The highest-scoring verdict; a tie when A and B are level and beat it."""
    values = dict(zip(VERDICTS, scores.tolist()))
    if abs(values["A"] - values["B"]) <= tolerance:
        return "tie"
    return max(values, key=values.get)


class ScoreComparer:
    """A pointwise judge used pairwise: both answers are scored, a gap within `tie_margin` is a tie."""

    order_matters = False

    def __init__(self, judge: Judge, tie_margin: float = 0.0):
        self.judge = judge
        self.tie_margin = tie_margin
        self.name = judge.name

    def compare_batch(self, triples: Sequence[Triple]) -> list[Preference]:
        pairs = [(instruction, answer) for instruction, first, second in triples for answer in (first, second)]
        scores = [judgement.score for judgement in self.judge.judge_batch(pairs)] if pairs else []
        preferences = []
        for first, second in zip(scores[::2], scores[1::2]):
            gap = first - second
            score = 0.5 if abs(gap) <= self.tie_margin else float(gap > 0)
            preferences.append(Preference(score, {"scores": [first, second]}))
        return preferences


def build_pairwise_judge(name: str, reference: Policy | None, mode: str = "expected", tie_margin: float = 0.0):
    """`pairwise` (an LLM pairwise judge on `reference`) or any `agents.judges.build_judge` name, compared by score."""
    if name == "pairwise":
        if reference is None:
            raise ValueError("the 'pairwise' judge needs a judge model")
        return PairwiseJudge(reference)
    judge = build_judge(name, reference, mode=mode)
    if judge is None:
        raise ValueError("a win rate needs a judge: pairwise, helpfulness, rubric or reward-model:PATH")
    return ScoreComparer(judge, tie_margin)


def _verdict_tokens(tokenizer) -> tuple[list[int], dict[str, int]]:
    """Token ids of the verdict prefix and the first token of each verdict that can follow it."""
    for prefix, separator in ((VERDICT_PREFIX + " ", ""), (VERDICT_PREFIX, " ")):
        base = tokenizer.encode(prefix, add_special_tokens=False)
        options = {}
        for verdict in VERDICTS:
            ids = tokenizer.encode(prefix + separator + verdict, add_special_tokens=False)
            if ids[:len(base)] == base and len(ids) > len(base):
                options[verdict] = ids[len(base)]
        if len(set(options.values())) == len(VERDICTS):
            return base, options
    raise ValueError(f"this tokenizer cannot read distinct verdict tokens after {VERDICT_PREFIX!r}")
