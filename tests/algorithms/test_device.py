"""Device placement, checked on a CPU: every tensor that reaches a model is on the model's device, and every
tensor the step makes is made on the device of what it is computed from.

A CPU has one device, so the checks use PyTorch's `meta` device as a second one:
- a model moved to `meta` must get its inputs on `meta`. Meta tensors hold no values, so a pass stops at the
  first value it reads: with the batch moved to the model, that is a read of a meta tensor (the batch's
  lengths); with the batch left behind, the model's first layer is reached with CPU token ids;
- a step run with `meta` as the default device must never use that default: a tensor made without a device
  lands there, and mixing it with the CPU batch raises."""
import pytest
import torch

import algorithms
from agents.lora import add_lora
from agents.models import tiny_model
from algorithms.base import REF_LOG_PROBS
from algorithms.config import TrainConfig
from algorithms.device import make_optimizer
from algorithms.registration import registry
from algorithms.update import optimizer_step, reference_pass


class Reached(Exception):
    """Raised by the embedding layer's hook: the pass fed the model token ids on `device`."""

    def __init__(self, device):
        self.device = device


def stop_at_embedding(model):
    def hook(module, args):
        raise Reached(args[0].device)

    return model.get_input_embeddings().register_forward_pre_hook(hook)


def assert_moved_to_meta(error: BaseException) -> None:
    """The pass stopped on the model's device: in the model with meta ids, or reading a meta tensor's value."""
    if isinstance(error, Reached):
        assert error.device == torch.device("meta"), f"the model was fed token ids on {error.device}"
    else:
        assert "meta tensor" in str(error), error


def config(rows_per_pass=2, **settings):
    return TrainConfig(num_queries=8, batch_size=4, rows_per_pass=rows_per_pass, autocast=False, **settings)


@pytest.mark.parametrize("lora", [False, True])
def test_the_reference_pass_and_the_training_step_feed_the_model_on_its_device(eight_groups, lora):
    model, batch = eight_groups
    if lora:
        model = add_lora(model, 4, 8, ["q_proj", "v_proj"], "tiny")
    loss = algorithms.make("lsp-zero", model, beta=0.1)
    loss.compute_advantages(batch)
    model.to("meta")
    stop_at_embedding(model)
    with pytest.raises((Reached, RuntimeError, NotImplementedError)) as reference:
        reference_pass(model, batch.clone(), config())
    assert_moved_to_meta(reference.value)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with pytest.raises((Reached, RuntimeError, NotImplementedError)) as step:
        optimizer_step(model, loss, optimizer, batch, groups_per_micro_batch=4, max_grad_norm=1.0, rows_per_pass=2)
    assert_moved_to_meta(step.value)


@pytest.mark.parametrize("name", sorted(registry))
def test_every_algorithms_step_makes_its_tensors_on_the_batchs_device(eight_groups, name):
    model, batch = eight_groups
    loss = algorithms.make(name, model, beta=0.1)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], 1e-3, 0.0)
    before = batch.get(REF_LOG_PROBS).clone()
    with torch.device("meta"):
        reference_pass(model, batch, config())
        loss.compute_advantages(batch)
        losses = optimizer_step(model, loss, optimizer, batch, groups_per_micro_batch=4, max_grad_norm=1.0,
                                rows_per_pass=3)
    assert batch.get(REF_LOG_PROBS).device == torch.device("cpu")
    assert not torch.equal(batch.get(REF_LOG_PROBS), before)  # the reference pass wrote this model's log-probs
    assert all(isinstance(value, float) and value == value for value in losses.values())


def test_adamw_is_fused_on_plain_parameters():
    model, _ = tiny_model(seed=0)
    assert make_optimizer(list(model.parameters()), 1e-3, 0.0).defaults["fused"]
