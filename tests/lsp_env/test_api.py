"""PettingZoo's `api_test` for every registered game, and sampled actions are valid moves."""
import pytest
from pettingzoo.test import api_test

import lsp_env
from agents.judges import FunctionJudge

# Cheap stand-ins for default judges that would load a model.
CHEAP = {"LanguageSelfPlay-v0": {"judge": FunctionJudge(lambda query, answer: len(answer) % 5 / 4)}}


def make_cheap(game_id):
    """Build `game_id` with cheap judges and seeded action spaces."""
    env = lsp_env.make(game_id, **CHEAP.get(game_id, {}))
    for seed, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(seed)
    return env


GAME_IDS = sorted(lsp_env.registry)


def test_builtin_games_are_registered():
    for game_id in ("LanguageSelfPlay-v0", "ArithmeticSelfPlay-v0", "CodeOutputSelfPlay-v0",
                    "ConstrainedInstructions-v0", "TicTacToe-v0"):
        assert game_id in GAME_IDS


# api_test also gives advice meant for numeric envs (NumPy observations, "player_0" names).
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("game_id", GAME_IDS)
def test_pettingzoo_api(game_id):
    api_test(make_cheap(game_id), num_cycles=10)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("game_id", GAME_IDS)
def test_make_with_no_arguments_gives_a_working_game(game_id):
    """`make(id)` alone, as gymnasium and PettingZoo users expect; a default judge loads the embedded model."""
    env = lsp_env.make(game_id)
    for seed, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(seed)
    api_test(env, num_cycles=4)


# Games where any valid text is a legal move; the others (expressions, programs, cells) have rules.
ANY_TEXT_IS_A_MOVE = {"LanguageSelfPlay-v0", "ConstrainedInstructions-v0"}


@pytest.mark.parametrize("game_id", GAME_IDS)
def test_sampled_actions_are_valid_moves(game_id):
    """Sampled actions are always valid text; in games with rules they may still break a rule."""
    env = make_cheap(game_id)
    for episode in range(5):
        env.reset(seed=episode)
        for agent in env.agent_iter():
            observation, _, terminated, truncated, info = env.last()
            assert env.observation_space(agent).contains(observation)
            if game_id in ANY_TEXT_IS_A_MOVE:
                assert "invalid_move" not in info
            action = None if terminated or truncated else env.action_space(agent).sample()
            if action is not None:
                lsp_env.parse_action(action, env.action_space(agent))  # raises InvalidMove for invalid text
            env.step(action)
