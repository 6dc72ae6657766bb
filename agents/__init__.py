"""Policies (language-model engines), agents that play roles, and judges.

Importing the package is cheap; each name loads its module (and torch) on first use."""
import importlib
import os

# vLLM (also imported by TorchRL) logs to stdout by default; keep stdout for results.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

_HOMES = {
    "LLMAgent": "agents.agent",
    "FunctionJudge": "agents.judges", "Judge": "agents.judges", "Judgement": "agents.judges",
    "RewardModelJudge": "agents.judges", "SelfJudge": "agents.judges", "parse_rubric_score": "agents.judges",
    "Completion": "agents.policy", "Policy": "agents.policy", "SamplingParams": "agents.policy",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


__all__ = sorted(_HOMES)
