"""The `lsp` command line."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lsp.cli import main


def test_games_lists_the_registry(capsys):
    assert main(["games"]) == 0
    assert "LanguageSelfPlay-v0" in capsys.readouterr().out


def test_algos_lists_the_registry(capsys):
    assert main(["algos"]) == 0
    out = capsys.readouterr().out
    assert "lsp-zero" in out and "grpo" in out


@pytest.mark.parametrize("command", [[], ["train"], ["play"], ["eval"], ["serve"], ["bench"]])
def test_help_documents_every_subcommand(command):
    result = subprocess.run([sys.executable, "-m", "lsp.cli", *command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: lsp" in result.stdout


LIGHT = """
import sys
import time
from lsp.cli import main
try:
    code = main({argv!r})
except SystemExit as exit:  # --help
    code = exit.code
heavy = sorted(m for m in ("torch", "vllm", "transformers", "torchrl", "peft") if m in sys.modules)
assert code == {code} and not heavy, (code, heavy)
"""


@pytest.mark.parametrize("argv", [["--help"], ["games"], ["algos"], ["train", "--help"], ["eval", "--help"],
                                  ["play", "--help"], ["serve", "--help"]])
def test_help_and_listings_load_no_model_library(argv):
    """`lsp --help`, the listings and every command's --help answer without torch, transformers or vLLM."""
    subprocess.run([sys.executable, "-c", LIGHT.format(argv=argv, code=0)], check=True, timeout=120,
                   capture_output=True)


@pytest.mark.parametrize("argv", [["train", "--algorithm_args", "{no_such_key: 1}"],
                                  ["train", "--algorithm_args", "{aggregation: mean}"],
                                  ["train", "--algorithm", "grpo", "--algorithm_args", "{zero_sum: true}"],
                                  ["train", "--game", "NoSuchGame-v0"],
                                  ["train", "--game", "LanguageSelfPlay-v0", "--game_args", "{no_such_key: 1}"],
                                  ["train", "--cluster.address", "local", "--cluster.rollout_workers", "3"]])
def test_wrong_names_and_algorithm_settings_are_rejected_before_torch_loads(argv):
    subprocess.run([sys.executable, "-c", LIGHT.format(argv=argv, code=2)], check=True, timeout=120,
                   capture_output=True)


@pytest.mark.parametrize("argv, message", [
    (["train", "--num_queries", "5", "--batch_size", "2"], "num_queries"),
    (["train", "--lr", "abc"], 'Parser key "lr": Does not validate'),
    (["train", "--no_such_flag", "1"], "unrecognized arguments: --no_such_flag 1"),
    (["eval", "--mode", "nonsense"], "mode"),
    (["train", "--game", "NoSuchGame-v0"], "No game registered as 'NoSuchGame-v0'"),
    (["train", "--algorithm", "lsp-zer"], "No algorithm registered as 'lsp-zer'. Did you mean: lsp-zero"),
    (["train", "--algorithm_args", "{no_such_key: 1}"], "no setting(s) ['no_such_key']"),
    (["train", "--algorithm_args", "{kl_estimator: k2}"], "kl_estimator must be one of k3, k1, exact; got 'k2'"),
    (["train", "--game", "TicTacToe-v0", "--game_args", "{no_such_key: 1}"], "no_such_key"),
    (["train", "--game", "ConstrainedInstructions-v0", "--game_args", "{partial: true}"], "Option 'partial' is not "
     "accepted; its settings: min_constraints, max_constraints, partial_credit"),
    (["train", "--game", "ConstrainedInstructions-v0", "--game_args", "{min_constraints: two}"],
     "Parser key \"min_constraints\": Expected a <class 'int'>. Got value: two"),
    (["train", "--game", "CodeOutputSelfPlay-v0", "--algorithm", "lsp-zero", "--game_args", "{isolation: none}"],
     "Expected a typing.Literal['bwrap', 'none-unsafe']. Got value: none"),
])
def test_bad_settings_give_one_line_then_the_usage_hint(argv, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "lsp.cli", *argv, "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error:") and message in lines[0] and len(lines) <= 2, result.stderr
    assert "usage:" not in result.stderr and not list((tmp_path / "out").glob("*"))


def test_a_folder_without_a_model_is_named_as_such(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lsp.cli", "eval", "--model", str(tmp_path), "--output",
                             str(tmp_path / "evals")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "holds no model (no config.json)" in result.stderr and "sentencepiece" not in result.stderr
    assert not list((tmp_path / "evals").glob("*"))  # no report folder left behind


@pytest.mark.slow
def test_play_prints_a_full_episode_with_the_default_model():
    result = subprocess.run([sys.executable, "-m", "lsp.cli", "play", "--answers", "2", "--max_new_tokens", "24"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("challenger sees:", "challenger:", "solver sees:", "solver #1:", "solver #2:",
                     "returns", "reward 0.", "quality 0.", "judge_text:"):
        assert expected in out, expected


def test_play_shows_each_players_own_outcome(tiny_path):
    from rich.console import Console

    from lsp.play import PlayConfig, play

    console = Console(record=True, width=200)
    rollout = play(PlayConfig(game="TicTacToe-v0", model=tiny_path, judge="none", quality_judge="none",
                              answers=1, max_new_tokens=4), console)
    out = console.export_text()
    outcomes = {agent: info["outcome"] for agent, info in rollout.episodes[0].infos.items()}
    if len(set(outcomes.values())) == 1:  # the same for both: one shared line, or none when there is no outcome
        assert outcomes["x"] is None or f"outcome: {outcomes['x']}" in out
    else:
        for agent, outcome in outcomes.items():
            assert outcome is None or f"{agent} outcome: {outcome}" in out


@pytest.mark.parametrize("autocast", ["true", "false", None])
def test_train_notes_that_bf16_is_slow_on_a_cpu_without_amx(autocast, tiny_path, tmp_path, capsys, monkeypatch):
    """Asked for on a CPU without AMX, bf16 autocast gets a note; left unset, it is on exactly where the CPU has AMX."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("needs /proc/cpuinfo to know the CPU's flags independently of torch")
    monkeypatch.setenv("COLUMNS", "250")
    code = main(["train", "--game", "ConstrainedInstructions-v0", "--engine", "hf", "--model", tiny_path,
                 *(["--autocast", autocast] if autocast else []), "--num_queries", "2", "--group_size", "2",
                 "--batch_size", "1",
                 "--grad_accumulation", "2", "--max_new_tokens", "8", "--iterations", "1", "--eval_suite", "null",
                 "--output", str(tmp_path)])
    assert code == 0
    out, has_amx = capsys.readouterr().out, " amx_bf16" in cpuinfo.read_text()
    assert ("no AMX, where bf16 autocast is slower" in out) == (autocast == "true" and not has_amx)
    autocast_on = autocast == "true" or (autocast is None and has_amx)
    assert ("game ConstrainedInstructions-v0, bf16 autocast)" if autocast_on else "v0, float32)") in out


def test_print_config_shows_the_values_the_run_will_use(capsys):
    import yaml

    assert main(["train", "--print_config", "--lora_rank", "0", "--algorithm_args", "{beta: 0.1}"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lr"] == 3e-6 and printed["batch_size"] == 4 and printed["grad_accumulation"] == 2
    assert printed["autocast"] in (True, False) and printed["beta"] == printed["algorithm_args"]["beta"] == 0.1


def test_algorithm_args_set_beta_for_the_run(tiny_path, tmp_path):
    import json

    assert main(["train", "--model", tiny_path, "--engine", "hf", "--game", "LanguageSelfPlay-v0",
                 "--algorithm", "lsp-zero", "--judge", "helpfulness", "--num_queries", "2", "--group_size", "2",
                 "--max_new_tokens", "4", "--judge_max_new_tokens", "4", "--iterations", "1", "--eval_suite", "null",
                 "--algorithm_args", "{beta: 0.1}", "--output", str(tmp_path)]) == 0
    [line] = [json.loads(text) for text in next(tmp_path.glob("*/metrics.jsonl")).read_text().splitlines()]
    assert line["algorithm/beta"] == 0.1 and line["algorithm/challenger_weight"] == 1.0


BROKEN_GAME = """
import sys
import time
import lsp_env
from lsp_env.games.tic_tac_toe import TicTacToe
from lsp.cli import main


class Broken(TicTacToe):
    def step(self, action):
        raise TypeError("a bug deep inside the game's step")


lsp_env.register("Broken-v0", Broken)
sys.exit(main(["play", "--game", "Broken-v0", "--model", {model!r}, "--judge", "none", "--quality_judge", "none",
               "--answers", "1", "--max_new_tokens", "2"]))
"""


def test_an_error_inside_a_run_reaches_the_user_with_its_traceback(tiny_path):
    result = subprocess.run([sys.executable, "-c", BROKEN_GAME.format(model=tiny_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr and "in step" in result.stderr
    assert "TypeError: a bug deep inside the game's step" in result.stderr
    assert not result.stderr.startswith("error:")


def test_debug_prints_the_traceback_of_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lsp.cli", "train", "--num_queries", "5", "--batch_size", "2",
                             "--debug"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr and "error: batch_size" in result.stderr


def test_resume_of_a_missing_folder_is_refused_before_torch_loads(tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "lsp.cli", "train", "--resume", str(tmp_path / "no-such-run")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no such folder" in result.stderr
    assert time.monotonic() - started < 2  # about 0.4 s; torch alone takes longer to import on 2 cores


@pytest.mark.parametrize("algorithm", ["lsp", "lsp-zero", "grpo"])
def test_one_answer_per_query_is_refused_for_group_relative_algorithms(algorithm):
    subprocess.run([sys.executable, "-c", LIGHT.format(argv=["train", "--algorithm", algorithm, "--group_size", "1"],
                                                       code=2)], check=True, timeout=120, capture_output=True)
