"""Penalties: recorded per role, credited to the other role when the game is kept zero-sum, and totalled."""
import pytest

from agents.judges import FunctionJudge
from algorithms.collector import Episode, Turn
from lsp_env.games.language_self_play import LanguageSelfPlay
from lsp_env.games.tic_tac_toe import TicTacToe
from lsp_env.guards import DegenerateQuery, LengthControl, penalty_totals

QUERY = "Explain why the sky looks blue during the day."
LONG_ANSWER = " ".join(["word"] * 15)  # 15 words: 5 over a budget of 10 -> half of the 0.4 penalty


def game(zero_sum: bool) -> LanguageSelfPlay:
    env = LanguageSelfPlay(FunctionJudge(lambda q, a: 0.3), guards=[LengthControl(max_words=10, penalty=0.4)])
    env.zero_sum = zero_sum
    env.reset(seed=0)
    return env


def returns(env) -> dict:
    return {agent: env._cumulative_rewards[agent] for agent in env.possible_agents}


@pytest.mark.parametrize("zero_sum, challenger", [(False, -0.3), (True, -0.3 + 0.2)])
def test_a_solver_guard_penalty_is_credited_to_the_challenger_only_when_zero_sum(zero_sum, challenger):
    env = game(zero_sum)
    env.step(QUERY)
    env.step(LONG_ANSWER)
    assert returns(env) == pytest.approx({"challenger": challenger, "solver": 0.3 - 0.2})
    assert env.infos["solver"]["penalty"] == pytest.approx(0.2) and "penalty" not in env.infos["challenger"]
    if zero_sum:
        assert sum(returns(env).values()) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("zero_sum, challenger", [(False, 0.0), (True, 1.0)])
def test_an_invalid_answer_is_credited_to_the_challenger_only_when_zero_sum(zero_sum, challenger):
    env = game(zero_sum)
    env.step(QUERY)
    env.step("   ")  # blank: an invalid move
    assert returns(env) == pytest.approx({"challenger": challenger, "solver": -1.0})
    assert env.infos["solver"]["penalty"] == 1.0


def test_a_challenger_penalty_is_credited_to_the_solver_when_zero_sum():
    env = LanguageSelfPlay(FunctionJudge(lambda q, a: 0.3), guards=[DegenerateQuery(penalty=1.0)])
    env.zero_sum = True
    env.reset(seed=0)
    env.step("help " * 40)
    env.step("I can help.")
    assert returns(env) == pytest.approx({"challenger": -0.3 - 1.0, "solver": 0.3 + 1.0})


def test_an_invalid_move_in_tic_tac_toe_is_a_forfeit_when_zero_sum():
    env = TicTacToe()
    env.zero_sum = True
    env.reset(seed=0)
    env.step("no such cell")
    assert sorted(returns(env).values()) == [-1.0, 1.0]


def episode(group, penalties, solver_branch=True):
    turns = [Turn("challenger", "p", "q", None, branch=False), Turn("solver", "q", "a", None, branch=solver_branch)]
    return Episode(group, turns, infos={role: {"penalty": value} for role, value in penalties.items() if value})


def test_penalty_totals_count_a_shared_challenger_turn_once_per_group():
    episodes = [episode(0, {"challenger": 1.0, "solver": 0.2}), episode(0, {"challenger": 1.0, "solver": 0.0}),
                episode(1, {"challenger": 0.0, "solver": 0.5}), episode(1, {"challenger": 0.0, "solver": 0.5})]
    assert penalty_totals(episodes, ["challenger", "solver"]) == pytest.approx(
        {"penalty/challenger": 1.0, "penalty/solver": 1.2})
