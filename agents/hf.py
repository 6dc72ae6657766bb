"""The "hf" engine: a Hugging Face transformers causal LM behind `Policy`.

Concurrent `generate` calls are micro-batched: requests with equal
`SamplingParams` that arrive within `max_wait_s` share one `model.generate`
call (prompts left-padded, each prompt repeated for its `n` samples).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from typing import Mapping, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from agents.batching import MicroBatcher
from agents.logprobs import output_logits, pad_rows, processed_log_probs, token_log_probs
from agents.lora import base_weights
from agents.models import DEFAULT_MODEL, load_model
from agents.policy import Chat, Completion, Policy, SamplingParams

SCORE_BATCH_ROWS = 8  # sequences per padded scoring batch
MIN_SHARED_PREFIX = 16  # tokens: a shorter common prefix of a next-token batch is not worth a separate pass


class HFPolicy(Policy):
    """A transformers model as a thread-safe, batching policy.

    One lock serialises every use of the model (generate, score, new weights).
    Sampling cannot be seeded per request, because requests share a batch;
    `seed()` seeds the global torch generator instead.
    """

    name = "hf"

    def __init__(self, model, tokenizer, max_batch_size: int = 64, max_wait_s: float = 0.01, base_only: bool = False,
                 lock: threading.Lock | None = None, autocast: torch.dtype | None = None):
        """`base_only`: compute with the base weights of a LoRA model (the adapter switched off);
        `lock`: share one lock with other policies over the same model; `autocast`: compute in this dtype
        (e.g. bfloat16) with the weights kept as they are."""
        self.model = model
        self.base_only = base_only
        self.autocast = autocast
        self._tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self._eos_ids = sorted({*eos, tokenizer.eos_token_id} - {None})
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos_ids[0]
        self.tokens_generated = 0
        self.direct_batches = 0
        self.lock = lock or threading.Lock()
        """Held for every use of the model; another `HFPolicy` over the same model takes it as `lock`."""
        self._batcher = MicroBatcher(self._generate_batch, max_batch_size, max_wait_s, name="hf-generate")
        self._next_token_batcher = MicroBatcher(self._next_token_batch, max_batch_size, max_wait_s, name="hf-next-token")

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, device: str = "cpu", **kwargs
    ) -> HFPolicy:
        """Load a model with `agents.models.load_model` and wrap it."""
        return cls(*load_model(name_or_path, dtype, device), **kwargs)

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def stats(self) -> dict:
        """Batched `model.generate` calls so far, and tokens generated."""
        batches = self._batcher.batches + self.direct_batches
        return {"generate_batches": batches, "tokens_generated": self.tokens_generated}

    def seed(self, seed: int) -> None:
        """Seed torch's global generator, between batches (not per request)."""
        with self.lock:
            torch.manual_seed(seed)

    def generate(self, chat: Chat, n: int = 1, params: SamplingParams = SamplingParams()) -> list[Completion]:
        if n < 1:
            return []
        return self._batcher.submit((self.chat_prompt_ids(chat), n), key=params)

    def generate_batch(
        self, chats: Sequence[Chat], n: int = 1, params: SamplingParams = SamplingParams()
    ) -> list[list[Completion]]:
        """All chats as direct batches, in order: the samples depend only on the RNG state, not on timing."""
        requests = [(self.chat_prompt_ids(chat), n) for chat in chats]
        results: list[list[Completion]] = []
        for start in range(0, len(requests), self.max_batch_size):
            self.direct_batches += 1
            results += self._generate_batch(params, requests[start : start + self.max_batch_size])
        return results

    def score(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        if any(len(prompt) == 0 for prompt in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        # token_log_probs scores rows of similar length together, so short rows do not pay for long ones.
        tokens, attention, response = (t.to(self.model.device)
                                       for t in pad_rows(prompt_ids, completion_ids, self._pad_id))
        with self._using_model():
            out = token_log_probs(self.model, tokens, attention, response, rows_per_chunk=SCORE_BATCH_ROWS)
        return [out[i, len(p):len(p) + len(c)].tolist() for i, (p, c) in enumerate(zip(prompt_ids, completion_ids))]

    def next_token_logprobs(self, prompt_ids: Sequence[int], candidates: Sequence[int]) -> list[float]:
        """Concurrent calls share one forward pass (micro-batched like `generate`)."""
        return self._next_token_batcher.submit(list(prompt_ids), key=tuple(candidates))

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy new weights in (strict); the model's own tensors are a no-op."""
        with self.lock:
            self.model.load_state_dict(state_dict, strict=True)

    def close(self) -> None:
        self._batcher.close()
        self._next_token_batcher.close()

    @contextmanager
    def _using_model(self):
        """Hold the lock, in eval and inference mode (and autocast), with the adapter off when `base_only`."""
        autocast = torch.autocast(self.model.device.type, self.autocast) if self.autocast else nullcontext()
        with self.lock, _eval_mode(self.model), torch.inference_mode(), autocast:
            with base_weights(self.model) if self.base_only else nullcontext():
                yield

    def _generate_batch(self, params: SamplingParams, requests: Sequence[tuple[list[int], int]]) -> list:
        prompts = [prompt for prompt, n in requests for _ in range(n)]
        input_ids, attention_mask = _left_pad(prompts, self._pad_id, device=self.model.device)
        with self._using_model(), _no_checkpoint_defaults(self.model):
            chosen = ChosenLogProbs(params)
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                      generation_config=self._generation_config(params),
                                      logits_processor=LogitsProcessorList([chosen]))
            new_tokens = out.sequences[:, input_ids.shape[1] :]
            logprobs = chosen.finish(out.sequences)
        completions = [self._completion(p, t, lp) for p, t, lp in zip(prompts, new_tokens.tolist(), logprobs.tolist())]
        self.tokens_generated += sum(len(c.token_ids) for c in completions)
        rows = iter(completions)
        return [[next(rows) for _ in range(n)] for _, n in requests]

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        if params.temperature > 0:
            sampling = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0,
                            min_p=params.min_p or None)
        else:
            sampling = dict(do_sample=False)
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self._eos_ids,
            pad_token_id=self._pad_id,
            return_dict_in_generate=True,
            **sampling,
        )

    def _completion(self, prompt: list[int], tokens: list[int], logprobs: list[float]) -> Completion:
        """Cut a generated row after its first end-of-sequence token (kept, as vLLM does)."""
        stop = next((i for i, token in enumerate(tokens) if token in self._eos_ids), None)
        end = len(tokens) if stop is None else stop + 1
        return Completion(
            text=self._tokenizer.decode(tokens[:end], skip_special_tokens=True),
            prompt_ids=list(prompt),
            token_ids=tokens[:end],
            logprobs=logprobs[:end],
            finish_reason="length" if stop is None else "stop",
        )

    def _next_token_batch(self, candidates: tuple[int, ...], prompts: Sequence[list[int]]) -> list[list[float]]:
        """log-softmax of the next-token logits after each prompt, at the candidate ids.

        The prompts' common prefix (a judge's instructions, before the exchange it grades) is computed once; its
        keys and values are reused for every row, so each row computes only its own tokens."""
        shared = shared_prefix_length(prompts)
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        device = self.model.device
        suffixes = [prompt[shared:] for prompt in prompts]
        input_ids, suffix_mask, _ = (t.to(device) for t in pad_rows(suffixes, [[]] * len(prompts), self._pad_id))
        rows = torch.arange(len(prompts), device=device)
        with self._using_model():
            decoder = self.model.get_decoder()
            if shared:
                prefix = decoder(input_ids=torch.tensor([prompts[0][:shared]], device=device), use_cache=True)
                cache = prefix.past_key_values
                cache.batch_repeat_interleave(len(prompts))
                attention_mask = torch.cat([suffix_mask.new_ones(len(prompts), shared), suffix_mask], dim=1)
                positions = shared + torch.arange(input_ids.shape[1], device=device).expand(len(prompts), -1)
                hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                                 position_ids=positions, use_cache=False).last_hidden_state
            else:
                hidden = decoder(input_ids=input_ids, attention_mask=suffix_mask).last_hidden_state
            last = hidden[rows, suffix_mask.sum(-1) - 1]
            logprobs = output_logits(self.model, last).float().log_softmax(-1)[:, list(candidates)]
        return logprobs.tolist()


class ChosenLogProbs(LogitsProcessor):
    """Records the log-prob of each sampled token under `params` as generation goes, keeping one step's logits
    (not every step's, as `output_logits=True` would: rows x steps x vocabulary floats). It sees the raw logits
    (transformers applies its temperature and min-p/top-p warpers after the processors), so the log-probs are
    `processed_log_probs`'s, the same as training computes."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.previous: torch.Tensor | None = None  # the last step's logits
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:  # input_ids now ends with the token sampled from them
            self.steps.append(processed_log_probs(self.previous, input_ids[:, -1], self.params))
        self.previous = scores.clone()
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[rows, new tokens] log-probs, given the generated sequences."""
        self.__call__(sequences, self.previous)
        return torch.stack(self.steps, dim=1)


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """The length of the prompts' common prefix, leaving every prompt at least one token of its own."""
    limit = min(len(prompt) for prompt in prompts) - 1
    length = 0
    while length < limit and all(prompt[length] == prompts[0][length] for prompt in prompts):
        length += 1
    return length


def _left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts for generation (new tokens go on the right) and their attention mask."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


@contextmanager
def _eval_mode(model):
    """Eval mode for the duration, then the model's previous training mode."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


@contextmanager
def _no_checkpoint_defaults(model):
    """Hide the checkpoint's generation defaults (top-k, repetition penalty, ...),
    so that sampling is exactly what `SamplingParams` says."""
    defaults = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = defaults
