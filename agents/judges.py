"""Judges score (query, answer) pairs.

- `FunctionJudge`: any Python function (a verifier or a programmatic reward).
- `SelfJudge`: a policy (in LSP, the frozen reference model) grading with a
  named rubric (`RUBRICS`): the paper's Box 3 (`paper-rubric`), our own
  7-criterion rubric (`rubric`), or a 0-9 helpfulness scale.
- `RewardModelJudge`: a Hugging Face sequence-classification reward model
  (e.g. Skywork-Reward-V2), scoring (query, answer) chats in batches.
"""
from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from agents.batching import MicroBatcher
from agents.policy import Policy, SamplingParams

log = logging.getLogger(__name__)


MAX_JUDGED_TOKENS = 1024  # of a query, and of an answer: what a self-judge reads of each, as reward models cut
# their input at max_length (a 4,000-character answer otherwise took 45 s to judge on 2 cores)


@dataclass
class Judgement:
    """One judge decision. `score` is the reward; `parsed` is False when the
    judge's output could not be read and a fallback score was used."""

    score: float
    text: str | None = None
    parsed: bool = True
    truncated: bool = False
    """Whether the query or the answer was cut to the judge's `max_input_tokens` before it was read."""


class Judge(ABC):
    """Scores answers to queries. Must be safe to call from many threads."""

    name: str = "judge"

    @abstractmethod
    def judge_batch(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        """Score each (query, answer) pair."""

    def judge(self, query: str, answer: str) -> Judgement:
        return self.judge_batch([(query, answer)])[0]


class FunctionJudge(Judge):
    """A judge from a plain function `fn(query, answer) -> float`."""

    def __init__(self, fn: Callable[[str, str], float], name: str = "function"):
        self.fn = fn
        self.name = name

    def judge_batch(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        return [Judgement(score=float(self.fn(query, answer))) for query, answer in pairs]


# --- Self-judge: the reference model grades with an additive rubric. ---------

EXCHANGE = """User request:
<request>
{query}
</request>

Assistant response:
<response>
{answer}
</response>
"""

RUBRIC_CRITERIA = """Start from 0 and add one point for each statement below that is true:
1. The request is a clear, self-contained task that a text-only assistant can do.
2. The response is on topic: it addresses what the request asks for.
3. The response covers the main parts of the request, not just a fragment.
4. The response is accurate, with no invented facts or wrong steps.
5. The response is clearly written and easy to follow.
6. The response is concise, without padding, repetition or unrelated content.
7. The response is of expert quality: complete, insightful and well judged.
"""

# The exchange comes before the criteria, as in the paper. Criteria first would let engines compute every
# prompt's shared instructions once per batch (a rubric batch 1.4-1.5x faster), but it changes what the judge
# prefers (`benchmarks/judge_layout.py`, benchmarks/RESULTS.md "Self-judges").
RUBRIC_PROMPT = ("You are grading one exchange between a user and an AI assistant.\n\n" + EXCHANGE + "\n"
                 + RUBRIC_CRITERIA)

PAPER_RUBRIC_PROMPT = """You are grading one exchange between a user and an AI assistant.

""" + EXCHANGE + """
Score it with an additive 7-point system. Start from 0 and add one point for
each statement below that holds:
1. The request gives the assistant a clear task.
2. The task is one that a text-only AI assistant can reasonably carry out.
3. The response is relevant and offers some information on the request, even
   if it is incomplete or partly off topic.
4. The response deals with a large part of the request, even if it does not
   fully resolve it.
5. The response usefully answers the core of the request, whatever its style.
6. The response speaks to the user directly, as an assistant would, and is
   thorough, well organised and helpful, with at most small lapses in clarity,
   concision or focus.
7. The response fits the request exactly, with nothing superfluous, shows
   expert knowledge, and is of outstanding, insightful quality.
"""

HELPFULNESS_CRITERIA = """Rate how helpful, correct and complete the response is for this request,
from 0 (useless or wrong) to 9 (perfect).
"""

HELPFULNESS_PROMPT = "You are grading how well an AI assistant answered a user.\n\n" + EXCHANGE + "\n" + HELPFULNESS_CRITERIA

GENERATE_INSTRUCTIONS = """
Write a one-sentence justification, then the points you added, then the total
on the last line in exactly this form:
Score: <a whole number from 0 to {max_score}>"""

PAPER_INSTRUCTIONS = """
Write your verdict as three lines, in this order:
Justification: <why, in at most 100 words>
Sum: <the point of each statement in order, e.g. 1+1+1+0+1+0+0>
Score: <the total, a whole number from 0 to {max_score}>"""

EXPECTED_INSTRUCTIONS = """
Reply with the score only, in exactly this form:
Score: <a whole number from 0 to {max_score}>"""

SCORE_PREFIX = "Score: "

_SCORE = re.compile(r"score\W{0,4}?\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)(\s*/\s*\d+)?", re.IGNORECASE)
_TOTAL = re.compile(r"total\W{0,4}?\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)(\s*/\s*\d+)?", re.IGNORECASE)


def parse_rubric_score(text: str, max_score: int = 7) -> float | None:
    """The rubric score in `text`, or None when there is no valid one.

    Reads the last "Score: N" (falling back to the last "Total: N"), accepts
    markdown emphasis and "N/7", and rejects values outside 0..max_score.
    """
    for pattern in (_SCORE, _TOTAL):
        matches = pattern.findall(text or "")
        if matches:
            value, denominator = matches[-1]
            if denominator and denominator.strip(" /") != str(max_score):
                return None
            score = float(value)
            return score if 0 <= score <= max_score else None
    return None


_PAPER_SCORE = re.compile(r"^[\s*_#>-]*score[\s*_]*:[\s*_]*(-?\d+(?:\.\d+)?)[\s*_]*"  # "**Score:** 5"
                          r"(?:/\s*(\d+))?(?:\s*points?)?[\s*_.]*$", re.IGNORECASE | re.MULTILINE)  # "5/7", "5 points"


def parse_paper_rubric(text: str, max_score: int = 7) -> float | None:
    """The points of a paper-rubric verdict (`PAPER_INSTRUCTIONS`), or None when it is malformed.

    The score is the last line of the form "Score: N" (markdown emphasis and
    "N/7" accepted), as the paper parses it; the justification and the sum
    before it are the judge's working. None: no such line, a value that is not
    a whole number, or one outside 0..max_score.
    """
    matches = _PAPER_SCORE.findall(text or "")
    if not matches:
        return None
    value, denominator = matches[-1]
    if (denominator and int(denominator) != max_score) or "." in value:
        return None
    score = int(value)
    return float(score) if 0 <= score <= max_score else None


@dataclass(frozen=True)
class Rubric:
    """A self-judge's grading prompt, its top score, the output format it asks for in "generate" mode, and the
    parser of that output (text, max_score) -> score or None."""

    prompt: str
    max_score: int
    output_format: str = GENERATE_INSTRUCTIONS
    parse: Callable[[str, int], float | None] = parse_rubric_score


class SelfJudge(Judge):
    """A policy (in LSP, the frozen reference model) grading (query, answer) pairs.

    Two modes:
    - "generate" (the paper's): the judge writes its verdict in `output_format`
      and `parser` reads the score. Malformed output is never scored silently:
      it gets `fallback_score` with `parsed=False`, is counted in `failures`
      (the trainer logs `NAME/parse_failures` each iteration) and logged.
    - "expected": the judge's reply is started with "Score: " and the score is
      the expectation of the next digit under the judge's distribution. It
      never fails to parse and costs one forward pass, which makes small
      models usable as judges (they rarely follow the output format).
    The reward is `score / max_score * scale`, in [0, scale]: with the default
    scale 1, a rubric's 0-7 points become R_Q = points / 7 in [0, 1], which
    LSP adds to R as it is.
    """

    name = "self-judge"

    def __init__(self, policy: Policy, prompt: str = RUBRIC_PROMPT, max_score: int = 7, mode: str = "expected",
                 max_new_tokens: int = 128, scale: float = 1.0, fallback_score: float = 0.0,
                 output_format: str = GENERATE_INSTRUCTIONS,
                 parser: Callable[[str, int], float | None] = parse_rubric_score,
                 max_input_tokens: int = MAX_JUDGED_TOKENS):
        if mode not in ("expected", "generate"):
            raise ValueError(f"mode must be 'expected' or 'generate', got {mode!r}")
        if not 1 <= max_score <= 9 and mode == "expected":
            raise ValueError("the expected-score mode reads one digit: max_score must be 1..9")
        self.policy = policy
        instructions = EXPECTED_INSTRUCTIONS if mode == "expected" else output_format
        self.prompt = prompt + instructions.format(max_score=max_score)
        self.max_score = max_score
        self.mode = mode
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        self.scale = scale
        self.fallback_score = fallback_score
        self.parser = parser
        self.max_input_tokens = max_input_tokens
        self.calls = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._prefix, self._digits = _digit_tokens(policy.tokenizer, max_score) if mode == "expected" else ([], [])

    def judge_batch(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        cut = [(self._capped(q), self._capped(a)) for q, a in pairs]
        chats = [[{"role": "user", "content": self.prompt.format(query=q, answer=a)}] for (q, _), (a, _) in cut]
        if self.mode == "expected":
            with ThreadPoolExecutor(max_workers=max(len(chats), 1)) as pool:
                judgements = list(pool.map(self._expected, chats))
        else:
            outputs = self.policy.generate_batch(chats, n=1, params=self.params)
            judgements = [self._parsed(completion.text) for (completion,) in outputs]
        judgements = [replace(j, truncated=q_cut or a_cut) for j, ((_, q_cut), (_, a_cut)) in zip(judgements, cut)]
        failed = [j for j in judgements if not j.parsed]
        with self._lock:
            self.calls += len(judgements)
            self.failures += len(failed)
        if failed:
            log.warning("%s: %d of %d outputs had no valid score (scored %s), e.g. %r", self.name, len(failed),
                        len(judgements), self.fallback_score, (failed[0].text or "")[-200:])
        return judgements

    def _capped(self, text: str) -> tuple[str, bool]:
        """`text` cut to its first `max_input_tokens` tokens (marked as cut), and whether it was."""
        ids = self.policy.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_input_tokens:
            return text, False
        return self.policy.tokenizer.decode(ids[:self.max_input_tokens]) + " [... cut for the judge]", True

    def _parsed(self, text: str) -> Judgement:
        score = self.parser(text, self.max_score)
        if score is None:
            return Judgement(score=self.fallback_score, text=text, parsed=False)
        return Judgement(score=score / self.max_score * self.scale, text=text)

    def _expected(self, chat) -> Judgement:
        prompt = self.policy.chat_prompt_ids(chat) + self._prefix
        logprobs = torch.tensor(self.policy.next_token_logprobs(prompt, self._digits))
        probs = logprobs.softmax(-1)  # renormalised over the digits 0..max_score
        expected = float((probs * torch.arange(len(probs))).sum())
        best = int(probs.argmax())
        text = f"{SCORE_PREFIX}{expected:.2f} (expected digit; most likely {best}, p={float(probs[best]):.2f})"
        return Judgement(score=expected / self.max_score * self.scale, text=text)


def _digit_tokens(tokenizer, max_score: int) -> tuple[list[int], list[int]]:
    """Token ids of "Score: " and of each digit 0..max_score that can follow it."""
    for prefix, separator in ((SCORE_PREFIX, ""), (SCORE_PREFIX.rstrip(), " ")):
        base = tokenizer.encode(prefix, add_special_tokens=False)
        digits = []
        for digit in range(max_score + 1):
            ids = tokenizer.encode(prefix + separator + str(digit), add_special_tokens=False)
            if ids[:len(base)] != base or len(ids) != len(base) + 1:
                break
            digits.append(ids[-1])
        if len(digits) == max_score + 1:
            return base, digits
    raise ValueError("this tokenizer does not encode single score digits after 'Score:'; use mode='generate'")


# --- Reward model: a sequence-classification head over the chat. -------------

class RewardModelJudge(Judge):
    """A Hugging Face `AutoModelForSequenceClassification` reward model.

    Each (query, answer) becomes a user/assistant chat formatted with the
    reward model's own chat template; the first logit is the score.
    Concurrent calls are micro-batched into one forward pass.
    """

    name = "reward-model"

    def __init__(self, name_or_path: str, dtype: torch.dtype | None = None, device: str | None = None,
                 max_length: int = 2048, max_batch_size: int = 16):
        """`device`: default cuda when there is a GPU, else cpu; `dtype`: default bfloat16 on a GPU, else float32."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path, dtype=dtype)
        except OSError as error:
            raise RuntimeError(f"cannot load the reward model {name_or_path!r}: {error}") from error
        self.model.to(device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device
        self.max_length = max_length
        self._batcher = MicroBatcher(lambda _, items: self._score(items), max_batch_size, name="reward-model")

    def _format(self, query: str, answer: str) -> str:
        chat = [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(chat, tokenize=False)
        return f"User: {query}\nAssistant: {answer}"

    @torch.inference_mode()
    def _score(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        """One forward pass over `pairs`; a text longer than `max_length` tokens is cut there, and marked."""
        texts = [self._format(q, a) for q, a in pairs]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt", add_special_tokens=False).to(self.device)
        scores = self.model(**batch).logits[:, 0].float().tolist()
        return [Judgement(score=score, truncated=length > self.max_length) for score, length in zip(scores, lengths)]

    def judge_batch(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        return self._score(pairs) if len(pairs) > 1 else [self._batcher.submit(pairs[0])]

    def close(self) -> None:
        self._batcher.close()


# --- Building judges from short names (configs and the CLI). ---------------------

RUBRICS = {
    "helpfulness": Rubric(HELPFULNESS_PROMPT, 9),
    "rubric": Rubric(RUBRIC_PROMPT, 7),
    "paper-rubric": Rubric(PAPER_RUBRIC_PROMPT, 7, PAPER_INSTRUCTIONS, parse_paper_rubric),
}

JUDGE_NAMES = {
    "helpfulness": "the reference model rates helpfulness 0-9 (reward in [0, 1])",
    "rubric": "the reference model applies our 7-criterion additive rubric (reward = points / 7)",
    "paper-rubric": "the reference model applies the paper's Box 3 rubric: justification, sum, score (points / 7)",
    "reward-model:PATH": "a Hugging Face sequence-classification reward model",
    "none": "no judge",
}


def check_judge_name(name: str | None) -> None:
    """Refuse a judge name that `build_judge` does not know (see `JUDGE_NAMES`)."""
    if name not in (None, "", "none") and not name.startswith("reward-model:") and name not in RUBRICS:
        raise ValueError(f"unknown judge {name!r}; choose one of: {', '.join(JUDGE_NAMES)}")


def build_judge(name: str | None, reference: Policy | None, max_new_tokens: int = 128,
                mode: str = "expected") -> Judge | None:
    """A judge from its short name (see `JUDGE_NAMES`); self-judges run on `reference` in `mode`."""
    check_judge_name(name)
    if name in (None, "", "none"):
        return None
    if name.startswith("reward-model:"):
        return RewardModelJudge(name.split(":", 1)[1])
    if reference is None:
        raise ValueError(f"the {name!r} judge needs a reference policy")
    rubric = RUBRICS[name]
    judge = SelfJudge(reference, prompt=rubric.prompt, max_score=rubric.max_score, mode=mode,
                      max_new_tokens=max_new_tokens, output_format=rubric.output_format, parser=rubric.parse)
    judge.name = f"self-judge ({name})"
    return judge
