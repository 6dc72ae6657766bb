"""Checkpoint leagues: Elo ratings on scripted leagues, run folders, and real (tiny) games."""
import numpy as np
import pytest

from agents.hf import HFPolicy
from agents.judges import FunctionJudge
from agents.models import tiny_model
from agents.policy import SamplingParams
from evaluation.league import (ANCHOR, Match, Player, elo_ratings, fit_ratings, league_players,
                               play_league, score_table)
from lsp_env import make_with_judges


def scripted_league(rounds: int = 10) -> list[Match]:
    """"champ" beats everyone every time; "b" and "c" split their games."""
    matches = []
    for round_number in range(rounds):
        matches += [Match("champ", "b", 1.0), Match("c", "champ", 0.0),
                    Match("b", "c", float(round_number % 2)), Match("base", "b", 0.5), Match("base", "c", 0.5),
                    Match("champ", "base", 1.0)]
    return matches


def test_a_player_that_always_wins_is_rated_highest_with_separated_intervals():
    ratings = {r.name: r for r in elo_ratings(["base", "champ", "b", "c"], scripted_league(), resamples=300)}
    assert ratings["base"].elo == pytest.approx(ANCHOR)
    assert ratings["champ"].elo > max(ratings[name].elo for name in ("base", "b", "c")) + 200
    assert ratings["champ"].ci_low > max(ratings[name].ci_high for name in ("base", "b", "c"))
    assert ratings["b"].elo == pytest.approx(ratings["c"].elo, abs=1e-6)
    for rating in ratings.values():
        assert rating.ci_low <= rating.elo + 1e-6 and rating.elo <= rating.ci_high + 1e-6
    assert np.isfinite([r.elo for r in ratings.values()]).all()  # the prior keeps an unbeaten player finite


def test_each_win_raises_the_winner_and_more_evidence_narrows_the_interval():
    few = {r.name: r for r in elo_ratings(["base", "champ", "b", "c"], scripted_league(3), resamples=300)}
    many = {r.name: r for r in elo_ratings(["base", "champ", "b", "c"], scripted_league(30), resamples=300)}
    assert many["champ"].elo > few["champ"].elo
    assert many["champ"].ci_high - many["champ"].ci_low < few["champ"].ci_high - few["champ"].ci_low


def test_ratings_do_not_depend_on_match_order():
    matches = scripted_league(4)
    names = ["base", "champ", "b", "c"]
    assert fit_ratings(names, matches) == pytest.approx(fit_ratings(names, matches[::-1]))


def test_score_table_is_symmetric():
    table = score_table(["base", "champ", "b", "c"], scripted_league(2))
    assert table["champ"]["b"] == 1.0 and table["b"]["champ"] == 0.0
    assert table["b"]["c"] == table["c"]["b"] == 0.5


def test_run_folders_give_the_base_model_and_evenly_spaced_checkpoints(tmp_path):
    (tmp_path / "config.yaml").write_text("model: base-model\n")
    for iteration in (5, 10, 15, 20, 25):
        (tmp_path / "checkpoints" / f"iter_{iteration:06d}" / "model").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".tmp-iter_000030-1" / "model").mkdir(parents=True)  # an unfinished save
    players = league_players(tmp_path, max_players=4)
    assert [p.iteration for p in players] == [0, 10, 15, 25]
    assert players[0] == Player("base", "base-model", 0)
    assert players[-1].model == str(tmp_path / "checkpoints" / "iter_000025" / "model")
    with pytest.raises(ValueError, match="no checkpoints"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.yaml").write_text("model: m\n")
        league_players(tmp_path / "empty")


@pytest.fixture(scope="module")
def tiny_models():
    return {str(seed): tiny_model(seed=seed) for seed in range(3)}


def test_a_league_of_tiny_models_plays_every_pair_with_swapped_roles(tiny_models):
    judge = FunctionJudge(lambda query, answer: min(len(answer), 40) / 40)
    make_env = lambda: make_with_judges("LanguageSelfPlay-v0", {"judge": judge}, {"guards": []})  # noqa: E731
    loads = []

    def load(model: str) -> HFPolicy:
        loads.append(model)
        return HFPolicy(*tiny_models[model])

    players = [Player("base", "0", 0), Player("iter 1", "1", 1), Player("iter 2", "2", 2)]
    challenger, solver = SamplingParams(max_new_tokens=4, temperature=1.0), SamplingParams(4, 0.0)
    matches = play_league(players, make_env, load, 2, challenger, solver)
    assert len(matches) == 3 * 2
    assert {(m.first, m.second) for m in matches} == {("base", "iter 1"), ("base", "iter 2"), ("iter 1", "iter 2")}
    assert all(m.score in (0.0, 0.5, 1.0) for m in matches)
    assert loads == ["0", "1", "2"] * 2  # one model in memory at a time: challenger moves, then answers
    assert play_league(players, make_env, load, 2, challenger, solver) == matches  # seeded
