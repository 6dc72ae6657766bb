"""The judge a game gets when it is made without one: `lsp_env.make("LanguageSelfPlay-v0")` works as is.

`EmbeddedJudge` is the embedded model's helpfulness self-judge (`agents.judges`,
"expected" mode). Nothing loads when a game is made: the model loads on the
first judgement, once per process, and every game made this way shares it.
Training builds its own judges from its config (`--judge`) instead.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

_lock = threading.Lock()
_loaded = None


class EmbeddedJudge:
    """The embedded model's helpfulness self-judge, loaded on first use."""

    name = "self-judge (helpfulness, embedded model)"

    def judge_batch(self, pairs: Sequence[tuple[str, str]]) -> list:
        return loaded_judge().judge_batch(pairs)

    def judge(self, query: str, answer: str):
        return self.judge_batch([(query, answer)])[0]


def loaded_judge():
    """The shared self-judge, loading the embedded model the first time."""
    global _loaded
    with _lock:
        if _loaded is None:
            from agents.hf import HFPolicy
            from agents.judges import build_judge
            from agents.models import load_model

            _loaded = build_judge("helpfulness", HFPolicy(*load_model()))
        return _loaded


def is_loaded() -> bool:
    """Whether the model behind `EmbeddedJudge` has been loaded in this process."""
    return _loaded is not None
