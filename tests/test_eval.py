"""`lsp eval` end to end: win rate and verifiable accuracy on the real default model, a league of tiny checkpoints."""
import json

import pytest
import yaml

from agents.models import tiny_model
from evaluation import alpaca
from lsp.cli import main


def save_tiny(folder, seed=0):
    model, tokenizer = tiny_model(seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def only_report(output):
    [folder] = list(output.iterdir())
    return folder, json.loads((folder / "report.json").read_text())


@pytest.mark.slow
def test_winrate_on_five_prompts_with_the_default_model(tmp_path):
    prompts = alpaca.write_json(tmp_path / "prompts.json", alpaca.read_records(alpaca.HELDOUT_PROMPTS)[:5])
    baseline = save_tiny(tmp_path / "tiny")
    code = main(["eval", "--prompts", str(prompts), "--baseline", baseline, "--judge_model", "smollm2-135m-instruct",
                 "--max_new_tokens", "12", "--resamples", "1000", "--output", str(tmp_path / "out")])
    assert code == 0
    folder, report = only_report(tmp_path / "out")
    result = report["winrate"]
    assert result["prompts"] == 5 and result["judgements"] == 10  # both orders of every prompt
    assert result["wins"] + result["ties"] + result["losses"] == 10
    assert 0 <= result["ci_low"] <= result["win_rate"] <= result["ci_high"] <= 1
    outputs = json.loads((folder / "model_outputs.json").read_text())
    assert [o["instruction"] for o in outputs] == alpaca.read_instructions(prompts)
    assert {o["generator"] for o in outputs} == {"smollm2-135m-instruct"}
    assert len(json.loads((folder / "annotations.json").read_text())) == 10
    assert (folder / "winrate.png").stat().st_size > 0 and "Win rate" in (folder / "summary.md").read_text()


@pytest.mark.slow
def test_verifiable_accuracy_reuses_its_heldout_set(tmp_path):
    heldout, tiny = tmp_path / "heldout.json", save_tiny(tmp_path / "tiny")
    args = ["eval", "--mode", "verifiable", "--game", "ConstrainedInstructions-v0", "--heldout", str(heldout),
            "--heldout_size", "3", "--max_new_tokens", "12", "--resamples", "500"]
    assert main(args + ["--baseline", tiny, "--output", str(tmp_path / "first")]) == 0
    folder, report = only_report(tmp_path / "first")
    assert len(report["answers"]["candidate"]) == len(report["answers"]["baseline"]) == 3
    assert all(0 <= a["score"] <= 1 for a in report["answers"]["candidate"])
    assert (folder / "accuracy.png").exists() and "Verifiable accuracy" in (folder / "summary.md").read_text()

    written = heldout.read_text()  # a second evaluation answers the same held-out moves
    assert main(args + ["--model", tiny, "--baseline", tiny, "--output", str(tmp_path / "second")]) == 0
    assert heldout.read_text() == written
    _, again = only_report(tmp_path / "second")
    assert again["heldout_model"] == "smollm2-135m-instruct"
    assert [a["query"] for a in again["answers"]["candidate"]] == [a["query"] for a in report["answers"]["candidate"]]


def test_league_rates_a_runs_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": save_tiny(tmp_path / "base"),
                                                     "game": "LanguageSelfPlay-v0", "judge": "rubric"}))
    for iteration in (2, 4):
        save_tiny(run / "checkpoints" / f"iter_{iteration:06d}" / "model", seed=iteration)
    code = main(["eval", "--mode", "league", "--run", str(run), "--matches", "1", "--max_new_tokens", "4",
                 "--resamples", "200", "--output", str(tmp_path / "out")])
    assert code == 0
    folder, report = only_report(tmp_path / "out")
    assert [r["name"] for r in report["ratings"]] == ["base", "iter 2", "iter 4"]
    assert report["ratings"][0]["elo"] == pytest.approx(1000)
    assert len(report["matches"]) == 3
    assert (folder / "league.png").exists() and "Elo" in (folder / "summary.md").read_text()


def test_league_needs_a_run_folder(capsys):
    assert main(["eval", "--mode", "league"]) == 2
    assert "--run" in capsys.readouterr().err
