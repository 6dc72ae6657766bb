"""The challenger's prompt (our own wording of the four parts the LSP paper describes).

1. Background: the agent under test solves language tasks, given as (input, output) pairs.
2. The request: write ONE input for `{task}`, from easy to hard or noisy, that stress-tests the agent.
3. Optionally, a `{template}` the input must follow (left out when empty).
4. Rules: no answer, no hints, only what a text-only agent can do, output the input and stop.

The solver's prompt is the challenger's query itself, with nothing added.
"""
from __future__ import annotations

DEFAULT_TASK = "answering a user's request as a helpful assistant"
DEFAULT_TEMPLATE = ""

BACKGROUND = (
    "You are helping to test an AI agent. The agent works on language tasks. "
    "Each example of a task is a pair: an input, which the agent reads, and an "
    "output, which the agent writes in response."
)
REQUEST = (
    "Write exactly ONE new input for this task: {task}. It may be easy, very hard "
    "or anywhere in between, and it may be noisy or messy, the way real inputs "
    "often are. Aim for an input that pushes the agent to its limits and shows "
    "where it still falls short."
)
TEMPLATE = "The input must follow this template:\n{template}"
RULES = (
    "Rules:\n"
    "- Do not answer the input or include its solution.\n"
    "- Do not add hints, explanations or remarks about the input.\n"
    "- Ask only for what an agent that reads and writes text can do: no images, "
    "web browsing, files or actions in the physical world.\n"
    "- Write the input and nothing else, then stop."
)


def challenger_prompt(task: str = DEFAULT_TASK, template: str = DEFAULT_TEMPLATE) -> str:
    """The challenger's prompt for `task`, with the template part only when `template` is not blank."""
    parts = [BACKGROUND, REQUEST.format(task=task)]
    if template.strip():
        parts.append(TEMPLATE.format(template=template))
    parts.append(RULES)
    return "\n\n".join(parts)
