"""Self-judge prompt layout: the exchange before the criteria (ours) against the criteria first, on the same text.

    python -m benchmarks.judge_layout            # = lsp bench judge-layout

With the criteria first, every prompt of a judge batch starts with the same instructions, which the engine
computes once for the batch (`agents.hf`, vLLM's prefix cache); with the exchange first, only the opening line is
shared. For each of our rubrics (`helpfulness`, `rubric`) and each layout, the base model judges, in "expected"
mode on the hf engine under bfloat16 autocast, three answers to each bundled held-out prompt: its own greedy
answer, the answer to the next prompt (off topic) and "Sure." (degenerate). Reported: the mean reward of each,
how often the on-topic answer scores higher than each of the others (a judge that tells them apart gives ~1), and
the seconds the layout took to judge all of them (median of `repeats`).
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import auto_cli

from agents.judges import (EXCHANGE, HELPFULNESS_CRITERIA, HELPFULNESS_PROMPT, RUBRIC_CRITERIA, RUBRIC_PROMPT,
                           SelfJudge)
from agents.models import DEFAULT_MODEL
from evaluation.alpaca import HELDOUT_PROMPTS

# name: (max score, exchange first (ours), criteria first)
LAYOUTS = {
    "rubric": (7, RUBRIC_PROMPT, "You are grading one exchange between a user and an AI assistant, shown below.\n\n"
               + RUBRIC_CRITERIA + "\n" + EXCHANGE),
    "helpfulness": (9, HELPFULNESS_PROMPT, "You are grading how well an AI assistant answered a user, in the "
                    "exchange below.\n" + HELPFULNESS_CRITERIA + "\n" + EXCHANGE),
}


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    prompts: str = HELDOUT_PROMPTS
    """AlpacaEval-style JSON list of {"instruction": ...}."""
    max_new_tokens: int = 96
    """Length of the on-topic answers (greedy)."""
    repeats: int = 2


def run(settings: Settings) -> str:
    import torch

    from agents.hf import HFPolicy
    from agents.models import load_model
    from agents.policy import SamplingParams

    prompts = [item["instruction"] for item in json.loads(Path(settings.prompts).read_text())]
    policy = HFPolicy(*load_model(settings.model), autocast=torch.bfloat16)
    chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
    own = [c[0].text for c in policy.generate_batch(chats, params=SamplingParams(settings.max_new_tokens, 0.0))]
    answers = {"on topic": own, "off topic": own[1:] + own[:1], "degenerate": ["Sure."] * len(prompts)}
    lines = [f"{settings.model}, hf engine, bfloat16 autocast, {len(prompts)} prompts x 3 answers, median of "
             f"{settings.repeats}, {platform.machine()} with {_cores()} cores", "",
             "| judge | layout | mean: on topic / off topic / degenerate | on topic scores higher than off topic "
             "/ than degenerate | seconds |", "|---|---|---|---|---|"]
    try:
        for name, (max_score, exchange_first, criteria_first) in LAYOUTS.items():
            for layout, prompt in (("exchange first (ours)", exchange_first), ("criteria first", criteria_first)):
                judge = SelfJudge(policy, prompt=prompt, max_score=max_score)
                times, scores = [], {}
                for _ in range(settings.repeats):
                    start = time.perf_counter()
                    scores = {kind: [j.score for j in judge.judge_batch(list(zip(prompts, texts)))]
                              for kind, texts in answers.items()}
                    times.append(time.perf_counter() - start)
                means = " / ".join(f"{statistics.fmean(values):.3f}" for values in scores.values())
                wins = " / ".join(f"{_higher(scores['on topic'], scores[kind]):.2f}"
                                  for kind in ("off topic", "degenerate"))
                lines.append(f"| {name} | {layout} | {means} | {wins} | {statistics.median(times):.1f} |")
    finally:
        policy.close()
    return "\n".join(lines)


def _higher(a: list[float], b: list[float]) -> float:
    return sum(x > y for x, y in zip(a, b)) / len(a)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
