"""TicTacToe: the move parser (right, wrong, malformed), outcomes, rewards and outcome rates."""
import pytest

import lsp_env
from algorithms.collector import Episode
from lsp_env.games.tic_tac_toe import parse_cell
from lsp_env.outcomes import outcome_rates


def play(*moves):
    env = lsp_env.make("TicTacToe-v0")
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    return env


@pytest.mark.parametrize("text, cell", [("5", 5), ("I take cell 7.", 7), ("1", 1), ("9!", 9), ("cell 3, cell 3", 3)])
def test_parse_cell_right(text, cell):
    assert parse_cell(text) == cell


@pytest.mark.parametrize("text", ["0", "10", "cell 12"])
def test_parse_cell_off_the_board(text):
    assert "not on the board" in parse_cell(text)


@pytest.mark.parametrize("text", ["the middle", "1 2 3 4 5 6 7 8 9", "2.5", "", "between 4 and 6"])
def test_parse_cell_malformed(text):
    assert "exactly one cell" in parse_cell(text)


def test_x_wins_a_row():
    env = play("5", "1", "2", "3", "8")
    assert env.rewards == {"x": 1.0, "o": -1.0}
    assert env.infos["x"]["outcome"] == "win" and env.infos["o"]["outcome"] == "loss"
    assert all(env.terminations.values())


def test_o_wins_a_column():
    env = play("1", "3", "2", "6", "4", "9")
    assert env.rewards == {"x": -1.0, "o": 1.0}
    assert env.infos["o"]["outcome"] == "win"


def test_draw():
    env = play("1", "2", "3", "5", "4", "6", "8", "7", "9")
    assert env.rewards == {"x": 0.0, "o": 0.0}
    assert env.infos["x"]["outcome"] == env.infos["o"]["outcome"] == "draw"


@pytest.mark.parametrize("moves, offender", [(["5", "5"], "o"), (["the middle one"], "x"), (["5", "1", "42"], "x")])
def test_invalid_move_is_never_partial_credit(moves, offender):
    env = play(*moves)
    other = "o" if offender == "x" else "x"
    assert env.rewards == {offender: -1.0, other: 0.0}
    assert env.infos[offender]["outcome"] == "invalid" and env.infos[other]["outcome"] is None
    assert env.infos[offender]["invalid_move"]


def test_observation_shows_the_board_and_whose_move_it_is():
    env = play("5")
    assert "Your move" in env.observe("o") and "Your move" not in env.observe("x")
    assert "X" in env.observe("o") and "1, 2, 3, 4, 6, 7, 8, 9" in env.observe("o")


def test_fork_continues_independently():
    env = play("5")
    copy = env.fork()
    copy.step("1")
    assert env.board[0] is None and copy.board[0] == "o"


def test_outcome_rates_are_reported_separately_per_role():
    episodes = [Episode(0, infos={"x": {"outcome": "win"}, "o": {"outcome": "loss"}}),
                Episode(1, infos={"x": {"outcome": "draw"}, "o": {"outcome": "draw"}}),
                Episode(2, infos={"x": {"outcome": None, "invalid_move": "empty"}, "o": {"outcome": None}}),
                Episode(3, infos={"x": {"outcome": "loss"}, "o": {"outcome": "invalid", "invalid_move": "taken"}})]
    rates = outcome_rates(episodes)
    assert rates["outcome/x/win"] == rates["outcome/x/draw"] == rates["outcome/x/invalid"] == 0.25
    assert rates["outcome/x/loss"] == 0.25
    assert rates["outcome/o/invalid"] == 0.25 and rates["outcome/o/loss"] == 0.25
    assert outcome_rates([Episode(0, infos={"challenger": {"reward": 1.0}})]) == {}
