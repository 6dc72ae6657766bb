"""Engines and precisions for each job of an iteration: sampling, self-judges and reference log-probs, on
transformers or vLLM, in float32 or bfloat16, timed and compared with float32.

    python -m benchmarks.engine_precision --pairs 32     # = lsp bench engine-precision

The base model answers prompts of the held-out suite greedily (vLLM, float32), `pairs` per batch. Then:
- **Self-judge**: the `rubric` judge in "expected" mode scores batches of pairs on each engine: transformers in
  float32 and under bfloat16 autocast (the trainer's reference), and vLLM in float32 and in bfloat16 (a frozen
  engine beside the policy's). Each batch holds new pairs, as each iteration does (vLLM's prefix cache then
  only reuses the rubric's shared opening). Each line gives the seconds per batch (median of `repeats`, after
  a warm-up batch) and the largest score difference from transformers float32 on the same pairs.
- **Reference log-probs**: the log-prob of every answer token on each engine, and the k3 KL per token that
  the difference from the trainer's own numbers (transformers under bfloat16 autocast) would add to every
  KL the trainer logs. Training KLs are 1e-3 to 1e-2 per token, so a reference must stay well below 1e-4.
- **Sampling**: one iteration's generation as the recipe samples it (8 challenger prompts, then 4 answers to
  each of 8 tasks, temperature 1 with min_p 0.1, 80 new tokens) on vLLM in float32 and in bfloat16, `repeats`
  times after a warm-up; tokens/s of all the timed rounds.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch
from jsonargparse import auto_cli

from agents.hf import HFPolicy
from agents.judges import build_judge
from agents.logprobs import pad_rows, token_log_probs
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from agents.policy import SamplingParams
from agents.vllm_engine import VLLMPolicy
from evaluation.suite import load_suite


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    pairs: int = 32
    """(prompt, answer) pairs judged and scored: one iteration's answers in the recipe (N=8 x G=4)."""
    max_new_tokens: int = 80
    repeats: int = 2
    """Timed judge batches per engine, after a warm-up batch (the median is reported)."""
    suite: str = "if-heldout"


def run(settings: Settings) -> str:
    path = resolve_model(settings.model)
    model, tokenizer = load_model(path, dtype=torch.float32)
    model.requires_grad_(False)
    engines = {"hf float32": HFPolicy(model, tokenizer), "hf bf16 autocast": HFPolicy(model, tokenizer,
                                                                                      autocast=torch.bfloat16)}
    engines |= {f"vllm {dtype}": VLLMPolicy(path, tokenizer, dtype=dtype) for dtype in ("float32", "bfloat16")}
    try:
        items = load_suite(settings.suite).items
        if len(items) < settings.pairs * (settings.repeats + 1):
            raise ValueError(f"{settings.suite} has {len(items)} prompts; pairs x (repeats + 1) must not exceed it")
        prompts = [item.prompt for item in items[:settings.pairs * (settings.repeats + 1)]]
        chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
        answers = engines["vllm float32"].generate_batch(chats, 1, SamplingParams(settings.max_new_tokens, 0.0))
        pairs = [(prompt, completion.text) for prompt, (completion,) in zip(prompts, answers)]
        batches = [pairs[i:i + settings.pairs] for i in range(0, len(pairs), settings.pairs)]
        judged = {name: judge_timed(policy, batches) for name, policy in engines.items()}
        rows = ([engines["hf float32"].chat_prompt_ids(chat) for chat in chats], [c.token_ids for (c,) in answers])
        logprobs = {name: reference_log_probs(name, policy, model, rows) for name, policy in engines.items()}
        sampling = {name: sample_timed(policy, prompts, settings) for name, policy in engines.items()
                    if name.startswith("vllm")}
    finally:
        for policy in engines.values():
            policy.close()
    base_scores, trainer = judged["hf float32"][1], logprobs["hf bf16 autocast"]
    lines = [f"{settings.model}, judge batches of {settings.pairs} new pairs, log-probs of {len(pairs)} answers, "
             f"{platform.machine()} with {len(os.sched_getaffinity(0))} cores",
             "", "| engine | judge batch (s) | judge vs hf float32 (max abs) | log-prob vs hf float32 (max / mean "
             "abs) | k3 KL per token against the trainer's numbers |", "|---|---|---|---|---|"]
    for name in engines:
        seconds, scores = judged[name]
        gap = (logprobs[name] - logprobs["hf float32"]).abs()
        lines.append(f"| {name} | {seconds:.1f} | {max(abs(a - b) for a, b in zip(scores, base_scores)):.1e} | "
                     f"{gap.max():.1e} / {gap.mean():.1e} | {k3(trainer, logprobs[name]):.1e} |")
    hf_time = judged["hf bf16 autocast"][0]
    lines += ["", "judge speed-up against the trainer's reference (hf bf16 autocast): " + ", ".join(
        f"{name} {hf_time / judged[name][0]:.1f}x" for name in engines if name.startswith("vllm")), "",
        "| sampling engine | tokens | seconds | tok/s |", "|---|---|---|---|"]
    lines += [f"| {name} | {tokens} | {seconds:.1f} | {tokens / seconds:.0f} |"
              for name, (tokens, seconds) in sampling.items()]
    (fp32_tokens, fp32_s), (bf16_tokens, bf16_s) = sampling["vllm float32"], sampling["vllm bfloat16"]
    lines += ["", f"sampling, vllm bfloat16 / float32: {(bf16_tokens / bf16_s) / (fp32_tokens / fp32_s):.2f}x "
              "tokens/s"]
    return "\n".join(lines)


def sample_timed(policy, prompts: list[str], settings: Settings) -> tuple[int, float]:
    """(tokens, seconds) over `repeats` recipe-like generation rounds after a warm-up round."""
    tokens, seconds = 0, 0.0
    for round_ in range(settings.repeats + 1):
        start = time.perf_counter()
        generated = sample_round(policy, prompts[8 * round_:8 * round_ + 8], settings.max_new_tokens, seed=round_)
        if round_:
            seconds += time.perf_counter() - start
            tokens += generated
    return tokens, seconds


def sample_round(policy, tasks: list[str], max_new_tokens: int, seed: int) -> int:
    """One iteration's generation as the recipe samples it: a question about each task, then 4 answers to each
    task (temperature 1, min_p 0.1); returns the tokens generated."""
    params = SamplingParams(max_new_tokens, temperature=1.0, min_p=0.1)
    torch.manual_seed(seed)
    queries = policy.generate_batch([[{"role": "user", "content": f"Ask me one question about {task[:60]}. "
                                       "Write only the question."}] for task in tasks], 1, params)
    answers = policy.generate_batch([[{"role": "user", "content": task}] for task in tasks], 4, params)
    return sum(len(c.token_ids) for group in queries + answers for c in group)


def judge_timed(policy, batches) -> tuple[float, list[float]]:
    """Median seconds per batch after the first (the warm-up), and every score."""
    judge = build_judge("rubric", policy, mode="expected")
    times, scores = [], []
    for batch in batches:
        start = time.perf_counter()
        scores += [judgement.score for judgement in judge.judge_batch(batch)]
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), scores


def reference_log_probs(name: str, policy, model, rows) -> torch.Tensor:
    """Every answer token's raw log-prob, concatenated."""
    prompts, completions = rows
    if name.startswith("vllm"):
        return torch.tensor([value for row in policy.score(prompts, completions) for value in row])
    tokens, attention, response = pad_rows(prompts, completions)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled="bf16" in name):
        out = token_log_probs(model, tokens, attention, response)
    return torch.cat([out[i, len(p):len(p) + len(c)] for i, (p, c) in enumerate(zip(prompts, completions))])


def k3(policy: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean k3 estimate of KL(policy || reference) per token from the two log-probs of the same tokens."""
    log_ratio = policy - reference
    return float(((-log_ratio).expm1() + log_ratio).mean())


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
