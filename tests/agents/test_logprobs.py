"""The trainer's log-probs are those of the distribution the engine sampled from."""
import math

import pytest
import torch

from agents.hf import HFPolicy
from agents.logprobs import completion_log_probs, processed_log_probs
from agents.models import tiny_model
from agents.policy import SamplingParams


def test_processed_log_probs_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
    target = torch.tensor([1])
    raw = processed_log_probs(logits, target)
    assert float(raw) == pytest.approx(1.0 - math.log(sum(math.exp(v) for v in (2, 1, 0, -3))))
    tempered = processed_log_probs(logits, target, SamplingParams(temperature=0.5))
    assert float(tempered) == pytest.approx(2.0 - math.log(sum(math.exp(2 * v) for v in (2, 1, 0, -3))))
    # min_p 0.3 at T=1 keeps tokens with p >= 0.3 * p_max: e^1/e^2 = 0.37 stays, e^0/e^2 = 0.14 goes
    kept = processed_log_probs(logits, target, SamplingParams(min_p=0.3))
    assert float(kept) == pytest.approx(1.0 - math.log(math.exp(2) + math.exp(1)))
    # top_p 0.8: p = [.66, .24, .09, .004]; the first two reach 0.8 only with the second included
    nucleus = processed_log_probs(logits, target, SamplingParams(top_p=0.8))
    assert float(nucleus) == pytest.approx(1.0 - math.log(math.exp(2) + math.exp(1)))
    nucleus = processed_log_probs(logits, torch.tensor([0]), SamplingParams(top_p=0.5))
    assert float(nucleus) == pytest.approx(0.0)  # only the top token is left
    greedy = processed_log_probs(logits, target, SamplingParams(temperature=0.0, top_p=0.1))
    assert float(greedy) == pytest.approx(float(raw))


def test_min_p_keeps_the_set_the_normalised_probabilities_give():
    """The min-p set from the logits alone (p >= min_p * p_max) is the one the log-softmax gives, and with nothing
    cut the result is the tempered log-softmax, gradients included."""
    torch.manual_seed(0)
    logits = torch.randn(64, 4096) * 4
    targets = torch.randint(4096, (64,))
    for min_p in (0.05, 0.1, 0.5):
        logp = logits.log_softmax(-1)
        keep = (logp >= logp.max(-1, keepdim=True).values + math.log(min_p)).scatter(-1, targets[:, None], True)
        expected = logp.gather(-1, targets[:, None]).squeeze(-1) - logp.masked_fill(~keep, float("-inf")).logsumexp(-1)
        torch.testing.assert_close(processed_log_probs(logits, targets, SamplingParams(min_p=min_p)), expected)
    leaf = logits.clone().requires_grad_()
    whole = processed_log_probs(leaf, targets, SamplingParams(temperature=0.7))
    torch.testing.assert_close(whole, (logits / 0.7).log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1))
    whole.sum().backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0

def test_a_target_outside_the_kept_set_stays_finite():
    logits = torch.tensor([[5.0, 0.0, -5.0]])
    value = processed_log_probs(logits, torch.tensor([2]), SamplingParams(min_p=0.5))
    assert torch.isfinite(value)


@pytest.mark.parametrize("params", [SamplingParams(10, 0.7, 0.9), SamplingParams(10, 0.8, 1.0, 0.1),
                                    SamplingParams(10, 1.0, 1.0)])
def test_hf_engine_and_trainer_agree_under_the_sampling_settings(params):
    model, tokenizer = tiny_model(seed=3)
    policy = HFPolicy(model, tokenizer, max_wait_s=0.0)
    torch.manual_seed(0)
    completions = policy.generate([{"role": "user", "content": "Tell me about rivers."}], n=4, params=params)
    policy.close()
    for completion in completions:
        trainer = completion_log_probs(model, completion.prompt_ids, completion.token_ids, params)
        assert trainer == pytest.approx(completion.logprobs, abs=1e-4)
        assert all(v <= 0 for v in completion.logprobs)


def test_pad_rows_right_pads_prompt_and_completion_with_their_masks():
    from agents.logprobs import pad_rows

    tokens, attention, response = pad_rows([[5, 6], [7]], [[8], [9, 10, 11]], pad_id=0)
    assert tokens.tolist() == [[5, 6, 8, 0], [7, 9, 10, 11]]
    assert attention.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert response.tolist() == [[False, False, True, False], [False, True, True, True]]


def test_packed_rows_give_the_padded_log_probs_and_gradients():
    """Rows of different lengths packed into one sequence (position ids restarting per row, no pad tokens) give
    the same log-probs, and the same gradients of a loss over them, as the padded batch."""
    from agents.logprobs import pad_rows, token_log_probs

    model, _ = tiny_model(seed=4)
    prompts = [[5, 9, 13, 2, 8, 30], [7, 3], [11, 12, 13, 14], [40]]
    completions = [[21, 22, 23], [24, 25, 26, 27, 28, 29, 31], [32], [33, 34]]
    tokens, attention, response = pad_rows(prompts, completions)
    results = []
    for packed in (False, True):
        model.zero_grad()
        out = token_log_probs(model, tokens, attention, response, SamplingParams(temperature=0.8, min_p=0.05),
                              packed=packed)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()  # weights differ per position
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (padded, padded_grads), (packed, packed_grads) = results
    assert torch.allclose(packed, padded, atol=1e-5)
    assert (packed[~response] == 0).all() and (packed[response] < 0).any()
    for a, b in zip(padded_grads, packed_grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_packing_refuses_left_padded_rows():
    from agents.logprobs import packed_hidden_states

    model, _ = tiny_model(seed=4)
    tokens = torch.tensor([[0, 5, 6], [7, 8, 9]])
    with pytest.raises(ValueError, match="right-padded"):
        packed_hidden_states(model, tokens, torch.tensor([[0, 1, 1], [1, 1, 1]]))
