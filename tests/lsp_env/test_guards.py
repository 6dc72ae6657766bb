"""Reward-hacking guards: each fires on its hack and not on normal play; penalties and trigger counts."""
import pytest

import lsp_env
from agents.judges import FunctionJudge
from algorithms.collector import Episode
from lsp_env.guards import CodeAnswer, DegenerateQuery, LengthControl, make_guards, trigger_counts

QUERY = "Explain why the sky looks blue during the day but red at sunset."
ANSWER = "Sunlight scatters off air molecules; blue light scatters most. At sunset light crosses more air."
CODE = "```python\ndef sky():\n    return 'blue'\nprint(sky())\n```"


@pytest.mark.parametrize("query, reason", [
    ("help " * 40, "repetition"),
    ("Tell me tell me tell me tell me tell me tell me tell me about cats", "repetition"),
    ("ababababababababababababab what", "repetition"),
    ("%%% 1234 5678 ### @@@ !!! 42", "not language"),
    ("", "not language"),
    ("Summarise this text: [insert text here]", "template"),
    ("Answer the question: <your question>", "template"),
])
def test_degenerate_queries_are_caught(query, reason):
    assert reason in DegenerateQuery().reason(query)


@pytest.mark.parametrize("query", [QUERY, "What is 12 * 7? Show your steps.", "Écris un poème sur la mer.",
                                   "Translate 'good morning' into Japanese, please.",
                                   "Fill in the blank: the capital of France is ____.",
                                   "What does this print? name = 'Ada'; print(f'{name}!')",
                                   "Continue the story: once upon a time..."])
def test_normal_queries_pass(query):
    assert DegenerateQuery().reason(query) is None


def test_empty_template_fill_is_caught():
    template = "Question: <question>\nContext: <context>"
    guard = DegenerateQuery()
    assert guard.reason("Question: \nContext: ", template) == "template not filled in"
    assert guard.reason("Question: <question>\nContext: Home pets and their habits", template) is not None
    assert guard.reason("Write a poem about {topic} in a sad style.", "Write a poem about {topic} in {style}.")
    assert guard.reason("Question: Why do cats purr so much?\nContext: Home pets and their habits", template) is None


def test_code_answers_to_non_code_queries_are_caught():
    guard = CodeAnswer()
    assert guard.check(QUERY, CODE).role == "solver"
    assert guard.check(QUERY, "import math\nprint(math.pi)") is not None
    assert guard.check(QUERY, ANSWER) is None
    assert guard.check("Write a Python function that returns 'blue'.", CODE) is None
    assert guard.check(QUERY, '```json\n{"colour": "blue"}\n```') is None


def test_length_control_scales_with_the_excess():
    guard = LengthControl(max_words=10, penalty=0.5)
    assert guard.check(QUERY, "word " * 10) is None
    assert guard.check(QUERY, "word " * 15).penalty == pytest.approx(0.25)
    assert guard.check(QUERY, "word " * 100).penalty == pytest.approx(0.5)


def test_make_guards_by_name_and_object():
    custom = LengthControl(max_words=5)
    assert [g.name for g in make_guards(["code_answer", custom])] == ["code_answer", "length"]
    with pytest.raises(ValueError, match="unknown guard"):
        make_guards(["nope"])


def lsp(**kwargs):
    return lsp_env.make("LanguageSelfPlay-v0", judge=FunctionJudge(lambda q, a: 0.75), **kwargs)


def test_guards_are_on_by_default_in_language_self_play_and_lower_the_right_reward():
    env = lsp()
    assert [g.name for g in env.guards] == ["length", "degenerate_query", "code_answer"]
    env.reset()
    env.step(QUERY)
    env.step(CODE)
    assert env.rewards == {"challenger": -0.75, "solver": 0.75 - 1.0}
    assert env.infos["solver"]["guards"]["code_answer"]["role"] == "solver"
    env.reset()
    env.step("spam " * 50)
    env.step(ANSWER)
    assert env.rewards == {"challenger": -0.75 - 1.0, "solver": 0.75}
    assert "degenerate_query" in env.infos["challenger"]["guards"]


def test_guards_can_be_turned_off():
    env = lsp(guards=[])
    env.reset()
    env.step("spam " * 50)
    env.step(CODE)
    assert env.rewards == {"challenger": -0.75, "solver": 0.75}
    assert env.infos["solver"]["guards"] == {}


def test_guards_work_in_other_games():
    env = lsp_env.make("ArithmeticSelfPlay-v0", guards=["length"])
    env.reset()
    env.step("1 + 1")
    env.step("2 " * 400)
    assert env.rewards["solver"] == pytest.approx(1.0 - 0.5 * (400 - 300) / 300)


def test_trigger_counts_count_queries_once_and_answers_per_episode():
    challenger = {"degenerate_query": {"role": "challenger", "penalty": 1.0, "reason": "repetition"}}
    solver = {"code_answer": {"role": "solver", "penalty": 1.0, "reason": "code"}}
    episodes = [Episode(0, infos={"challenger": {"guards": {**challenger, **solver}}, "solver": {"guards": challenger}}),
                Episode(0, infos={"challenger": {"guards": {**challenger, **solver}}}),
                Episode(1, infos={"challenger": {"guards": {}}})]
    assert trigger_counts(episodes, ["length"]) == {
        "guards/code_answer": 2, "guards/degenerate_query": 1, "guards/length": 0}
