"""Framework overhead: the full collector's throughput over the raw engine's, on the same prompts.

    python -m benchmarks.collector_overhead --engine vllm --groups 16 --group_size 4 --repeats 3

The collector plays `groups` LanguageSelfPlay groups of `group_size` answers
(env + agents; the judge is off: a constant `FunctionJudge`). Then the same
engine calls (the same chats, `n` and seeds, in the same order) are replayed
straight on the engine. Both produce the same tokens, so the ratio of
tokens/s measures what the framework adds around generation (1.0: nothing;
target at least 0.9). Prints a Markdown table with the median over `repeats`.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from functools import partial

import torch
from jsonargparse import auto_cli

import lsp_env
from agents import FunctionJudge, LLMAgent, SamplingParams
from agents.engines import make_policy
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from algorithms.collector import Collector, Rollout


@dataclass
class Settings:
    engine: str = "vllm"
    model: str = DEFAULT_MODEL
    dtype: str = "float32"
    game: str = "LanguageSelfPlay-v0"
    groups: int = 16
    """N: challenger queries per collection."""
    group_size: int = 4
    """G: solver answers per query."""
    max_new_tokens: int = 64
    temperature: float = 1.0
    repeats: int = 3


def turns_by_role(rollout: Rollout) -> dict[str, list]:
    """Each sampled turn once (a group's forks share the turns before the branch point)."""
    seen, turns = set(), {}
    for episode in rollout.episodes:
        for turn in episode.turns:
            if turn.completion is not None and id(turn) not in seen:
                seen.add(id(turn))
                turns.setdefault(turn.role, []).append(turn)
    return turns


def replay(policy, agent: LLMAgent, rollout: Rollout, group_size: int) -> tuple[int, float]:
    """The collector's engine calls again, straight on the engine: (tokens, seconds)."""
    calls = []
    for role, turns in turns_by_role(rollout).items():
        branched = all(turn.branch for turn in turns)
        observations = [t.observation for t in turns[::group_size]] if branched else [t.observation for t in turns]
        calls.append(([agent.chat(o) for o in observations], group_size if branched else 1))
    start = time.perf_counter()
    outputs = [policy.generate_batch(chats, n, agent.params) for chats, n in calls]
    seconds = time.perf_counter() - start
    return sum(len(c.token_ids) for groups in outputs for group in groups for c in group), seconds


def run(settings: Settings) -> str:
    path = resolve_model(settings.model)
    model, tokenizer = load_model(path, dtype=getattr(torch, settings.dtype))
    policy = make_policy(settings.engine, model, tokenizer, model_path=path, dtype=settings.dtype)
    judge = FunctionJudge(lambda query, answer: 0.0, name="constant")
    agent = LLMAgent(policy, params=SamplingParams(settings.max_new_tokens, settings.temperature))
    make_env = partial(lsp_env.make, settings.game, judge=judge)
    collector = Collector(make_env, {role: agent for role in make_env().possible_agents}, settings.group_size)
    rows = []
    try:
        collector.collect(2)  # warm-up
        for repeat in range(settings.repeats):
            torch.manual_seed(repeat)
            start = time.perf_counter()
            rollout = collector.collect(settings.groups, seed=repeat)
            collect_s = time.perf_counter() - start
            collected = sum(len(t.completion.token_ids) for turns in turns_by_role(rollout).values() for t in turns)
            torch.manual_seed(repeat)  # the same request seeds again
            raw_tokens, raw_s = replay(policy, agent, rollout, settings.group_size)
            rows.append((collected, collect_s, raw_tokens, raw_s))
    finally:
        policy.close()
    collected, collect_s, raw_tokens, raw_s = (statistics.median(column) for column in zip(*rows))
    ratio = statistics.median((c / cs) / (r / rs) for c, cs, r, rs in rows)
    return "\n".join([
        f"{settings.engine} engine, {settings.model}, {settings.dtype}, {settings.game}, N={settings.groups}, "
        f"G={settings.group_size}, {settings.max_new_tokens} new tokens, temperature {settings.temperature}, "
        f"judge off, "
        f"median of {settings.repeats}, {platform.machine()} with {len(os.sched_getaffinity(0))} cores", "",
        "| | tokens | seconds | tokens/s |", "|---|---|---|---|",
        f"| collector (env + agents) | {collected:.0f} | {collect_s:.2f} | {collected / collect_s:.0f} |",
        f"| raw engine, same calls | {raw_tokens:.0f} | {raw_s:.2f} | {raw_tokens / raw_s:.0f} |",
        "", f"framework overhead ratio (collector / raw tokens/s): **{ratio:.3f}**"])


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
