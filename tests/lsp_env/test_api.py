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
@pytest.mark.parametrize("game_id", GAME_IDS)
def test_make_with_no_arguments_gives_a_working_game(game_id):
    """`make(id)` alone, as gymnasium and PettingZoo users expect, plays an episode to its end with rewards for
    every agent; a default judge loads the embedded model. (Short moves: `api_test`'s random 32k-character
    answers would take the real judge minutes each.)"""
    env = lsp_env.make(game_id)
    env.reset(seed=0)
    for agent in env.agent_iter(max_iter=20):
        _, _, terminated, truncated, _ = env.last()
        env.step(None if terminated or truncated else "Describe a quiet harbour at night in two sentences.")
    assert not env.agents
    assert all(isinstance(value, float) for value in env._cumulative_rewards.values())


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
