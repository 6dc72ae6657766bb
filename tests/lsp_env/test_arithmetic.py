"""ArithmeticSelfPlay: the safe evaluator, the answer verifier, invalid challenger moves, rewards."""
from fractions import Fraction

import pytest

import lsp_env
from lsp_env.games.arithmetic import SOLVER_PROMPT, evaluate, format_value, parse_answer, parse_expression
from lsp_env.text_game import InvalidMove


def play(*moves):
    env = lsp_env.make("ArithmeticSelfPlay-v0")
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    return env


@pytest.mark.parametrize("expression, value", [
    ("(17 + 5) * 3 - 2 ** 4", Fraction(50)),
    ("7 / 2", Fraction(7, 2)),
    ("0.1 + 0.2", Fraction(3, 10)),
    ("-7 // 2 + 7 % 3", Fraction(-3)),
    ("2 ** -2", Fraction(1, 4)),
    ("-(3 - 10) * +2", Fraction(14)),
])
def test_evaluate_matches_exact_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression, reason", [
    ("__import__('os').system('true')", "not allowed"),
    ("abs(-3) + 1", "not allowed"),
    ("x + 1", "not allowed"),
    ("[1, 2] * 3", "not allowed"),
    ("1 +", "not a Python expression"),
    ("42", "at least one operation"),
    ("1 / 0", "division by zero"),
    ("5 % (2 - 2)", "division by zero"),
    ("2 ** 0.5", "whole numbers"),
    ("9 ** 9 ** 9", "at most"),
    ("10 ** 60 + 1", "digits"),
    ("99999999 ** 40", "digits"),
    ("True + 1", "not allowed"),
    ("1j * 2", "not allowed"),
    ("+".join(["1"] * 30), "operations"),
    ("1e400 - 1", "finite"),
    ("1e-300 * 2", "digits"),
])
def test_evaluate_rejects_unsafe_or_unbounded_problems(expression, reason):
    with pytest.raises(InvalidMove, match=reason):
        evaluate(expression)


def test_parse_expression_format():
    assert parse_expression("  `3 * (4 + 1)` = ?") == "3 * (4 + 1)"
    assert parse_expression("2 + 2 =") == "2 + 2"
    with pytest.raises(InvalidMove, match="one line"):
        parse_expression("2 + 2\nand more")
    with pytest.raises(InvalidMove, match="longer"):
        parse_expression("1 + " * 100 + "1")


@pytest.mark.parametrize("answer, value", [
    ("50", Fraction(50)), ("The answer is 3.5", Fraction(7, 2)), ("Answer: 7/2", Fraction(7, 2)),
    ("-3", Fraction(-3)), ("1,234", Fraction(1234)), ("first 4 then 5", Fraction(5)),
])
def test_parse_answer_reads_the_last_number(answer, value):
    assert parse_answer(answer) == value


@pytest.mark.parametrize("answer, value", [("no idea", None), ("", None), ("!!!", None), ("3/0", None),
                                           ("x/0", Fraction(0))])  # the last number of "x/0" is 0
def test_parse_answer_without_a_readable_number_is_none(answer, value):
    assert parse_answer(answer) == value


def test_format_value():
    assert [format_value(v) for v in (Fraction(3), Fraction(7, 2), Fraction(-1, 8), Fraction(1, 3))] == [
        "3", "3.5", "-0.125", "1/3"]


def test_right_answer_scores_one_and_the_challenger_minus_one():
    env = play("(3 + 4) * 2 / 8", "So the result is 7/4")
    assert env.rewards == {"challenger": -1.0, "solver": 1.0}
    assert env.infos["solver"]["solution"] == "1.75" and env.infos["solver"]["reward"] == 1.0
    assert env.infos["challenger"]["query"] == "(3 + 4) * 2 / 8"


@pytest.mark.parametrize("answer", ["1.7", "Answer: 2", "1.75 is close to 2"])
def test_wrong_answer_scores_zero(answer):
    env = play("(3 + 4) * 2 / 8", answer)
    assert env.rewards == {"challenger": 0.0, "solver": 0.0}


def test_malformed_answer_scores_zero_and_is_reported():
    env = play("(3 + 4) * 2 / 8", "I cannot compute this.")
    assert env.rewards == {"challenger": 0.0, "solver": 0.0}
    assert env.infos["solver"]["parsed_answer"] is None and "invalid_move" not in env.infos["solver"]


def test_unparseable_problem_is_an_invalid_move_with_the_penalty():
    env = play("What is two plus two?")
    assert all(env.terminations.values())
    assert env.rewards == {"challenger": -1.0, "solver": 0.0}
    assert "not a Python expression" in env.infos["challenger"]["invalid_move"]
    env = lsp_env.make("ArithmeticSelfPlay-v0", invalid_move_penalty=-2.5)
    env.reset()
    env.step("import os")
    assert env.rewards["challenger"] == -2.5


def test_solver_observation_holds_the_expression():
    env = play("1 + 2 * 3")
    assert env.agent_selection == "solver"
    assert env.observe("solver") == SOLVER_PROMPT.format(expression="1 + 2 * 3")
    assert env.observe("challenger") != ""
