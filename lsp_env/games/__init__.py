"""Built-in games. Each registers with one line; the module is imported only by `make`."""
from lsp_env.registry import register

register("LanguageSelfPlay-v0", "lsp_env.games.language_self_play:LanguageSelfPlay", description="A challenger writes a query to stress-test the solver; a judge scores the answer.")
register("ArithmeticSelfPlay-v0", "lsp_env.games.arithmetic:ArithmeticSelfPlay", description="The challenger writes an arithmetic expression; the solver's answer must match its exact value.")
register("CodeOutputSelfPlay-v0", "lsp_env.games.code_output:CodeOutputSelfPlay", description="The challenger writes a Python function and an input; the solver predicts its output (run in a sandbox).")
register("ConstrainedInstructions-v0", "lsp_env.games.constrained_instructions:ConstrainedInstructions", description="The challenger writes a task; the env attaches 1-3 verifiable constraints; the solver is scored by the fraction met.")
register("ConstrainedInstructions-v1", "lsp_env.games.constrained_instructions:ConstrainedInstructions", {"topics": True, "partial_credit": True}, description="v0 where the challenger asks one question about a drawn topic, and near misses earn partial credit.")
register("ConstrainedInstructions-v2", "lsp_env.games.constrained_instructions:ConstrainedInstructions", {"topics": True, "partial_credit": True, "vocabulary": "wide", "rule_layout": "mixed"}, description="v1 with many more words, phrases and numbers in the rules, and half of them written inline after the task (the CPU recipe's).")
register("TicTacToe-v0", "lsp_env.games.tic_tac_toe:TicTacToe", description="Tic-tac-toe, both seats played by one shared policy (zero-sum; train with rae).")
