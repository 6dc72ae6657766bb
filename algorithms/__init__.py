"""RL algorithms for self-play, as TorchRL loss modules, and their registry.

    import algorithms
    loss = algorithms.make("lsp", actor_network=model, beta=0.05)
    algorithms.register("my-algo", MyLoss)   # or the "lsp.algorithms" entry-point group
"""
import os

# vLLM (also imported by TorchRL) logs to stdout by default; keep stdout for results.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

from algorithms.base import AlgorithmConfig, SelfPlayLoss
from algorithms.registration import available, make, register, registry, resolve

register("lsp-zero", "algorithms.lsp_zero:LSPZero")
register("lsp", "algorithms.lsp:LSP")
register("grpo", "algorithms.grpo:GRPO")
register("rae", "algorithms.rae:RAE")

__all__ = ["AlgorithmConfig", "SelfPlayLoss", "available", "make", "register", "registry", "resolve"]
