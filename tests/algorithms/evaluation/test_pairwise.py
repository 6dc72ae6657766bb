"""The pairwise LLM judge and judge names."""
import pytest

from agents.hf import HFPolicy
from agents.models import tiny_model
from algorithms.evaluation.pairwise import PairwiseJudge, ScoreComparer, build_pairwise_judge


@pytest.fixture(scope="module")
def policy():
    policy = HFPolicy(*tiny_model(seed=0))
    yield policy
    policy.close()


def test_the_pairwise_judge_reads_a_verdict_from_next_token_probabilities(policy):
    judge = PairwiseJudge(policy)
    assert len(set(judge._options.values())) == 3
    preferences = judge.compare_batch([("Say hi.", "Hi!", "Go away."), ("Say hi.", "Go away.", "Hi!")])
    for preference in preferences:
        probabilities = preference.details["probabilities"]
        assert set(probabilities) == {"A", "B", "tie"}
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert preference.score == {"A": 1.0, "B": 0.0, "tie": 0.5}[preference.details["verdict"]]
    assert judge.compare_batch([("Say hi.", "Hi!", "Go away.")])[0] == preferences[0]  # deterministic


def test_judge_names(policy):
    assert isinstance(build_pairwise_judge("pairwise", policy), PairwiseJudge)
    rubric = build_pairwise_judge("rubric", policy, tie_margin=0.1)
    assert isinstance(rubric, ScoreComparer) and not rubric.order_matters and rubric.tie_margin == 0.1
    with pytest.raises(ValueError):
        build_pairwise_judge("none", policy)
    with pytest.raises(ValueError):
        build_pairwise_judge("pairwise", None)
