"""The "openai" engine: a client `Policy` for an OpenAI-compatible server.

`vllm serve` (or `lsp serve`, which starts one) is the reference server. The
client tokenizes locally and sends token ids to `/v1/completions`, using
vLLM's extensions of the API: `return_token_ids`, `prompt_logprobs`,
`logprob_token_ids`, per-request `seed`, `top_k` and `stop_token_ids`.

- Batching is the server's: every call is its own HTTP request (up to
  `max_concurrency` in flight), and vLLM's continuous batching joins them.
- Requests have a timeout and at most `max_retries` retries (the `openai`
  client's backoff); a dead or hung server raises `ServerError`.
- New weights (`load_state_dict`): the client writes them as safetensors to
  `weights_dir`, then asks the server to reload them in place
  (`POST /collective_rpc` with `reload_weights(weights_path=...)`, then
  `POST /reset_prefix_cache`). These are vLLM's development endpoints: the
  server needs `VLLM_SERVER_DEV_MODE=1` (`lsp serve` opens these two, behind
  its key) and must see `weights_dir` on its own file system (the same
  machine, or a shared mount).
- The API key (`api_key`, else `$LSP_API_KEY`, else `$OPENAI_API_KEY`) goes
  with every request, the weight sync's included.
  Other servers can only serve fixed weights: restart them from a checkpoint.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

import httpx
import openai
import torch

from agents.policy import Chat, Completion, Policy, SamplingParams


class ServerError(RuntimeError):
    """The server is unreachable, hung, or refused a request."""


class OpenAIPolicy(Policy):
    """A model served over HTTP by an OpenAI-compatible server (vLLM's extensions required)."""

    name = "openai"

    def __init__(self, base_url: str, tokenizer, model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 120.0, max_retries: int = 2, max_concurrency: int = 64,
                 weights_dir: str | None = None):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._tokenizer = tokenizer
        api_key = api_key or os.environ.get("LSP_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
        self._client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, timeout=timeout_s,
                                     max_retries=max_retries)
        self._admin = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                   headers={"Authorization": f"Bearer {api_key}"},
                                   transport=httpx.HTTPTransport(retries=max_retries))
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai-engine")
        self._weights_dir = Path(weights_dir) if weights_dir else None
        self._own_weights_dir = weights_dir is None
        self._lock = threading.Lock()
        eos = tokenizer.eos_token_id
        self._eos_ids = [eos] if eos is not None else []
        self.model = model or self._served_model()

    @property
    def tokenizer(self):
        return self._tokenizer

    # --- Policy -----------------------------------------------------------------
    def generate(self, chat: Chat, n: int = 1, params: SamplingParams = SamplingParams()) -> list[Completion]:
        return self._generate(chat, n, params, _new_seed())

    def generate_batch(
        self, chats: Sequence[Chat], n: int = 1, params: SamplingParams = SamplingParams()
    ) -> list[list[Completion]]:
        """One request per chat, all in flight together; seeds are drawn in chat order."""
        seeds = [_new_seed() for _ in chats]
        return list(self._pool.map(lambda chat, seed: self._generate(chat, n, params, seed), chats, seeds))

    def score(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Prompt log-probs of prompt + completion, one request per row."""
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")

        def one(row):
            prompt, completion = row
            if not completion:
                return []
            response = self._complete([*prompt, *completion], max_tokens=1, temperature=0.0, prompt_logprobs=0)
            positions = response.choices[0].model_extra["prompt_logprobs"][len(prompt):]
            return [position[str(token)]["logprob"] for position, token in zip(positions, completion)]

        return list(self._pool.map(one, zip(prompt_ids, completion_ids)))

    def next_token_logprobs(self, prompt_ids: Sequence[int], candidates: Sequence[int]) -> list[float]:
        """One decoding step returning the raw log-probs of exactly the candidate ids."""
        response = self._complete(list(prompt_ids), max_tokens=1, temperature=0.0, logprobs=0,
                                  logprob_token_ids=list(candidates), return_tokens_as_token_ids=True)
        top = response.choices[0].logprobs.top_logprobs[0]
        return [top[f"token_id:{token}"] for token in candidates]

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Write the weights to `weights_dir` and have the server reload them in place."""
        from safetensors.torch import save_file

        with self._lock:
            if self._weights_dir is None:
                self._weights_dir = Path(tempfile.mkdtemp(prefix="lsp-served-weights-"))
            tensors, seen = {}, set()
            for key, tensor in state_dict.items():
                tensor = tensor.detach().to("cpu").contiguous()
                # Tied weights share storage, which safetensors refuses; vLLM needs every name, so copy them.
                tensors[key] = tensor.clone() if tensor.data_ptr() in seen else tensor
                seen.add(tensor.data_ptr())
            save_file(tensors, self._weights_dir / "model.safetensors.tmp")
            os.replace(self._weights_dir / "model.safetensors.tmp", self._weights_dir / "model.safetensors")
            self._post("/collective_rpc", {"method": "reload_weights",
                                           "kwargs": {"weights_path": str(self._weights_dir.resolve())}})
            self._post("/reset_prefix_cache", None)

    def check_weight_updates(self) -> None:
        """Raise `ServerError` now, before a run trains, if the server cannot take new weights."""
        self._post("/reset_prefix_cache", None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self._admin.close()
        if self._own_weights_dir and self._weights_dir is not None:
            shutil.rmtree(self._weights_dir, ignore_errors=True)

    # --- HTTP -------------------------------------------------------------------
    def _complete(self, prompt: list[int], **settings):
        """POST /v1/completions with vLLM's extra fields; errors become `ServerError`."""
        standard = {k: settings.pop(k) for k in ("max_tokens", "n", "temperature", "top_p", "seed", "logprobs")
                    if k in settings}
        extra = {"return_token_ids": True, "top_k": 0, "repetition_penalty": 1.0, "skip_special_tokens": True,
                 "stop_token_ids": self._eos_ids, **settings}
        try:
            return self._client.completions.create(model=self.model, prompt=prompt, extra_body=extra, **standard)
        except openai.APITimeoutError as error:
            raise ServerError(f"the server at {self.base_url} did not answer within {self.timeout_s:g} s "
                              f"({self.max_retries + 1} tries); is it hung?") from error
        except openai.APIConnectionError as error:
            raise ServerError(f"cannot reach the server at {self.base_url}: {error}; is it running?") from error
        except openai.APIStatusError as error:
            raise ServerError(f"the server at {self.base_url} refused a completion request "
                              f"(HTTP {error.status_code}): {error.message}") from error

    def _post(self, path: str, body: dict | None) -> httpx.Response:
        try:
            response = self._admin.post(path, json=body)
        except httpx.TimeoutException as error:
            raise ServerError(f"the server at {self.base_url} did not answer {path} within {self.timeout_s:g} s") \
                from error
        except httpx.HTTPError as error:
            raise ServerError(f"cannot reach the server at {self.base_url}{path}: {error}") from error
        if response.status_code == 404:
            raise ServerError(f"the server at {self.base_url} has no {path} endpoint, so it cannot take new weights: "
                              f"start it with `lsp serve --weight_updates true` or `VLLM_SERVER_DEV_MODE=1 vllm "
                              f"serve ...`")
        if response.status_code >= 400:
            raise ServerError(f"{path} failed on {self.base_url} (HTTP {response.status_code}): {response.text[:500]}")
        return response

    def _served_model(self) -> str:
        """The id of the (first) model the server serves."""
        try:
            models = self._client.models.list().data
        except openai.OpenAIError as error:
            raise ServerError(f"no OpenAI-compatible server answers at {self.base_url}: {error}") from error
        if not models:
            raise ServerError(f"the server at {self.base_url} serves no model")
        return models[0].id

    def _generate(self, chat: Chat, n: int, params: SamplingParams, seed: int) -> list[Completion]:
        if n < 1:
            return []
        prompt = self.chat_prompt_ids(chat)
        sampled = params.temperature > 0
        response = self._complete(prompt, max_tokens=params.max_new_tokens, n=n, temperature=params.temperature,
                                  top_p=params.top_p if sampled else 1.0, min_p=params.min_p if sampled else 0.0,
                                  seed=seed, logprobs=0)
        return [self._completion(prompt, choice) for choice in sorted(response.choices, key=lambda c: c.index)]

    def _completion(self, prompt: list[int], choice) -> Completion:
        tokens = list(choice.model_extra["token_ids"])
        return Completion(
            text=self._tokenizer.decode(tokens, skip_special_tokens=True),
            prompt_ids=list(prompt),
            token_ids=tokens,
            logprobs=list(choice.logprobs.token_logprobs),
            finish_reason="length" if choice.finish_reason == "length" else "stop",
        )


def _new_seed() -> int:
    """A request seed from torch's global generator, so seeded runs repeat."""
    return int(torch.randint(0, 2**31 - 1, ()))
