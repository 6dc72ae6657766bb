"""Sampling settings on the embedded model: how much of each role's text is language, and how much reward spread
the solver's groups have.

    python -m benchmarks.sampling_sweep --samples 64 --groups 8 --group_size 8

For each setting (temperature / top_p / min_p) the challenger writes `samples`
ConstrainedInstructions-v0 tasks, and the solver answers `groups` of them
`group_size` times. A text counts as language when its mean per-token
negative log-likelihood under the raw base model is at most
`language_nll` nats (`Policy.score`, temperature 1). For the solver the
table also gives the verified reward (fraction of constraints met), its
standard deviation within a group (averaged), and the share of groups whose
rewards differ at all: a group with no spread gives no gradient.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass, field

import torch
from jsonargparse import auto_cli

import lsp_env
from agents.agent import LLMAgent
from agents.engines import make_policy
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from agents.policy import SamplingParams
from algorithms.collector import Collector

GAME = "ConstrainedInstructions-v0"


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    engine: str = "vllm"
    """vllm or hf."""
    settings: list[list[float]] = field(default_factory=lambda: [
        [1.0, 1.0, 0.0], [0.8, 0.95, 0.0], [0.7, 0.9, 0.0], [1.0, 1.0, 0.1], [0.7, 1.0, 0.05]])
    """[temperature, top_p, min_p] triples."""
    samples: int = 64
    """Challenger tasks per setting."""
    groups: int = 8
    group_size: int = 8
    max_new_tokens: int = 96
    language_nll: float = 2.0
    seed: int = 0


def mean_nll(policy, completions) -> list[float]:
    """Mean per-token negative log-likelihood of each completion under the raw model."""
    scores = policy.score([c.prompt_ids for c in completions], [c.token_ids for c in completions])
    return [-sum(s) / max(len(s), 1) for s in scores]


def measure(policy, params: SamplingParams, settings: Settings) -> dict:
    env = lsp_env.make(GAME)
    env.reset(seed=settings.seed)
    challenger = LLMAgent(policy, params=params)
    torch.manual_seed(settings.seed)
    tasks = challenger.sample_batch([str(env.observe("challenger"))], n=settings.samples)[0]
    players = {"challenger": challenger, "solver": LLMAgent(policy, params=params)}
    rollout = Collector(lambda: lsp_env.make(GAME), players, settings.group_size).collect(settings.groups, settings.seed)
    answers = [t.completion for e in rollout.episodes for t in e.turns if t.role == "solver"]
    spreads, rewards = [], []
    for episodes in rollout.groups().values():
        values = [e.infos["solver"].get("reward") or 0.0 for e in episodes]
        rewards += values
        spreads.append(statistics.pstdev(values))
    result = {}
    for role, completions in (("challenger", tasks), ("solver", answers)):
        nll = mean_nll(policy, completions)
        result[role] = {"nll": statistics.mean(nll),
                        "language": sum(v <= settings.language_nll for v in nll) / len(nll),
                        "example": completions[0].text.replace("\n", " ")[:100]}
    result["reward"] = statistics.mean(rewards)
    result["spread"] = statistics.mean(spreads)
    result["groups_with_spread"] = sum(s > 0 for s in spreads) / len(spreads)
    return result


def run(settings: Settings) -> str:
    path = resolve_model(settings.model)
    policy = make_policy(settings.engine, *load_model(path), model_path=path, seed=settings.seed)
    results = {}
    try:
        for temperature, top_p, min_p in settings.settings:
            params = SamplingParams(settings.max_new_tokens, temperature, top_p, min_p)
            results[temperature, top_p, min_p] = measure(policy, params, settings)
            print(f"T={temperature} top_p={top_p} min_p={min_p}: {results[temperature, top_p, min_p]}",
                  file=sys.stderr, flush=True)
    finally:
        policy.close()
    cores = len(os.sched_getaffinity(0))
    lines = [f"{settings.model} on {settings.engine}, {GAME}, {settings.samples} challenger tasks and "
             f"{settings.groups}x{settings.group_size} solver answers per setting, {settings.max_new_tokens} new "
             f"tokens; language = mean NLL <= {settings.language_nll} nats/token under the base model; "
             f"{platform.machine()} with {cores} cores", "",
             "| temperature | top_p | min_p | challenger NLL | challenger language | solver NLL | solver language "
             "| solver reward | within-group std | groups with spread |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (temperature, top_p, min_p), r in results.items():
        lines.append(f"| {temperature} | {top_p} | {min_p} | {r['challenger']['nll']:.2f} | "
                     f"{r['challenger']['language']:.0%} | {r['solver']['nll']:.2f} | {r['solver']['language']:.0%} "
                     f"| {r['reward']:.3f} | {r['spread']:.3f} | {r['groups_with_spread']:.0%} |")
    lines += ["", "Examples (first challenger task of each setting):", ""]
    lines += [f"- T={t} top_p={p} min_p={m}: {r['challenger']['example']}" for (t, p, m), r in results.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
