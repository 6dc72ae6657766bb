"""What the embedded model gives ConstrainedInstructions-v0 to learn from: whether the challenger writes tasks,
and how many solver groups have reward spread, strict and with partial credit.

    python -m benchmarks.game_signal --tasks 48 --groups 16 --group_size 4

For each challenger prompt (the general `CHALLENGER_PROMPT`, and `topics`: one question about a drawn topic)
the challenger writes `tasks` moves, one per seed, at the recipe's sampling settings. A move counts as a task
when it does not open as an assistant's reply ("I'm ready to help", "Sure", "Hello", ...) and either asks
something (it has a "?") or opens with an imperative (Write, Explain, Describe, ...): the criterion in
`is_task`. The solver then answers `groups` tasks `group_size` times each, and every group is scored both
ways on the same answers: strict (the fraction of rules met) and with partial credit. A group whose answers
all score the same has no spread, so it gives no gradient.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
from dataclasses import dataclass

import torch
from jsonargparse import auto_cli

import lsp_env
from agents.agent import LLMAgent
from agents.engines import make_policy
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from agents.policy import SamplingParams
from algorithms.batch import make_batch, rollout_rows, share_without_spread
from algorithms.collector import Collector
from evaluation.episodes import observations

GAME = "ConstrainedInstructions-v0"
ASSISTANT_OPENINGS = re.compile(r"^\W*(i'm|i am|i can|i'll|i will|i'd|sure|certainly|of course|hello|hi|thank|"
                                r"great|you're|as an ai)\b", re.IGNORECASE)
IMPERATIVES = re.compile(r"^\W*(write|explain|describe|list|give|tell|compare|summari[sz]e|create|name|suggest|"
                         r"translate|show|help|find|make|plan|draft|compose|imagine|discuss)\b", re.IGNORECASE)


def is_task(text: str) -> bool:
    """A challenger move that is a task: not an assistant's reply, and a question or an instruction."""
    text = text.strip()
    return bool(text) and not ASSISTANT_OPENINGS.match(text) and ("?" in text or bool(IMPERATIVES.match(text)))


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    engine: str = "hf"
    """hf or vllm."""
    tasks: int = 48
    """Challenger moves per prompt."""
    groups: int = 16
    group_size: int = 4
    max_new_tokens: int = 80
    temperature: float = 1.0
    min_p: float = 0.1
    seed: int = 0


def measure(policy, settings: Settings, topics: bool) -> dict:
    params = SamplingParams(settings.max_new_tokens, settings.temperature, min_p=settings.min_p)
    make = lambda: lsp_env.make(GAME, topics=topics, partial_credit=True)  # noqa: E731
    prompts = observations(make, range(settings.seed, settings.seed + settings.tasks))
    torch.manual_seed(settings.seed)
    moves = [c[0].text for c in LLMAgent(policy, params=params).sample_batch(prompts)]
    players = {role: LLMAgent(policy, params=params) for role in ("challenger", "solver")}
    rollout = Collector(make, players, settings.group_size).collect(settings.groups, settings.seed)
    pad_id = policy.tokenizer.pad_token_id if policy.tokenizer.pad_token_id is not None else 0
    batch = make_batch(rollout_rows(rollout), ["challenger", "solver"], pad_id)
    passed = [e.infos["solver"].get("passed") or 0.0 for e in rollout.episodes]
    return {"tasks": sum(map(is_task, moves)) / len(moves), "passed": statistics.mean(passed),
            "spread_strict": 1 - share_without_spread(batch, ("breakdown", "passed")),
            "spread_partial": 1 - share_without_spread(batch, ("breakdown", "reward")),
            "examples": [m.replace("\n", " ")[:90] for m in moves[:3]]}


def run(settings: Settings) -> str:
    path = resolve_model(settings.model)
    policy = make_policy(settings.engine, *load_model(path), model_path=path, seed=settings.seed)
    try:
        results = {name: measure(policy, settings, topics) for name, topics in (("general", False), ("topics", True))}
    finally:
        policy.close()
    lines = [f"{settings.model} on {settings.engine}, {GAME}, T={settings.temperature} min_p={settings.min_p}, "
             f"{settings.max_new_tokens} new tokens; {settings.tasks} challenger moves and {settings.groups}x"
             f"{settings.group_size} solver answers per prompt; {platform.machine()} with "
             f"{len(os.sched_getaffinity(0))} cores", "",
             "| challenger prompt | moves that are tasks | strict pass | groups with spread, strict "
             "| groups with spread, partial credit |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['tasks']:.0%} | {r['passed']:.3f} | {r['spread_strict']:.0%} "
                     f"| {r['spread_partial']:.0%} |")
    general, topical = results["general"]["tasks"], results["topics"]["tasks"]
    lines += ["", f"tasks, topics vs general: {topical:.0%} vs {general:.0%}"
                  + (f" ({topical / general:.1f}x)" if general else ""), "", "First moves:"]
    lines += [f"- {name}: " + " / ".join(r["examples"]) for name, r in results.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
