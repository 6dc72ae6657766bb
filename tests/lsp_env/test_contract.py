"""The declared game contract: what a game may offer beyond PettingZoo's AECEnv, read through wrappers too."""
from pettingzoo.utils.wrappers import BaseWrapper

import lsp_env
from lsp_env.contract import Branching, Forkable, branch_agent, can_fork, judge_arguments
from lsp_env.games.tic_tac_toe import TicTacToe


def test_a_text_game_offers_a_branch_point_forking_and_its_judges():
    env = lsp_env.make("ConstrainedInstructions-v0")
    assert isinstance(env, Branching) and isinstance(env, Forkable)
    assert branch_agent(env) == "solver" and can_fork(env)
    assert judge_arguments(env) == judge_arguments(type(env)) == ("quality_judge",)


def test_the_contract_is_read_through_pettingzoo_wrappers():
    wrapped = BaseWrapper(lsp_env.make("ConstrainedInstructions-v0"))
    assert branch_agent(wrapped) == "solver" and can_fork(wrapped)


def test_a_game_that_declares_nothing_has_no_branch_point_fork_or_judges():
    class Plain:
        fork = None  # an attribute that is not a method does not count

    assert branch_agent(Plain()) is None and not can_fork(Plain()) and judge_arguments(Plain) == ()
    assert branch_agent(TicTacToe()) is None  # a board game: a group is G whole games from one seed
