"""Built-in games. Each registers with one line; the module is imported only by `make`."""
from lsp_env.registry import register

register("LanguageSelfPlay-v0", "lsp_env.games.language_self_play:LanguageSelfPlay", description="A challenger writes a query to stress-test the solver; a judge scores the answer.")
