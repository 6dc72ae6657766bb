"""The pairwise LLM judge and judge names."""
import pytest
import torch

from agents.hf import HFPolicy
from agents.models import tiny_model
from evaluation.pairwise import (VERDICTS, PairwiseJudge, ScoreComparer, build_pairwise_judge,
                                 calibrate_logprobs)


@pytest.fixture(scope="module")
def policy():
    policy = HFPolicy(*tiny_model(seed=0))
    yield policy
    policy.close()


def test_the_pairwise_judge_reads_a_verdict_from_next_token_probabilities(policy):
    judge = PairwiseJudge(policy, calibrate=False)
    assert len(set(judge._options.values())) == 3
    preferences = judge.compare_batch([("Say hi.", "Hi!", "Go away."), ("Say hi.", "Go away.", "Hi!")])
    for preference in preferences:
        probabilities = preference.details["probabilities"]
        assert set(probabilities) == {"A", "B", "tie"}
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert preference.score == {"A": 1.0, "B": 0.0, "tie": 0.5}[preference.details["verdict"]]
    assert judge.compare_batch([("Say hi.", "Hi!", "Go away.")])[0] == preferences[0]  # deterministic


def test_calibration_removes_a_position_bias_and_keeps_the_preference():
    # A judge that adds +3 to "A" whatever it reads, on top of a real preference for the better answer.
    preference = torch.tensor([1.0, -1.0, 1.0, -1.0])  # rows: (good, bad), (bad, good), twice
    logprobs = torch.stack([3 + preference, -preference, torch.full((4,), -1.0)], dim=1).log_softmax(-1)
    raw = [list(VERDICTS)[i] for i in logprobs.argmax(-1).tolist()]
    calibrated = [list(VERDICTS)[i] for i in calibrate_logprobs(logprobs).argmax(-1).tolist()]
    assert raw == ["A", "A", "A", "A"]
    assert calibrated == ["A", "B", "A", "B"]


def test_calibrated_verdicts_are_never_all_the_same_position(policy):
    pairs = [("Say hi.", "Hi!", "Go away."), ("Name a colour.", "Blue.", "Seven."), ("Add 2 and 2.", "4", "22")]
    triples = [t for (x, a, b) in pairs for t in ((x, a, b), (x, b, a))]
    verdicts = [p.details["verdict"] for p in PairwiseJudge(policy).compare_batch(triples)]
    assert len(set(verdicts)) > 1, verdicts


def test_judge_names(policy):
    assert isinstance(build_pairwise_judge("pairwise", policy), PairwiseJudge)
    rubric = build_pairwise_judge("rubric", policy, tie_margin=0.1)
    assert isinstance(rubric, ScoreComparer) and not rubric.order_matters and rubric.tie_margin == 0.1
    with pytest.raises(ValueError):
        build_pairwise_judge("none", policy)
    with pytest.raises(ValueError):
        build_pairwise_judge("pairwise", None)
