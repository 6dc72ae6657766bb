"""The `Policy` interface shared by every engine (hf, vllm, openai).

A policy is one set of language-model weights behind an engine. Agents and
judges only talk to this interface, so engines can be swapped freely.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    import torch

Message = Mapping[str, str]  # {"role": "user", "content": "..."}
Chat = Sequence[Message]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `temperature=0` means greedy decoding.

    The logits are divided by `temperature`; then tokens below `min_p` times
    the most likely token's probability are dropped; then only the smallest set
    of most likely tokens whose probability reaches `top_p` is kept (vLLM's
    order). `agents.logprobs.processed_log_probs` computes the same
    distribution for training.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0


@dataclass
class Completion:
    """One sampled completion of a chat prompt.

    `logprobs[i]` is the log-probability of `token_ids[i]` under the
    distribution it was sampled from: temperature, min-p and top-p applied and
    renormalised (the raw model distribution for greedy decoding).
    """

    text: str
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str = "stop"  # "stop" (end of sequence) or "length"
    meta: dict = field(default_factory=dict)


class Policy(ABC):
    """A language model that can generate, score and take new weights.

    Implementations must be safe to call from many threads at once; engines
    batch concurrent requests together (that is where throughput comes from).
    """

    name: str = "policy"

    @property
    @abstractmethod
    def tokenizer(self):
        """The Hugging Face tokenizer that matches the model."""

    @abstractmethod
    def generate(self, chat: Chat, n: int = 1, params: SamplingParams = SamplingParams()) -> list[Completion]:
        """Sample `n` completions of one chat prompt."""

    def generate_batch(
        self, chats: Sequence[Chat], n: int = 1, params: SamplingParams = SamplingParams()
    ) -> list[list[Completion]]:
        """Sample `n` completions for each chat; by default one thread per chat."""
        from concurrent.futures import ThreadPoolExecutor

        if not chats:
            return []
        with ThreadPoolExecutor(max_workers=len(chats)) as pool:
            return list(pool.map(lambda chat: self.generate(chat, n, params), chats))

    @abstractmethod
    def score(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Per-token log-probabilities of each completion given its prompt."""

    def next_token_logprobs(self, prompt_ids: Sequence[int], candidates: Sequence[int]) -> list[float]:
        """log p(token | prompt) for each candidate token (a judge reading a score).

        The default scores each candidate as a one-token completion; engines
        override it with one forward pass.
        """
        scores = self.score([prompt_ids] * len(candidates), [[token] for token in candidates])
        return [values[0] for values in scores]

    @abstractmethod
    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Replace the weights (Hugging Face parameter names)."""

    def chat_prompt_ids(self, chat: Chat) -> list[int]:
        """Token ids of a chat prompt, with the generation prompt appended."""
        ids = self.tokenizer.apply_chat_template(list(chat), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, Mapping) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def sleep(self) -> None:
        """Free the device memory the engine holds while the trainer steps (vLLM on a GPU); a no-op elsewhere."""

    def wake_up(self) -> None:
        """Take back what `sleep` freed, before the next call."""

    def close(self) -> None:
        """Release engine resources (threads, processes)."""
