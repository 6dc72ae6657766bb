"""Verifiable accuracy: held-out challenger moves, fixed by seed and model, answered by any solver."""
import pytest

from agents.hf import HFPolicy
from agents.models import tiny_model
from agents.policy import Completion, Policy, SamplingParams
from evaluation.verifiable import (HeldoutSet, accuracy, is_verifiable, make_heldout_set,
                                   verifiable_games, verified_scores)
from lsp_env import make_with_judges


class ScriptedPolicy(Policy):
    """Answers every chat with the next of `texts` (cycled)."""

    def __init__(self, texts, tokenizer=None):
        self.texts, self.calls = list(texts), 0
        self._tokenizer = tokenizer

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, chat, n=1, params=SamplingParams()):
        text = self.texts[self.calls % len(self.texts)]
        self.calls += 1
        return [Completion(text, [], [], []) for _ in range(n)]

    def generate_batch(self, chats, n=1, params=SamplingParams()):
        return [self.generate(chat, n, params) for chat in chats]

    def score(self, prompt_ids, completion_ids):
        raise NotImplementedError

    def load_state_dict(self, state_dict):
        raise NotImplementedError


def arithmetic():
    return make_with_judges("ArithmeticSelfPlay-v0", {}, {})


def test_games_with_programmatic_rewards_are_verifiable():
    assert is_verifiable("ArithmeticSelfPlay-v0") and is_verifiable("ConstrainedInstructions-v0")
    assert not is_verifiable("LanguageSelfPlay-v0") and not is_verifiable("TicTacToe-v0")
    assert "ArithmeticSelfPlay-v0" in verifiable_games()


def test_invalid_challenger_moves_are_skipped_and_answers_are_verified(tmp_path):
    writer = ScriptedPolicy(["2 + 3", "not arithmetic", "6 * 7", "10 / 4"])
    heldout = make_heldout_set("ArithmeticSelfPlay-v0", arithmetic, writer, "scripted", size=3, seed=0,
                               params=SamplingParams())
    assert [item["challenger"] for item in heldout.items] == ["2 + 3", "6 * 7", "10 / 4"]
    assert "6 * 7" in heldout.items[1]["query"]
    loaded = HeldoutSet.load(heldout.save(tmp_path / "heldout.json"))
    assert loaded == heldout

    solver = ScriptedPolicy(["The answer is 5.", "42", "It is 2.25"])
    answers = verified_scores(arithmetic, solver, loaded, SamplingParams(), sampling_seed=0)
    assert [a["score"] for a in answers] == [1.0, 1.0, 0.0]
    result = accuracy([a["score"] for a in answers], resamples=500)
    assert result.accuracy == pytest.approx(2 / 3) and result.ci_low <= 2 / 3 <= result.ci_high


def test_a_writer_with_too_few_valid_moves_is_an_error():
    with pytest.raises(ValueError, match="valid"):
        make_heldout_set("ArithmeticSelfPlay-v0", arithmetic, ScriptedPolicy(["hello"]), "scripted", size=2, seed=0,
                         params=SamplingParams(), max_rounds=2)


def test_the_heldout_set_is_the_same_for_the_same_seed_and_model():
    make_env = lambda: make_with_judges("ConstrainedInstructions-v0", {}, {})  # noqa: E731
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    policy = HFPolicy(*tiny_model(seed=0))
    first = make_heldout_set("ConstrainedInstructions-v0", make_env, policy, "tiny", size=4, seed=3, params=params)
    again = make_heldout_set("ConstrainedInstructions-v0", make_env, policy, "tiny", size=4, seed=3, params=params)
    other = make_heldout_set("ConstrainedInstructions-v0", make_env, policy, "tiny", size=4, seed=4, params=params)
    assert first == again and first.items != other.items
    answers = verified_scores(make_env, policy, first, SamplingParams(8, 0.0), sampling_seed=0)
    assert all(0.0 <= a["score"] <= 1.0 for a in answers) and len(answers) == 4
    policy.close()


def test_the_verified_score_is_strict_when_the_game_gives_partial_credit():
    make = lambda: make_with_judges("ConstrainedInstructions-v0", {}, {"partial_credit": True})  # noqa: E731
    writer = ScriptedPolicy(["Describe a quiet harbor at night."])
    heldout = make_heldout_set("ConstrainedInstructions-v0", make, writer, "scripted", size=4, seed=0,
                               params=SamplingParams())
    answer = "A quiet harbor, boats asleep, 3 lights. [name] *calm*"
    scores = [a["score"] for a in verified_scores(make, ScriptedPolicy([answer]), heldout, SamplingParams(), 0)]
    strict, partial = [], []
    for item in heldout.items:
        env = make()
        env.reset(seed=item["seed"])
        env.step(item["challenger"])
        env.step(answer)
        strict.append(env.infos["solver"]["passed"])
        partial.append(env.infos["solver"]["reward"])
    assert scores == strict and any(p > s for p, s in zip(partial, strict))  # near misses credited in training only
