"""Every built-in game trains from the command line (`lsp train --game ID`) and plays (`lsp play --game ID`)."""
import json

import pytest

from lsp.cli import main

GAMES = {  # game -> (algorithm, a metric its runs must log)
    "ArithmeticSelfPlay-v0": ("lsp-zero", "reward/challenger"),
    "CodeOutputSelfPlay-v0": ("lsp-zero", "reward/challenger"),
    "ConstrainedInstructions-v0": ("lsp", "guards/degenerate_query"),
    "TicTacToe-v0": ("rae", "outcome/x/invalid"),
}


@pytest.mark.parametrize("game", sorted(GAMES))
def test_game_trains_two_iterations_from_the_cli(game, tiny_path, tmp_path):
    algorithm, metric = GAMES[game]
    code = main(["train", "--game", game, "--algorithm", algorithm, "--engine", "hf", "--model", tiny_path,
                 "--num_queries", "2", "--group_size", "2", "--batch_size", "1", "--grad_accumulation", "2",
                 "--max_new_tokens", "8", "--iterations", "2", "--eval_suite", "null", "--output", str(tmp_path)])
    assert code == 0
    (run_dir,) = tmp_path.iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert metric in records[-1]
    assert (run_dir / "checkpoints" / "latest").read_text() == "iter_000002"


@pytest.mark.parametrize("game", sorted(GAMES))
def test_game_plays_from_the_cli(game, tiny_path, capsys):
    assert main(["play", "--game", game, "--model", tiny_path, "--max_new_tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "returns" in out and game in out


def test_games_table_shows_roles_reward_and_guards(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per game
    assert main(["games"]) == 0
    out = capsys.readouterr().out
    for text in ("roles", "reward", "guards", "TicTacToe-v0", "x, o", "challenger, solver", "degenerate_query",
                 "verified"):
        assert text in out, text
