"""Agents: roles over one shared policy, and prompt files."""
import json

import pytest

from agents import LLMAgent, SamplingParams
from agents.agent import PromptAgent
from agents.hf import HFPolicy
from agents.models import tiny_model


def test_challenger_and_solver_share_one_policy():
    model, tokenizer = tiny_model()
    policy = HFPolicy(model, tokenizer)
    challenger = LLMAgent(policy, role_prompt="You write hard questions.", params=SamplingParams(4))
    solver = LLMAgent(policy, params=SamplingParams(4))
    assert challenger.policy is solver.policy
    assert challenger.chat("go")[0] == {"role": "system", "content": "You write hard questions."}
    assert solver.chat("What is 2+2?") == [{"role": "user", "content": "What is 2+2?"}]
    batches = policy.stats["generate_batches"]
    query = challenger.act("go")
    (answers,) = solver.sample_batch([query or "x"], n=3)
    assert len(answers) == 3 and all(len(a.token_ids) <= 4 for a in answers)
    assert policy.stats["generate_batches"] == batches + 2  # both roles went through the same engine
    policy.close()


def test_prompt_agent_serves_shuffled_prompts_in_a_cycle(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"p{i}"}) for i in range(3)) + "\n")
    agent = PromptAgent(str(path), seed=1)
    served = [agent.act("") for _ in range(6)]
    assert sorted(served[:3]) == ["p0", "p1", "p2"] and served[3:] == served[:3]


def test_prompt_agent_rejects_bad_files(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"text": "no prompt field"}) + "\n")
    with pytest.raises(ValueError, match="'prompt' or 'instruction'"):
        PromptAgent(str(path))
