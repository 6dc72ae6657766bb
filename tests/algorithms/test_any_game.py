"""Any PettingZoo AECEnv with text actions trains: no TextGame, no branch point, no fork(), no deep copy."""
import json
import string
import threading

import pytest
from gymnasium.spaces import Text
from pettingzoo import AECEnv
from pettingzoo.test import api_test
from pettingzoo.utils.agent_selector import AgentSelector

import lsp_env
from algorithms.collector import Collector
from lsp.cli import main


ACTION = Text(max_length=4096, charset=string.printable)
OBSERVATION = Text(max_length=3 * 4096, charset=string.printable)


class Relay(AECEnv):
    """Two writers take turns once each; each is rewarded by the share of spaces in its own text."""

    metadata = {"name": "relay_v0", "is_parallelizable": False, "render_modes": []}

    def __init__(self):
        self.possible_agents = ["first", "second"]
        self.render_mode = None

    def observation_space(self, agent):
        return OBSERVATION

    def action_space(self, agent):
        return ACTION

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {agent: {} for agent in self.agents}
        self.history = []
        self._selector = AgentSelector(self.agents)
        self.agent_selection = self._selector.next()

    def observe(self, agent):  # a str with a dtype, which PettingZoo's api_test asks of observations
        return lsp_env.TextObservation("Write a sentence." + "".join(f"\n{text}" for text in self.history))

    def step(self, action):
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self.history.append(str(action))
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self.rewards[agent] = str(action).count(" ") / max(len(str(action)), 1)
        if len(self.history) == 2:
            self.terminations = dict.fromkeys(self.agents, True)
        self.agent_selection = self._selector.next()
        self._accumulate_rewards()


class BranchingRelay(Relay):
    """The same game with a branch point, holding a lock so that it cannot be deep-copied."""

    branch_agent = "second"

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


lsp_env.register("Relay-v0", Relay, description="a raw AECEnv")
lsp_env.register("BranchingRelay-v0", BranchingRelay, description="a raw AECEnv with a branch point")


class Echo:
    """A player that answers with a fixed text per call, counting calls."""

    def __init__(self):
        self.calls = 0

    def act(self, observation):
        self.calls += 1
        return f"words {'and ' * (self.calls % 3)}more"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("game", ["Relay-v0", "BranchingRelay-v0"])
def test_the_raw_games_pass_pettingzoos_api_test(game):
    api_test(lsp_env.make(game), num_cycles=5)


def test_a_game_without_a_branch_point_plays_whole_episodes_per_group():
    collector = Collector(lambda: lsp_env.make("Relay-v0"), {"first": Echo(), "second": Echo()}, group_size=3)
    rollout = collector.collect(num_groups=2, seed=5)
    groups = rollout.groups()
    assert sorted(groups) == [0, 1] and all(len(episodes) == 3 for episodes in groups.values())
    assert all(turn.branch for episode in rollout.episodes for turn in episode.turns)
    for episode in rollout.episodes:
        assert [turn.role for turn in episode.turns] == ["first", "second"]
        for turn in episode.turns:  # rewards come through env.last()
            assert episode.returns[turn.role] == pytest.approx(turn.text.count(" ") / len(turn.text))


def test_a_game_that_cannot_be_copied_is_replayed_at_the_branch_point():
    collector = Collector(lambda: lsp_env.make("BranchingRelay-v0"), {"first": Echo(), "second": Echo()},
                          group_size=3)
    rollout = collector.collect(num_groups=1, seed=0)
    (episodes,) = rollout.groups().values()
    assert len(episodes) == 3 and collector._deepcopy_fails
    firsts = {id(episode.turns[0]) for episode in episodes}
    assert len(firsts) == 1  # one shared first move
    assert len({episode.turns[1].text for episode in episodes}) == 3  # three answers at the branch point
    for episode in episodes:
        assert episode.returns["second"] == pytest.approx(episode.turns[1].text.count(" ") / len(episode.turns[1].text))


@pytest.mark.parametrize("game", ["Relay-v0", "BranchingRelay-v0"])
@pytest.mark.parametrize("algorithm", ["lsp-zero", "rae"])
def test_a_raw_aecenv_trains_one_iteration(game, algorithm, tiny_path, tmp_path):
    code = main(["train", "--game", game, "--algorithm", algorithm, "--engine", "hf", "--model", tiny_path,
                 "--num_queries", "2", "--group_size", "2", "--batch_size", "1", "--grad_accumulation", "2",
                 "--max_new_tokens", "8", "--iterations", "1", "--eval_suite", "null", "--output", str(tmp_path)])
    assert code == 0
    (run_dir,) = tmp_path.iterdir()
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["iteration"] == 1 and "reward/first" in record and "reward/second" in record
