"""`LLMAgent`: a role (challenger, solver, ...) played by a shared policy."""
from __future__ import annotations

from agents.policy import Chat, Completion, Policy, SamplingParams


class LLMAgent:
    """Plays one role of a game by prompting a `Policy`.

    The observation becomes the user message; `role_prompt`, if given, is the
    system message. Several agents may (and in self-play do) share one policy.
    """

    def __init__(self, policy: Policy, role_prompt: str | None = None, params: SamplingParams = SamplingParams()):
        self.policy = policy
        self.role_prompt = role_prompt
        self.params = params

    def chat(self, observation: str) -> Chat:
        """The chat prompt for an observation."""
        messages = [{"role": "system", "content": self.role_prompt}] if self.role_prompt else []
        return messages + [{"role": "user", "content": str(observation)}]

    def sample(self, observation: str, n: int = 1) -> list[Completion]:
        """`n` completions, with token ids and log-probs (for training)."""
        return self.policy.generate(self.chat(observation), n=n, params=self.params)

    def act(self, observation: str) -> str:
        """One action (the completion's text)."""
        return self.sample(observation, n=1)[0].text

    def sample_batch(self, observations: list[str], n: int = 1) -> list[list[Completion]]:
        """`n` completions for each observation, sent to the engine together."""
        return self.policy.generate_batch([self.chat(o) for o in observations], n=n, params=self.params)

    __call__ = act


class PromptAgent:
    """Plays a role by reading prompts from a JSONL file (a data-driven baseline).

    Each line holds an object with a `prompt` or `instruction` field. Prompts are
    served in a shuffled order (by `seed`) and cycled; they are not trained on.
    """

    def __init__(self, path: str, seed: int = 0):
        import json
        import random

        with open(path, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        self.prompts = [r.get("prompt") or r.get("instruction") for r in records]
        if not self.prompts or not all(isinstance(p, str) and p for p in self.prompts):
            raise ValueError(f"{path}: every line needs a non-empty 'prompt' or 'instruction' field")
        random.Random(seed).shuffle(self.prompts)
        self.position = 0

    def act(self, observation: str) -> str:
        prompt = self.prompts[self.position % len(self.prompts)]
        self.position += 1
        return prompt
