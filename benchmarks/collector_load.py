"""Load: many concurrent episodes through the collector, iteration after iteration; memory, open files and threads
must stay flat.

    python -m benchmarks.collector_load --groups 64 --group_size 4 --iterations 20

Each iteration plays `groups` x `group_size` episodes of a game at once (256 by default) with a tiny random model
on the hf engine and a cheap judge, as a training collection does, and then drops the rollout. After every
iteration the process's resident memory (VmRSS), open file descriptors and live threads are read from the OS.
Growth past the warm-up (`warmup` iterations) would be a leak: of env copies, judge threads, engine requests or
sandbox pipes.
"""
from __future__ import annotations

import gc
import os
import platform
import threading
import time
from dataclasses import dataclass
from functools import partial

import torch
from jsonargparse import auto_cli

import lsp_env
from agents import FunctionJudge, LLMAgent, SamplingParams
from agents.hf import HFPolicy
from agents.models import tiny_model
from algorithms.collector import Collector


@dataclass
class Settings:
    game: str = "LanguageSelfPlay-v0"
    groups: int = 64
    """Queries per iteration."""
    group_size: int = 4
    """Answers per query: groups x group_size concurrent episodes."""
    iterations: int = 20
    warmup: int = 2
    """Iterations before the baseline reading (allocator pools, thread pools and caches fill up first)."""
    max_new_tokens: int = 16


def usage() -> tuple[float, int, int]:
    """(resident MiB, open file descriptors, live threads) of this process."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmRSS"].split()[0]) / 1024, len(os.listdir("/proc/self/fd")), threading.active_count()


def run(settings: Settings) -> str:
    torch.manual_seed(0)
    policy = HFPolicy(*tiny_model(seed=0))
    agent = LLMAgent(policy, params=SamplingParams(settings.max_new_tokens, temperature=1.0))
    judges = {"judge": FunctionJudge(lambda query, answer: len(answer) % 7 / 6, name="cheap"),
              "quality_judge": None}
    make_env = partial(lsp_env.make_with_judges, settings.game, judges)
    collector = Collector(make_env, {role: agent for role in make_env().possible_agents}, settings.group_size)
    rows = []
    try:
        for iteration in range(1, settings.iterations + 1):
            start = time.perf_counter()
            rollout = collector.collect(settings.groups, seed=iteration * settings.groups)
            episodes = len(rollout.episodes)
            del rollout
            gc.collect()
            rows.append((iteration, episodes, time.perf_counter() - start, *usage()))
    finally:
        policy.close()
    base = next(row for row in rows if row[0] == min(settings.warmup + 1, settings.iterations))
    last = rows[-1]
    lines = [f"{settings.game}, {settings.groups} x {settings.group_size} concurrent episodes per iteration, tiny "
             f"random model (hf engine), {settings.max_new_tokens} new tokens, {platform.machine()} with "
             f"{len(os.sched_getaffinity(0))} cores", "",
             "| iteration | episodes | seconds | resident MiB | open fds | threads |", "|---|---|---|---|---|---|"]
    lines += [f"| {i} | {n} | {s:.1f} | {rss:.0f} | {fds} | {threads} |" for i, n, s, rss, fds, threads in rows]
    lines += ["", f"from iteration {base[0]} to {last[0]}: resident memory {last[3] - base[3]:+.0f} MiB "
                  f"({last[3] / base[3]:.3f}x), open fds {last[4] - base[4]:+d}, threads {last[5] - base[5]:+d}"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
