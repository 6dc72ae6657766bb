"""The evaluations `lsp eval` runs: compare a model or checkpoint with a baseline, or rate a run's checkpoints.

Three modes, each writing `report.json`, `summary.md` and PNG plots to a new
folder inside `output`:
- `winrate`: pairwise win rate on AlpacaEval-style prompts (outputs and
  judgements are also written in AlpacaEval's format);
- `verifiable`: accuracy on a fixed held-out set of challenger moves of a
  verifiable game, or strict pass rates on a bundled held-out
  instruction-following suite (`--suite if-heldout`);
- `league`: the checkpoints of one run play each other; Elo ratings.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from rich.console import Console

from agents.lora import is_adapter_folder
from agents.models import DEFAULT_MODEL
from agents.policy import SamplingParams
from evaluation import alpaca

DEFAULT_VERIFIABLE_GAME = "ConstrainedInstructions-v0"


@dataclass
class EvalConfig:
    """Evaluate a model: its win rate against a baseline (winrate), its accuracy on a verifiable game's held-out
    challenger moves (verifiable), or Elo ratings of a run's checkpoints playing each other (league)."""

    mode: Literal["winrate", "verifiable", "league"] = "winrate"
    model: str = DEFAULT_MODEL
    """The candidate: alias, Hugging Face id, model folder, LoRA adapter folder, checkpoint folder, or run folder
    (its latest checkpoint)."""
    adapter: str | None = None
    """A LoRA adapter folder (PEFT format) loaded onto the candidate `model`."""
    baseline: str = DEFAULT_MODEL
    """What the candidate is compared with (winrate, verifiable)."""
    run: str | None = None
    """league: the run folder whose base model and checkpoints play each other."""
    prompts: str = alpaca.HELDOUT_PROMPTS
    """winrate: AlpacaEval-style JSON list of {"instruction": ...}; default: 30 bundled prompts training never sees."""
    judge: str = "pairwise"
    """winrate: pairwise (an LLM reads A, B or tie), helpfulness, rubric or reward-model:PATH.
    league: the run's own judge is used."""
    judge_model: str | None = None
    """The model behind the self-judges and the pairwise judge (default: the baseline; league: the run's base model)."""
    judge_mode: str = "expected"
    """helpfulness/rubric: "expected" (expected score digit) or "generate" (write, then parse "Score: N")."""
    tie_margin: float = 0.0
    """Score judges: a score gap up to this is a tie."""
    game: str | None = None
    """verifiable: a game with a verified solver reward (default ConstrainedInstructions-v0); league: the run's game."""
    heldout: str | None = None
    """verifiable: the held-out set (JSON). Made with heldout_model and seed, and saved there, when the file is
    missing; by default made afresh in the output folder."""
    heldout_model: str = DEFAULT_MODEL
    """verifiable: the model that writes the held-out challenger moves."""
    heldout_size: int = 50
    suite: str | None = None
    """verifiable: a bundled held-out suite name (if-heldout) or a JSONL path; replaces the game's held-out set."""
    matches: int = 4
    """league: matches per pair of players (each is two games with swapped roles)."""
    max_players: int = 6
    """league: the base model and at most this many - 1 checkpoints, evenly spaced (first and last kept)."""
    max_new_tokens: int = 128
    temperature: float = 0.0
    """Answers (0 = greedy, as in the paper's evaluation)."""
    challenger_temperature: float = 1.0
    """Challenger moves (held-out set, league)."""
    seed: int = 0
    resamples: int = 10_000
    """Bootstrap resamples for the confidence intervals (league: 1000 at most, each is a refit)."""
    device: str = "cpu"
    dtype: str = "float32"
    output: str = "evals"
    """A new report folder is made inside."""


def check_eval(config: EvalConfig) -> None:
    """Refuse settings the chosen mode cannot use, before any model loads."""
    from agents.judges import check_judge_name
    from evaluation import suite, verifiable

    if config.mode == "winrate":
        alpaca.read_records(config.prompts)
        if config.judge in ("none", ""):
            raise ValueError("a win rate needs a judge: pairwise, helpfulness, rubric or reward-model:PATH")
        if config.judge != "pairwise":
            check_judge_name(config.judge)
    elif config.mode == "verifiable" and config.suite:
        suite.load_suite(config.suite)
    elif config.mode == "verifiable":
        game = config.game or DEFAULT_VERIFIABLE_GAME
        if not verifiable.is_verifiable(game):
            raise ValueError(f"{game} has no verified solver reward; verifiable games: "
                             f"{', '.join(verifiable.verifiable_games())}")
        if config.heldout and Path(config.heldout).exists():
            held = verifiable.HeldoutSet.load(config.heldout)
            if held.game != game:
                raise ValueError(f"{config.heldout} holds moves for {held.game}, not {game}")
    elif not config.run:
        raise ValueError("the league mode needs --run RUN_FOLDER")
    elif not (Path(config.run) / "config.yaml").is_file():
        raise ValueError(f"{config.run} is not a run folder (it has no config.yaml)")


def evaluate(config: EvalConfig, console: Console | None = None) -> Path:
    """Check the settings (`check_eval`), run one evaluation; returns the report folder."""
    from evaluation import report

    check_eval(config)
    console = console or Console()
    folder = Path(config.output) / f"{config.mode}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    runner = {"winrate": _winrate, "verifiable": _verifiable, "league": _league}[config.mode]
    try:
        results, markdown, headline = runner(config, folder, console)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a failed evaluation leaves no half-written report folder
        raise
    report.write_report(folder, {"mode": config.mode, "config": asdict(config), **results}, markdown)
    console.print(headline)
    console.print(f"report: [bold]{folder / 'report.json'}[/]  summary: [bold]{folder / 'summary.md'}[/]")
    return folder


def model_folder(name: str) -> str:
    """A run folder becomes its latest checkpoint's model, a checkpoint folder its `model/`; others are unchanged."""
    from algorithms.checkpoint import latest_checkpoint

    path = Path(name).expanduser()
    if (path / "checkpoints").is_dir():
        return str(latest_checkpoint(path) / "model")
    if (path / "model" / "config.json").is_file() or is_adapter_folder(path / "model"):
        return str(path / "model")
    return name


def generator_name(name: str) -> str:
    """A short, readable name of a model for reports (e.g. "lsp-20260101-120000/iter_000010")."""
    path = Path(model_folder(name)).expanduser()
    if not path.exists():
        return name
    parts = [part for part in path.resolve().parts if part not in ("model", "checkpoints")]
    return "/".join(parts[-2:])


def _loader(config: EvalConfig, console: Console):
    import torch

    from agents.hf import HFPolicy
    from agents.models import load_model

    def load(name: str) -> HFPolicy:
        adapter = config.adapter if name == config.model else None
        with console.status(f"loading {name} ..."):
            return HFPolicy(*load_model(model_folder(name), getattr(torch, config.dtype), config.device, adapter))

    return load


def _winrate(config: EvalConfig, folder: Path, console: Console) -> tuple[dict, str, str]:
    from evaluation import report, winrate
    from evaluation.episodes import answer_prompts
    from evaluation.pairwise import build_pairwise_judge

    load = _loader(config, console)
    records = alpaca.read_records(config.prompts)
    instructions = [record["instruction"] for record in records]
    params = SamplingParams(config.max_new_tokens, config.temperature)
    candidate_policy = load(config.model)
    with console.status(f"candidate answering {len(instructions)} prompts ..."):
        candidate = answer_prompts(candidate_policy, instructions, params, config.seed)
    candidate_policy.close()
    baseline_policy = load(config.baseline)
    with console.status(f"baseline answering {len(instructions)} prompts ..."):
        baseline = answer_prompts(baseline_policy, instructions, params, config.seed)
    judge_name = config.judge_model or config.baseline
    if config.judge.startswith("reward-model:"):
        judge_policy = None
    else:
        judge_policy = baseline_policy if judge_name == config.baseline else load(judge_name)
    judge = build_pairwise_judge(config.judge, judge_policy, config.judge_mode, config.tie_margin)
    with console.status(f"judging with {judge.name} ..."):
        comparisons = winrate.compare(instructions, candidate, baseline, judge)
    for policy in {id(p): p for p in (baseline_policy, judge_policy) if p is not None}.values():
        policy.close()
    result = winrate.summarize(comparisons, resamples=config.resamples, seed=config.seed)

    names = generator_name(config.model), generator_name(config.baseline)
    if names[0] == names[1]:
        names = f"{names[0]} (candidate)", f"{names[1]} (baseline)"
    alpaca.write_json(folder / "model_outputs.json", alpaca.output_records(records, candidate, names[0]))
    alpaca.write_json(folder / "reference_outputs.json", alpaca.output_records(records, baseline, names[1]))
    alpaca.write_json(folder / "annotations.json", _annotations(comparisons, names, judge.name))
    report.plot_intervals(folder / "winrate.png", [f"{names[0]}\nvs {names[1]}"], [result.win_rate], [result.ci_low],
                          [result.ci_high], "win rate (%)", f"judge: {judge.name}", reference=0.5)
    markdown = report.winrate_markdown(result, names[0], names[1], judge.name, "winrate.png")
    headline = (f"win rate of [bold]{names[0]}[/] against {names[1]}: [bold]{result.win_rate:.1%}[/] "
                f"({result.confidence:.0%} CI {result.ci_low:.1%} - {result.ci_high:.1%}); {result.wins} wins, "
                f"{result.ties} ties, {result.losses} losses on {result.prompts} prompts (judge: {judge.name})")
    return {"candidate": names[0], "baseline": names[1], "judge": judge.name, "winrate": result.as_dict(),
            "comparisons": [asdict(item) for item in comparisons]}, markdown, headline


def _annotations(comparisons: list, names: tuple[str, str], annotator: str) -> list[dict]:
    records = []
    for item in comparisons:
        candidate, baseline = (names[0], item.candidate), (names[1], item.baseline)
        for score, detail in zip(item.scores, item.details):
            swapped = detail["order"] == "baseline first"
            first, second = (baseline, candidate) if swapped else (candidate, baseline)
            records.append(alpaca.annotation_record(item.instruction, first, second, annotator,
                                                    1.0 - score if swapped else score))
    return records


def _verifiable(config: EvalConfig, folder: Path, console: Console) -> tuple[dict, str, str]:
    from evaluation import report, verifiable

    if config.suite:
        return _suite(config, folder, console)
    from algorithms.assembly import make_game

    game = config.game or DEFAULT_VERIFIABLE_GAME
    load = _loader(config, console)
    make_env = lambda: make_game(game, {})  # noqa: E731  (no judges: only the verified reward counts)
    heldout_path = Path(config.heldout) if config.heldout else folder / "heldout.json"
    if heldout_path.exists():
        heldout = verifiable.HeldoutSet.load(heldout_path)
    else:
        policy = load(config.heldout_model)
        with console.status(f"{config.heldout_model} writing {config.heldout_size} held-out {game} moves ..."):
            heldout = verifiable.make_heldout_set(game, make_env, policy, config.heldout_model, config.heldout_size,
                                                  config.seed, SamplingParams(config.max_new_tokens,
                                                                              config.challenger_temperature))
        policy.close()
        heldout.save(heldout_path)
    params = SamplingParams(config.max_new_tokens, config.temperature)
    answers = {}
    for role, name in (("candidate", config.model), ("baseline", config.baseline)):
        policy = load(name)
        with console.status(f"{role} answering {len(heldout.items)} held-out {game} items ..."):
            answers[role] = verifiable.verified_scores(make_env, policy, heldout, params, config.seed)
        policy.close()
    scores = {role: np.array([item["score"] for item in items]) for role, items in answers.items()}
    results = {role: verifiable.accuracy(values, resamples=config.resamples, seed=config.seed)
               for role, values in scores.items()}
    difference = verifiable.accuracy(scores["candidate"] - scores["baseline"], resamples=config.resamples,
                                     seed=config.seed)
    labels = {"candidate": generator_name(config.model), "baseline": generator_name(config.baseline)}
    named = {f"{labels[role]} ({role})": result for role, result in results.items()}
    report.plot_intervals(folder / "accuracy.png", list(named), [r.accuracy for r in named.values()],
                          [r.ci_low for r in named.values()], [r.ci_high for r in named.values()], "accuracy (%)",
                          f"{game}, {len(heldout.items)} held-out items")
    markdown = report.accuracy_markdown(game, named, difference, str(heldout_path), "accuracy.png")
    headline = f"accuracy on {game} ({len(heldout.items)} held-out items): " + ", ".join(
        f"[bold]{name}[/] {r.accuracy:.1%} ({r.ci_low:.1%} - {r.ci_high:.1%})" for name, r in named.items())
    return {"game": game, "heldout": str(heldout_path), "heldout_model": heldout.model,
            "accuracy": {role: {"model": labels[role], **result.as_dict()} for role, result in results.items()},
            "difference": difference.as_dict(), "answers": answers}, markdown, headline


def _suite(config: EvalConfig, folder: Path, console: Console) -> tuple[dict, str, str]:
    from evaluation import report, suite, verifiable

    import torch

    held_out = suite.load_suite(config.suite)
    load = _loader(config, console)
    params = SamplingParams(config.max_new_tokens, config.temperature)
    scores, graded = {}, {}
    for role, name in (("candidate", config.model), ("baseline", config.baseline)):
        policy = load(name)
        torch.manual_seed(config.seed)
        with console.status(f"{role} answering {len(held_out.items)} {held_out.name} prompts ..."):
            scores[role], graded[role] = suite.evaluate_policy(policy, held_out, params)
        policy.close()
    strict = {role: [float(item["strict"]) for item in items] for role, items in graded.items()}
    difference = suite.paired_difference(strict["candidate"], strict["baseline"])
    labels = {"candidate": generator_name(config.model), "baseline": generator_name(config.baseline)}
    named = {f"{labels[role]} ({role})": score for role, score in scores.items()}
    intervals = [verifiable.accuracy(values, resamples=config.resamples, seed=config.seed)
                 for values in strict.values()]
    report.plot_intervals(folder / "strict_pass.png", [f"{labels[role]}\n({role})" for role in scores],
                          [r.accuracy for r in intervals], [r.ci_low for r in intervals],
                          [r.ci_high for r in intervals], "strict pass (%)",
                          f"{held_out.name}, {len(held_out.items)} prompts (95% bootstrap CI)")
    markdown = report.suite_markdown(held_out.name, named, difference, "strict_pass.png")
    headline = (f"strict pass on {held_out.name} ({len(held_out.items)} prompts): candidate "
                f"{scores['candidate'].strict:.1%}, baseline {scores['baseline'].strict:.1%}, difference "
                f"{100 * difference.mean:+.1f} pts ({difference.confidence:.0%} CI {100 * difference.ci_low:+.1f} "
                f"to {100 * difference.ci_high:+.1f})")
    return {"suite": held_out.name, "prompts": len(held_out.items),
            "scores": {role: {"model": labels[role], **score.as_dict()} for role, score in scores.items()},
            "difference": difference.as_dict(), "answers": graded}, markdown, headline


def _league(config: EvalConfig, folder: Path, console: Console) -> tuple[dict, str, str]:
    from evaluation import league, report, verifiable

    from agents.judges import build_judge
    from algorithms.assembly import make_game

    load = _loader(config, console)
    players = league.league_players(config.run, config.max_players)
    run_config = yaml.safe_load((Path(config.run) / "config.yaml").read_text())
    game = config.game or run_config.get("game", "LanguageSelfPlay-v0")
    game_args = (run_config.get("game_args") or {}) if game == run_config.get("game") else {}
    judge_name = "none" if verifiable.is_verifiable(game) else run_config.get("judge", "helpfulness")
    judge_policy = None if judge_name in ("none", "") or judge_name.startswith("reward-model:") else load(
        config.judge_model or players[0].model)
    judge = build_judge(judge_name, judge_policy, mode=run_config.get("judge_mode", config.judge_mode))
    make_env = lambda: make_game(game, {"judge": judge}, game_args)  # noqa: E731
    with console.status(f"{len(players)} players, {config.matches} matches per pair ..."):
        matches = league.play_league(players, make_env, load, config.matches,
                                     SamplingParams(config.max_new_tokens, config.challenger_temperature),
                                     SamplingParams(config.max_new_tokens, config.temperature), config.seed)
    if judge_policy is not None:
        judge_policy.close()
    ratings = league.elo_ratings(players, matches, resamples=min(config.resamples, 1000), seed=config.seed)
    scores = league.score_table([p.name for p in players], matches)
    report.plot_league(folder / "league.png", ratings, f"{game}, {len(matches)} matches")
    markdown = report.league_markdown(game, ratings, scores, len(matches), "league.png")
    headline = f"Elo on {game} ({len(matches)} matches): " + ", ".join(
        f"[bold]{r.name}[/] {r.elo:.0f} ({r.ci_low:.0f} - {r.ci_high:.0f})" for r in ratings)
    return {"game": game, "run": config.run, "judge": judge_name,
            "players": [asdict(p) for p in players], "ratings": [r.as_dict() for r in ratings],
            "scores": scores, "matches": [asdict(m) for m in matches]}, markdown, headline
