"""Oversized actions against the default game: one LanguageSelfPlay step with a random 4,000-character answer,
with the judge's input cap (`agents.judges.MAX_JUDGED_TOKENS`) and without it, and PettingZoo's `api_test`
(random actions of up to 8,192 and 32,768 characters) with the cap.

    python -m benchmarks.oversized_actions          # = lsp bench oversized-actions

The game is `lsp_env.make("LanguageSelfPlay-v0")` with its default judge (the embedded model's helpfulness
self-judge, "expected" mode); "no cap" sets the judge's `max_input_tokens` past any action.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass

from jsonargparse import auto_cli
from pettingzoo.test import api_test

import lsp_env
from agents.default_judge import loaded_judge
from agents.judges import MAX_JUDGED_TOKENS
from lsp_env.text_game import UnicodeText


@dataclass
class Settings:
    answer_chars: int = 4000
    repeats: int = 3
    api_test_cycles: int = 6
    """`api_test`'s num_cycles (its default is 1000)."""


def one_step(answer: str) -> tuple[float, bool]:
    """Seconds for the solver's step (the judgement), and whether the judge's input was cut."""
    env = lsp_env.make("LanguageSelfPlay-v0")
    env.reset(seed=0)
    env.step("Explain how tides work.")
    start = time.perf_counter()
    env.step(answer)
    return time.perf_counter() - start, env.infos["solver"]["judged_truncated"]


def run(settings: Settings) -> str:
    judge = loaded_judge()
    answer = UnicodeText(settings.answer_chars, min_length=settings.answer_chars, seed=0).sample()  # as api_test's
    rows = []
    for name, cap in (("cap", MAX_JUDGED_TOKENS), ("no cap", 10**9)):
        judge.max_input_tokens = cap
        one_step("warm-up")
        steps = [one_step(answer) for _ in range(settings.repeats)]
        rows.append((name, cap, statistics.median(t for t, _ in steps), steps[0][1]))
    judge.max_input_tokens = MAX_JUDGED_TOKENS
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # api_test's advice for numeric envs
        env = lsp_env.make("LanguageSelfPlay-v0")
        for seed, agent in enumerate(env.possible_agents):
            env.action_space(agent).seed(seed)
        api_test(env, num_cycles=settings.api_test_cycles)
    api_s = time.perf_counter() - start
    capped, uncapped = rows
    lines = [f"LanguageSelfPlay-v0, default judge, a {settings.answer_chars}-character answer (median of "
             f"{settings.repeats}), api_test with num_cycles={settings.api_test_cycles}; {platform.machine()} with "
             f"{len(os.sched_getaffinity(0))} cores", "",
             "| judge input | step (s) | judged_truncated |", "|---|---|---|"]
    lines += [f"| {name} ({cap if cap < 10**9 else 'none'} tokens) | {step:.2f} | {cut} |"
              for name, cap, step, cut in rows]
    lines += ["", f"api_test (num_cycles={settings.api_test_cycles}, with the cap): {api_s:.1f} s",
              f"step_no_cap_vs_cap={uncapped[2] / capped[2]:.2f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
