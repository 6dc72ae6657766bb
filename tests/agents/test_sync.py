"""Verified weight sync (`agents.sync`) on tiny random models with the hf engine.

The vllm and openai engines' syncs are tested in their own files, on SmolLM2.
"""
import threading
import time

import pytest
import torch

from agents.hf import HFPolicy
from agents.models import tiny_model
from agents.sync import DEFAULT_TOLERANCE, WeightSync, WeightSyncError, WeightSyncTimeout


@pytest.fixture
def trainer_model():
    return tiny_model(seed=0)


class SlowPolicy(HFPolicy):
    """An engine whose weight update blocks until `release` is set (a hung engine)."""

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer, max_wait_s=0.0)
        self.release = threading.Event()

    def load_state_dict(self, state_dict):
        self.release.wait()


class FailingPolicy(HFPolicy):
    def load_state_dict(self, state_dict):
        raise RuntimeError("engine exploded")


def test_sync_into_a_shared_model_reports_a_zero_gap(trainer_model):
    model, tokenizer = trainer_model
    policy = FailingPolicy(model, tokenizer, max_wait_s=0.0)  # shares the model, so nothing is pushed
    sync = WeightSync(policy, model, tokenizer)
    assert sync.tolerance == DEFAULT_TOLERANCE[torch.float32] == 0.05
    report = sync()
    policy.close()
    assert report.max_abs_diff < 1e-4 and report.mean_abs_diff <= report.max_abs_diff
    assert report.push_s >= 0 and report.verify_s > 0 and report.total_s == report.push_s + report.verify_s


def test_sync_into_a_separate_engine_copies_the_new_weights(trainer_model):
    model, tokenizer = trainer_model
    engine_model, _ = tiny_model(seed=0)
    policy = HFPolicy(engine_model, tokenizer, max_wait_s=0.0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    sync = WeightSync(policy, model, tokenizer)
    with pytest.raises(WeightSyncError):
        sync(push=False)  # the engine still has the old weights
    assert sync().max_abs_diff < 1e-4
    assert torch.equal(engine_model.model.embed_tokens.weight, model.model.embed_tokens.weight)
    policy.close()


def test_an_engine_with_other_weights_fails_verification_with_a_clear_error(trainer_model):
    model, tokenizer = trainer_model
    policy = HFPolicy(tiny_model(seed=1)[0], tokenizer, max_wait_s=0.0)
    sync = WeightSync(policy, model, tokenizer)
    with pytest.raises(WeightSyncError, match=r"log-probs differ from the trainer's by up to .* tolerance 0.05"):
        sync(push=False)
    loose = WeightSync(policy, model, tokenizer, tolerance=1e6)
    assert loose(push=False).max_abs_diff > 0.05
    policy.close()


def test_a_hung_engine_raises_within_the_timeout(trainer_model):
    model, tokenizer = trainer_model
    policy = SlowPolicy(tiny_model(seed=0)[0], tokenizer)  # its own copy: an engine sharing the model gets no push
    sync = WeightSync(policy, model, tokenizer, timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(WeightSyncTimeout, match=r"pushing the weights into the hf engine did not finish within 0.5 s"):
        sync()
    assert time.monotonic() - start < 2.0
    policy.release.set()
    policy.close()


def test_an_engine_error_is_raised_to_the_trainer(trainer_model):
    model, tokenizer = trainer_model
    policy = FailingPolicy(tiny_model(seed=0)[0], tokenizer)
    with pytest.raises(RuntimeError, match="engine exploded"):
        WeightSync(policy, model, tokenizer)()
    policy.close()


def test_probe_log_probs_are_the_trainers_and_leave_its_mode_alone(trainer_model):
    model, tokenizer = trainer_model
    policy = HFPolicy(model, tokenizer, max_wait_s=0.0)
    sync = WeightSync(policy, model, tokenizer)
    model.train()
    trainer = sync.trainer_log_probs()
    assert model.training
    engine = policy.score(sync.prompts, sync.completions)
    for mine, theirs, completion in zip(trainer, engine, sync.completions):
        assert len(mine) == len(completion) and mine.tolist() == pytest.approx(theirs, abs=1e-4)
    assert all(completion[-1] == tokenizer.eos_token_id for completion in sync.completions)
    policy.close()


def test_the_tolerance_is_the_bfloat16_one_when_the_engine_computes_in_bfloat16(trainer_model):
    """A float32 trainer whose engine samples in bfloat16 (vLLM under autocast) gets the bfloat16 tolerance."""
    model, tokenizer = trainer_model
    engine = HFPolicy(model, tokenizer, max_wait_s=0.0)
    assert WeightSync(engine, model, tokenizer).tolerance == DEFAULT_TOLERANCE[torch.float32]
    engine.dtype = torch.bfloat16
    assert WeightSync(engine, model, tokenizer).tolerance == DEFAULT_TOLERANCE[torch.bfloat16]
