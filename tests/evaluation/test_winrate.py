"""Win-rate arithmetic (ties, both orders, identical answers) and the bootstrap interval."""
import numpy as np
import pytest

from agents.judges import FunctionJudge
from evaluation.pairwise import Preference, ScoreComparer
from evaluation.winrate import bootstrap_ci, compare, summarize


class ScriptedJudge:
    """A pairwise judge from a function of (first, second) -> first's score; records what it saw."""

    order_matters = True
    name = "scripted"

    def __init__(self, verdict):
        self.verdict = verdict
        self.seen = []

    def compare_batch(self, triples):
        self.seen += triples
        return [Preference(self.verdict(first, second)) for _, first, second in triples]


def test_both_orders_are_judged_and_position_bias_cancels():
    judge = ScriptedJudge(lambda first, second: 1.0)  # always prefers whatever comes first
    comparisons = compare(["q1", "q2"], ["c1", "c2"], ["b1", "b2"], judge)
    assert judge.seen == [("q1", "c1", "b1"), ("q1", "b1", "c1"), ("q2", "c2", "b2"), ("q2", "b2", "c2")]
    result = summarize(comparisons)
    assert (result.wins, result.ties, result.losses, result.judgements) == (2, 0, 2, 4)
    assert result.win_rate == 0.5
    assert result.order_agreement == 0.0


def test_a_consistent_judge_gives_full_wins_and_losses():
    judge = ScriptedJudge(lambda first, second: float(first.startswith("good")))
    result = summarize(compare(["q"] * 4, ["good", "good", "bad", "good"], ["bad", "bad", "good", "bad"], judge))
    assert (result.wins, result.ties, result.losses) == (6, 0, 2)
    assert result.win_rate == 0.75
    assert result.order_agreement == 1.0


def test_ties_count_half():
    verdicts = {("win", "x"): 1.0, ("x", "win"): 0.0, ("tie", "x"): 0.5, ("x", "tie"): 0.5,
                ("loss", "x"): 0.0, ("x", "loss"): 1.0}
    judge = ScriptedJudge(lambda first, second: verdicts[(first, second)])
    result = summarize(compare(["a", "b", "c"], ["win", "tie", "loss"], ["x", "x", "x"], judge))
    assert (result.wins, result.ties, result.losses) == (2, 2, 2)
    assert result.win_rate == pytest.approx(0.5)


def test_disagreeing_orders_make_a_tie_for_that_prompt():
    judge = ScriptedJudge(lambda first, second: 1.0 if first == "c" else 0.5)  # c first: win; c second: tie
    [item] = compare(["q"], ["c"], ["b"], judge)
    assert item.scores == [1.0, 0.5] and item.score == 0.75


def test_identical_answers_are_ties_without_a_judge_call():
    judge = ScriptedJudge(lambda first, second: pytest.fail("the judge was called"))
    result = summarize(compare(["q1", "q2"], ["same", "same too"], ["same", "same too"], judge))
    assert (result.ties, result.win_rate, result.ci_low, result.ci_high) == (4, 0.5, 0.5, 0.5)


def test_score_judges_compare_once_with_a_tie_margin():
    comparer = ScoreComparer(FunctionJudge(lambda query, answer: len(answer)), tie_margin=1)
    comparisons = compare(["q"] * 3, ["long answer", "ab", "a"], ["short", "abc", "abcdefgh"], comparer)
    assert [item.scores for item in comparisons] == [[1.0], [0.5], [0.0]]
    result = summarize(comparisons)
    assert (result.wins, result.ties, result.losses, result.order_agreement) == (1, 1, 1, None)
    assert comparisons[0].details == [{"order": "candidate first", "scores": [11.0, 5.0]}]


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_prompts():
    rng = np.random.default_rng(1)
    small, large = rng.binomial(1, 0.7, 40), rng.binomial(1, 0.7, 1000)
    for values in (small, large):
        low, high = bootstrap_ci(values, resamples=2000)
        assert low <= values.mean() <= high
    assert np.subtract(*bootstrap_ci(large, resamples=2000)[::-1]) < np.subtract(*bootstrap_ci(small, resamples=2000)[::-1])
    assert bootstrap_ci(small, confidence=0.5)[0] >= bootstrap_ci(small, confidence=0.95)[0]


def test_bootstrap_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    truth, trials = 0.3, 300
    covered = 0
    for trial in range(trials):
        values = rng.choice([0.0, 0.5, 1.0], size=80, p=[0.6, 0.2, 0.2])  # mean 0.3, ties included
        low, high = bootstrap_ci(values, resamples=1000, seed=trial)
        covered += low <= truth <= high
    assert 0.88 <= covered / trials <= 0.99


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        compare(["q"], ["a", "b"], ["c"], ScriptedJudge(lambda f, s: 1.0))
