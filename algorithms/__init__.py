"""RL algorithms for self-play, as TorchRL loss modules, and their registry.

    import algorithms
    loss = algorithms.make("lsp", actor_network=model, beta=0.05)
    algorithms.register("my-algo", MyLoss)   # or the "lsp.algorithms" entry-point group
"""
from algorithms.base import AlgorithmConfig, SelfPlayLoss
from algorithms.registration import available, make, register, registry, resolve

register("lsp-zero", "algorithms.lsp_zero:LSPZero")
register("lsp", "algorithms.lsp:LSP")
register("grpo", "algorithms.grpo:GRPO")

__all__ = ["AlgorithmConfig", "SelfPlayLoss", "available", "make", "register", "registry", "resolve"]
