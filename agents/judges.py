"""Judges score (query, answer) pairs.

- `FunctionJudge`: any Python function (a verifier or a programmatic reward).
- `SelfJudge`: a policy (in LSP, the frozen reference model) grading with a
  7-criterion additive rubric, as in the paper's self-reward.
- `RewardModelJudge`: a Hugging Face sequence-classification reward model
  (e.g. Skywork-Reward-V2), scoring (query, answer) chats in batches.
"""
from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from agents.batching import MicroBatcher
from agents.policy import Policy, SamplingParams


@dataclass
class Judgement:
    """One judge decision. `score` is the reward; `parsed` is False when the
    judge's output could not be read and a fallback score was used."""

    score: float
    text: str | None = None
    parsed: bool = True


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

RUBRIC_PROMPT = """You are grading one exchange between a user and an AI assistant.

""" + EXCHANGE + """
Start from 0 and add one point for each statement below that is true:
1. The request is a clear, self-contained task that a text-only assistant can do.
2. The response is on topic: it addresses what the request asks for.
3. The response covers the main parts of the request, not just a fragment.
4. The response is accurate, with no invented facts or wrong steps.
5. The response is clearly written and easy to follow.
6. The response is concise, without padding, repetition or unrelated content.
7. The response is of expert quality: complete, insightful and well judged.
"""

HELPFULNESS_PROMPT = """You are grading how well an AI assistant answered a user.

""" + EXCHANGE + """
Rate how helpful, correct and complete the response is for this request,
from 0 (useless or wrong) to 9 (perfect).
"""

GENERATE_INSTRUCTIONS = """
Write a one-sentence justification, then the points you added, then the total
on the last line in exactly this form:
Score: <a whole number from 0 to {max_score}>"""

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


class SelfJudge(Judge):
    """A policy (in LSP, the frozen reference model) grading (query, answer) pairs.

    Two modes:
    - "generate" (the paper's): the judge writes a justification and
      "Score: N"; the score is parsed. Unparseable output gets
      `fallback_score` and is counted in `failures`.
    - "expected": the judge's reply is started with "Score: " and the score is
      the expectation of the next digit under the judge's distribution. It
      never fails to parse and costs one forward pass, which makes small
      models usable as judges (they rarely follow the output format).
    The reward is `score / max_score * scale`, in [0, scale].
    """

    name = "self-judge"

    def __init__(self, policy: Policy, prompt: str = RUBRIC_PROMPT, max_score: int = 7, mode: str = "expected",
                 max_new_tokens: int = 128, scale: float = 1.0, fallback_score: float = 0.0):
        if mode not in ("expected", "generate"):
            raise ValueError(f"mode must be 'expected' or 'generate', got {mode!r}")
        if not 1 <= max_score <= 9 and mode == "expected":
            raise ValueError("the expected-score mode reads one digit: max_score must be 1..9")
        self.policy = policy
        instructions = EXPECTED_INSTRUCTIONS if mode == "expected" else GENERATE_INSTRUCTIONS
        self.prompt = prompt + instructions.format(max_score=max_score)
        self.max_score = max_score
        self.mode = mode
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        self.scale = scale
        self.fallback_score = fallback_score
        self.calls = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._prefix, self._digits = _digit_tokens(policy.tokenizer, max_score) if mode == "expected" else ([], [])

    def judge_batch(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        chats = [[{"role": "user", "content": self.prompt.format(query=q, answer=a)}] for q, a in pairs]
        if self.mode == "expected":
            with ThreadPoolExecutor(max_workers=max(len(chats), 1)) as pool:
                judgements = list(pool.map(self._expected, chats))
        else:
            outputs = self.policy.generate_batch(chats, n=1, params=self.params)
            judgements = [self._parsed(completion.text) for (completion,) in outputs]
        with self._lock:
            self.calls += len(judgements)
            self.failures += sum(not j.parsed for j in judgements)
        return judgements

    def _parsed(self, text: str) -> Judgement:
        score = parse_rubric_score(text, self.max_score)
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

    def __init__(self, name_or_path: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
                 max_length: int = 2048, max_batch_size: int = 16):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

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
    def _score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        texts = [self._format(q, a) for q, a in pairs]
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt", add_special_tokens=False).to(self.device)
        return self.model(**batch).logits[:, 0].float().tolist()

    def judge_batch(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        return [Judgement(score=s) for s in self._score(pairs)] if len(pairs) > 1 else [
            Judgement(score=self._batcher.submit(pairs[0]))]

    def close(self) -> None:
        self._batcher.close()


# --- Building judges from short names (configs and the CLI). ---------------------

JUDGE_NAMES = {
    "helpfulness": "the reference model rates helpfulness 0-9 (reward in [0, 1])",
    "rubric": "the reference model applies the 7-point additive rubric (reward in [0, 1])",
    "reward-model:PATH": "a Hugging Face sequence-classification reward model",
    "none": "no judge",
}


def build_judge(name: str | None, reference: Policy | None, max_new_tokens: int = 128,
                mode: str = "expected") -> Judge | None:
    """A judge from its short name (see `JUDGE_NAMES`); self-judges run on `reference` in `mode`."""
    if name in (None, "", "none"):
        return None
    if name.startswith("reward-model:"):
        return RewardModelJudge(name.split(":", 1)[1])
    prompts = {"helpfulness": (HELPFULNESS_PROMPT, 9), "rubric": (RUBRIC_PROMPT, 7)}
    if name not in prompts:
        raise ValueError(f"unknown judge {name!r}; choose one of: {', '.join(JUDGE_NAMES)}")
    if reference is None:
        raise ValueError(f"the {name!r} judge needs a reference policy")
    prompt, max_score = prompts[name]
    judge = SelfJudge(reference, prompt=prompt, max_score=max_score, mode=mode, max_new_tokens=max_new_tokens)
    judge.name = f"self-judge ({name})"
    return judge
