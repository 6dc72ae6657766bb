"""Text games as PettingZoo AEC environments, and their registry.

    import lsp_env
    env = lsp_env.make("LanguageSelfPlay-v0", judge=FunctionJudge(fn))
    lsp_env.register("MyGame-v0", entry_point="my_pkg.games:MyGame", kwargs={...})
    lsp_env.registry  # id -> EnvSpec

Any PettingZoo `AECEnv` with text actions can be registered and trained;
`lsp_env.contract` says what a game may add (a branch point, `fork()`, a
reward breakdown). `TextGame` is a base class that has all of it.
"""
from lsp_env import games  # noqa: F401  (registers the built-in games)
from lsp_env.contract import BREAKDOWN, INVALID_MOVE_INFO, PASSED_INFO, QUALITY_INFO, REWARD_INFO, Branching, Forkable
from lsp_env.registry import (
    EnvSpec,
    Registry,
    UnknownGameError,
    games_table,
    load_plugins,
    make,
    make_with_judges,
    register,
    registry,
)
from lsp_env.text_game import InvalidMove, TextGame, TextObservation, UnicodeText, parse_action

__all__ = [
    "BREAKDOWN", "INVALID_MOVE_INFO", "PASSED_INFO", "QUALITY_INFO", "REWARD_INFO", "Branching", "Forkable",
    "EnvSpec", "InvalidMove", "Registry", "TextGame", "TextObservation", "UnicodeText", "UnknownGameError",
    "games_table", "load_plugins", "make", "make_with_judges", "parse_action", "register", "registry",
]
