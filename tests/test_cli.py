"""The `lsp` command line."""
import subprocess
import sys

import pytest

from lsp.cli import main


def test_games_lists_the_registry(capsys):
    assert main(["games"]) == 0
    assert "LanguageSelfPlay-v0" in capsys.readouterr().out


def test_algos_lists_the_registry(capsys):
    assert main(["algos"]) == 0
    out = capsys.readouterr().out
    assert "lsp-zero" in out and "grpo" in out


@pytest.mark.parametrize("command", [[], ["train"], ["play"], ["serve"]])
def test_help_documents_every_subcommand(command):
    result = subprocess.run([sys.executable, "-m", "lsp.cli", *command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: lsp" in result.stdout


def test_bad_settings_are_rejected_with_a_message():
    result = subprocess.run([sys.executable, "-m", "lsp.cli", "train", "--num_queries", "5"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "num_queries" in result.stderr


@pytest.mark.slow
def test_play_prints_a_full_episode_with_the_default_model():
    result = subprocess.run([sys.executable, "-m", "lsp.cli", "play", "--answers", "2", "--max_new_tokens", "24"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("prompt seen by the challenger", "challenger move", "solver move #1", "solver move #2",
                     "returns", "reward:", "quality:", "judge_text"):
        assert expected in out, expected


def test_play_shows_each_players_own_outcome(tiny_path):
    from rich.console import Console

    from lsp.play import PlayConfig, play

    console = Console(record=True, width=200)
    rollout = play(PlayConfig(game="TicTacToe-v0", model=tiny_path, judge="none", quality_judge="none",
                              answers=1, max_new_tokens=4), console)
    out = console.export_text()
    outcomes = {agent: info["outcome"] for agent, info in rollout.episodes[0].infos.items()}
    if len(set(outcomes.values())) == 1:  # a draw: one shared line
        assert f"outcome: {outcomes['x']}" in out
    else:
        for agent, outcome in outcomes.items():
            assert f"{agent} outcome: {outcome}" in out
