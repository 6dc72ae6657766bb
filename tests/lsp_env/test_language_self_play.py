"""The LanguageSelfPlay game: flow, rewards, infos, invalid moves, fork, render, prompts."""
import subprocess
import sys

import numpy as np
import pytest

import lsp_env
from agents.judges import FunctionJudge, Judge, Judgement
from lsp_env.games.language_self_play import LanguageSelfPlay
from lsp_env.prompts import DEFAULT_TASK, challenger_prompt
from lsp_env.text_game import TextObservation

QUERY = "What is 2 + 2? Explain briefly."
ANSWER = "2 + 2 = 4, since adding two to two gives four."


class RecordingJudge(Judge):
    """Scores 0.25 when the answer says 4, else -0.5, and records every call."""

    name = "recording"

    def __init__(self, text="four it is"):
        self.calls = []
        self.text = text

    def judge_batch(self, pairs):
        self.calls.extend(pairs)
        return [Judgement(score=0.25 if "4" in answer else -0.5, text=self.text) for _, answer in pairs]


@pytest.fixture
def judge():
    return RecordingJudge()


def play(env, *actions):
    env.reset(seed=0)
    for action in actions:
        env.step(action)


def test_flow_and_observations(judge):
    env = LanguageSelfPlay(judge)
    env.reset()
    assert env.agent_selection == "challenger"
    observation = env.observe("challenger")
    assert isinstance(observation, TextObservation) and observation.dtype == env.observation_space("challenger").dtype
    assert observation == env.challenger_prompt == challenger_prompt(DEFAULT_TASK)
    assert env.observe("solver") == ""
    env.step(QUERY)
    assert env.agent_selection == "solver"
    assert env.observe("solver") == QUERY
    assert env.rewards == {"challenger": 0.0, "solver": 0.0}
    env.step(ANSWER)
    assert judge.calls == [(QUERY, ANSWER)]
    assert all(env.terminations.values())
    for _ in env.agent_iter():
        env.step(None)
    assert env.agents == []


def test_lsp_zero_rewards(judge):
    env = LanguageSelfPlay(judge)
    play(env, QUERY, ANSWER)
    assert env.rewards == {"challenger": -0.25, "solver": 0.25}
    play(env, QUERY, "five")
    assert env.rewards == {"challenger": 0.5, "solver": -0.5}
    assert env.agent_selection == "challenger" and env.last()[1] == 0.5  # last(): the cumulative reward


def test_lsp_rewards_with_quality_judge(judge):
    quality = FunctionJudge(lambda query, answer: 3.0, name="quality")
    env = LanguageSelfPlay(judge, quality_judge=quality)
    play(env, QUERY, ANSWER)
    assert env.rewards == {"challenger": 2.75, "solver": 3.25}
    env.step(None)
    assert env.agent_selection == "solver" and env.last()[1] == 3.25


def test_info_breakdown(judge):
    quality = FunctionJudge(lambda query, answer: 2.0)
    env = LanguageSelfPlay(judge, quality_judge=quality)
    play(env, QUERY)
    assert env.infos == {"challenger": {"query": QUERY}, "solver": {"query": QUERY}}
    env.step(ANSWER)
    expected = {
        "query": QUERY, "answer": ANSWER, "reward": 0.25, "quality": 2.0,
        "judge_text": "four it is", "judge_parsed": True, "quality_text": None, "quality_parsed": True,
        "judged_truncated": False, "guards": {},
    }
    assert env.infos == {"challenger": expected, "solver": expected}


def test_info_without_quality_judge(judge):
    env = LanguageSelfPlay(judge)
    play(env, QUERY, ANSWER)
    assert env.infos["solver"]["quality"] is None and env.infos["solver"]["quality_parsed"] is None


INVALID_ACTIONS = [
    pytest.param(123, "expected text (str), got int", id="int"),
    pytest.param(None, "expected text (str), got NoneType", id="none"),
    pytest.param("", "empty or whitespace only", id="empty"),
    pytest.param(" \n\t\u3000", "empty or whitespace only", id="whitespace"),
    pytest.param("x" * 11, "11 characters, over the limit of 10", id="too-long"),
    pytest.param(b"\xff\xfeabc", "bytes are not valid UTF-8", id="invalid-utf8-bytes"),
    pytest.param("abc\ud800", "lone surrogates", id="lone-surrogate"),
    pytest.param("abc\x00", "outside the action space", id="control-character"),
]


@pytest.mark.parametrize("action, reason", INVALID_ACTIONS)
def test_invalid_query_ends_episode_without_judging(judge, action, reason):
    env = LanguageSelfPlay(judge, max_query_chars=10, invalid_move_penalty=-2.0)
    play(env, action)
    assert env.rewards == {"challenger": -2.0, "solver": 0.0}
    assert all(env.terminations.values()) and not any(env.truncations.values())
    assert reason in env.infos["challenger"]["invalid_move"]
    assert "invalid_move" not in env.infos["solver"]
    assert judge.calls == [] and env.query is None
    for _ in env.agent_iter():
        env.step(None)
    assert env.agents == []


@pytest.mark.parametrize("action, reason", INVALID_ACTIONS)
def test_invalid_answer_penalises_solver_only(judge, action, reason):
    env = LanguageSelfPlay(judge, max_answer_chars=10)
    play(env, "Hi?", action)
    assert env.rewards == {"challenger": 0.0, "solver": -1.0}
    assert reason in env.infos["solver"]["invalid_move"]
    assert judge.calls == [] and env.answer is None


def test_utf8_bytes_and_numpy_strings_are_text(judge):
    env = LanguageSelfPlay(judge)
    play(env, "Qu'est-ce que 2 + 2 ? ✓".encode(), np.str_(ANSWER))
    assert judge.calls == [("Qu'est-ce que 2 + 2 ? ✓", ANSWER)]
    assert type(judge.calls[0][0]) is str and type(judge.calls[0][1]) is str


def test_finished_agent_must_pass_none(judge):
    env = LanguageSelfPlay(judge)
    play(env, QUERY, ANSWER)
    with pytest.raises(ValueError, match="only valid action is None"):
        env.step("more")


def test_fork_gives_independent_copies_sharing_the_judge(judge):
    env = LanguageSelfPlay(judge, quality_judge=FunctionJudge(lambda query, answer: 1.0))
    play(env, QUERY)
    assert env.agent_selection == env.branch_agent == "solver"
    forks = [env.fork() for _ in range(3)]
    for fork, answer in zip(forks, ["4", "five", "4!"]):
        assert fork.judge is env.judge and fork.quality_judge is env.quality_judge
        assert fork.action_space("solver") is env.action_space("solver")
        fork.step(answer)
    assert [fork.rewards["solver"] for fork in forks] == [1.25, 0.5, 1.25]
    assert [fork.infos["solver"]["answer"] for fork in forks] == ["4", "five", "4!"]
    assert env.agent_selection == "solver" and env.answer is None and not any(env.terminations.values())
    assert env.infos["solver"] == {"query": QUERY} and len(env.transcript) == 1
    env.step(ANSWER)
    assert env.rewards["solver"] == 1.25 and forks[1].rewards["solver"] == 0.5


def test_render_ansi_transcript(judge):
    env = LanguageSelfPlay(judge, render_mode="ansi")
    play(env, QUERY, ANSWER)
    transcript = env.render()
    assert QUERY in transcript and ANSWER in transcript
    assert transcript.index(QUERY) < transcript.index(ANSWER) < transcript.index("reward 0.250")
    assert "challenger -0.250, solver +0.250" in transcript


def test_render_human_prints_each_turn(judge, capsys):
    env = LanguageSelfPlay(judge, render_mode="human")
    play(env, QUERY)
    assert capsys.readouterr().out == f"[challenger]\n{QUERY}\n"
    env.step(ANSWER)
    printed = capsys.readouterr().out
    assert ANSWER in printed and QUERY not in printed


def test_render_mode_is_checked(judge):
    with pytest.raises(ValueError, match="render_mode"):
        LanguageSelfPlay(judge, render_mode="rgb_array")


def test_without_a_judge_the_game_gets_the_embedded_self_judge_unloaded():
    program = ("import sys, lsp_env\n"
               "from agents import default_judge\n"
               "env = lsp_env.make('LanguageSelfPlay-v0')\n"
               "env.reset(seed=0)\n"
               "env.step('Explain tides.')\n"  # the challenger's move needs no judgement
               "assert isinstance(env.judge, default_judge.EmbeddedJudge)\n"
               "assert not default_judge.is_loaded() and 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", program], check=True, timeout=120)
    with pytest.raises(TypeError, match="FunctionJudge"):
        LanguageSelfPlay(lambda query, answer: 1.0)


def test_task_template_and_prompt_override(judge):
    env = LanguageSelfPlay(judge, task="solving grade-school maths problems", template="Problem: <problem>")
    assert "solving grade-school maths problems" in env.challenger_prompt
    assert "Problem: <problem>" in env.challenger_prompt
    assert LanguageSelfPlay(judge, challenger_prompt="Ask me anything.").challenger_prompt == "Ask me anything."
    long_prompt = "Ask. " * 3000
    env = LanguageSelfPlay(judge, challenger_prompt=long_prompt, max_query_chars=100)
    assert env.observation_space("challenger").contains(env.observe("challenger"))
    with pytest.raises(ValueError, match="challenger prompt"):
        LanguageSelfPlay(judge, challenger_prompt="bad \x07 bell")


def test_challenger_prompt_parts():
    plain = challenger_prompt("translating English to French")
    with_template = challenger_prompt("translating English to French", template="Translate: <sentence>")
    assert "translating English to French" in plain
    assert "template" not in plain and "Translate: <sentence>" in with_template
    assert plain.endswith(with_template[-40:])  # the rules come last either way
    assert challenger_prompt() == challenger_prompt(DEFAULT_TASK, "  ")


def test_metadata():
    metadata = LanguageSelfPlay.metadata
    assert metadata["name"] == "LanguageSelfPlay-v0" and metadata["roles"] == ["challenger", "solver"]
    assert metadata["reward"] == "judged" and metadata["is_parallelizable"] is False
    assert set(metadata["render_modes"]) == {"human", "ansi"}
