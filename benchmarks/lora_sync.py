"""Weight sync of a LoRA policy into vLLM: merged weights reloaded in place, against vLLM's own LoRA support.

    python -m benchmarks.lora_sync --rank 16 --batch 32 --new_tokens 64

- merged: `agents.lora.merged_state_dict` then `VLLMPolicy.load_state_dict`
  (what `lsp train --lora_rank R --engine vllm` does after each step); the
  engine then generates with plain weights.
- vLLM LoRA: the adapter saved to a folder and served by an engine started
  with `enable_lora=True` under a new `LoRARequest` (the first request with a
  new adapter loads it); every generated token then also runs the adapter.

Prints the sync time of each (median over `repeats`) and the greedy
generation throughput each engine then reaches, with the ratios.
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
from jsonargparse import auto_cli

from agents.lora import ALL_LINEAR, add_lora, merged_state_dict
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from agents.policy import SamplingParams
from benchmarks.engine_throughput import chats


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    rank: int = 16
    batch: int = 32
    new_tokens: int = 64
    repeats: int = 3


def _adapted_model(settings: Settings):
    model, tokenizer = load_model(resolve_model(settings.model))
    model = add_lora(model, settings.rank, 2 * settings.rank, ALL_LINEAR, settings.model)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.01)  # an adapter that changes the outputs
    return model, tokenizer


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _throughput(generate) -> float:
    start = time.perf_counter()
    outputs = generate()
    return sum(len(sample.token_ids) for output in outputs for sample in output.outputs) / (time.perf_counter() - start)


def run(settings: Settings) -> str:
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from agents.vllm_engine import VLLMPolicy

    path = resolve_model(settings.model)
    model, tokenizer = _adapted_model(settings)
    greedy = VLLMSamplingParams(max_tokens=settings.new_tokens, temperature=0.0, ignore_eos=True)
    params = SamplingParams(settings.new_tokens, temperature=0.0)

    merged_engine = VLLMPolicy(path, tokenizer)
    prompts = [TokensPrompt(prompt_token_ids=merged_engine.chat_prompt_ids(chat)) for chat in chats(settings.batch)]
    merged_engine.generate_batch(chats(2), 1, params)  # warm-up
    merged_s = statistics.median(_timed(lambda: merged_engine.load_state_dict(merged_state_dict(model)))
                                 for _ in range(settings.repeats))
    merged_rate = _throughput(lambda: merged_engine.llm.generate(prompts, greedy, use_tqdm=False))
    merged_engine.close()

    lora_engine = VLLMPolicy(path, tokenizer, enable_lora=True, max_lora_rank=settings.rank, max_loras=1)
    folder = tempfile.mkdtemp(prefix="lsp-lora-bench-")
    requests = []

    def push() -> None:
        model.save_pretrained(folder, save_embedding_layers=False)
        requests.append(LoRARequest(f"policy-{len(requests)}", len(requests) + 1, folder))
        lora_engine.llm.generate(prompts[:1], VLLMSamplingParams(max_tokens=1), lora_request=requests[-1],
                                 use_tqdm=False)

    push()  # warm-up
    lora_s = statistics.median(_timed(push) for _ in range(settings.repeats))
    lora_rate = _throughput(lambda: lora_engine.llm.generate(prompts, greedy, lora_request=requests[-1],
                                                             use_tqdm=False))
    lora_engine.close()
    cores = len(os.sched_getaffinity(0))
    return "\n".join([
        f"{settings.model}, LoRA rank {settings.rank} on every linear layer, float32, {platform.machine()} with "
        f"{cores} cores; throughput: greedy, batch {settings.batch}, {settings.new_tokens} new tokens", "",
        "| sync route | sync (s, median) | generation after sync (tok/s) |", "|---|---|---|",
        f"| merged weights, reload in place | {merged_s:.2f} | {merged_rate:.0f} |",
        f"| vLLM LoRA (save adapter, new LoRARequest) | {lora_s:.2f} | {lora_rate:.0f} |", "",
        f"merged / vLLM LoRA: sync time {merged_s / lora_s:.2f}x, generation throughput {merged_rate / lora_rate:.2f}x"])


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
