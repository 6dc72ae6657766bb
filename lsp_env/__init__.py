"""Text games as PettingZoo AEC environments, and their registry.

    import lsp_env
    env = lsp_env.make("LanguageSelfPlay-v0", judge=FunctionJudge(fn))
    lsp_env.register("MyGame-v0", entry_point="my_pkg.games:MyGame", kwargs={...})
    lsp_env.registry  # id -> EnvSpec

Write a game by subclassing `TextGame`.
"""
from lsp_env import games  # noqa: F401  (registers the built-in games)
from lsp_env.registry import (
    EnvSpec,
    Registry,
    UnknownGameError,
    games_table,
    load_plugins,
    make,
    register,
    registry,
)
from lsp_env.text_game import InvalidMove, TextGame, TextObservation, UnicodeText, parse_action

__all__ = [
    "EnvSpec", "InvalidMove", "Registry", "TextGame", "TextObservation", "UnicodeText", "UnknownGameError",
    "games_table", "load_plugins", "make", "parse_action", "register", "registry",
]
