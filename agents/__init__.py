"""Policies (language-model engines), agents that play roles, and judges."""
import os

# vLLM (also imported by TorchRL) logs to stdout by default; keep stdout for results.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

from agents.agent import LLMAgent
from agents.judges import FunctionJudge, Judge, Judgement, RewardModelJudge, SelfJudge, parse_rubric_score
from agents.policy import Completion, Policy, SamplingParams

__all__ = [
    "Completion", "FunctionJudge", "Judge", "Judgement", "LLMAgent", "Policy", "RewardModelJudge",
    "SamplingParams", "SelfJudge", "parse_rubric_score",
]
