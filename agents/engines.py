"""Build the policy engine that serves the shared challenger/solver policy."""
from __future__ import annotations

ENGINES = {"hf": "Hugging Face transformers, in-process, micro-batched (shares the trainer's model)"}


def make_policy(engine: str, model, tokenizer):
    """The policy engine named `engine` over `model` (the trainer's weights)."""
    if engine == "hf":
        from agents.hf import HFPolicy

        return HFPolicy(model, tokenizer)
    raise ValueError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
