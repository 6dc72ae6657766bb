"""RL algorithms for self-play, as TorchRL loss modules, and their registry.

    import algorithms
    loss = algorithms.make("lsp", actor_network=model, beta=0.05)
    algorithms.register("my-algo", MyLoss)   # or the "lsp.algorithms" entry-point group

Importing the package is cheap: the registry (an `lsp_env.Registry` of
`AlgorithmSpec`s) holds "module:Class" strings, and torch, TorchRL and the
loss classes load on first use.
"""
import os

# vLLM (also imported by TorchRL) logs to stdout by default; keep stdout for results.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

from algorithms.registration import available, config_class, make, register, registry, resolve  # noqa: E402

register("lsp-zero", "algorithms.lsp_zero:LSPZero", config="algorithms.configs:LSPZeroConfig",
         description="Language Self-Play without self-reward (LSP-Zero).")
register("lsp", "algorithms.lsp:LSP", config="algorithms.configs:AlgorithmConfig",
         description="Language Self-Play with quality self-reward.")
register("grpo", "algorithms.grpo:GRPO", config="algorithms.configs:GRPOConfig",
         description="Group Relative Policy Optimisation on prompts from a JSONL file.")
register("rae", "algorithms.rae:RAE", config="algorithms.configs:RAEConfig",
         description="Role-conditioned Advantage Estimation for two-player zero-sum games.")

_LAZY = {"AlgorithmConfig": "algorithms.configs", "SelfPlayLoss": "algorithms.base"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'algorithms' has no attribute {name!r}")


__all__ = ["AlgorithmConfig", "SelfPlayLoss", "available", "config_class", "make", "register", "registry", "resolve"]
