"""The paper's formulas, pinned: KL estimators against the exact KL, aggregation modes on worked numbers,
micro-batch equivalence with beta > 0, and advantage normalisation."""
import math

import pytest
import torch
from tensordict import TensorDict

import algorithms
from agents.logprobs import token_log_probs
from agents.models import tiny_model
from algorithms.base import (ADVANTAGE_KEY, ATTENTION_MASK, BRANCH_KEY, GROUP_KEY, REF_LOG_PROBS, RESPONSE_MASK,
                             REWARD_KEY, SAMPLER_LOG_PROBS, TOKENS, WEIGHT_KEY, vocab_log_probs)
from algorithms.batch import make_batch, rollout_rows
from tests.algorithms.test_advantages import rollout


def loss_and_batch(name="lsp-zero", **settings):
    model, tokenizer = tiny_model(seed=0)
    batch = make_batch(rollout_rows(rollout(False)), ["challenger", "solver"], tokenizer.pad_token_id)
    loss = algorithms.make(name, model, **settings)
    loss.compute_advantages(batch)
    return model, loss, batch


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_sampled_kl_estimators_are_unbiased(estimator):
    """Over 200k one-token answers drawn from pi, the mean estimate is the exact KL(pi || pi_ref)."""
    torch.manual_seed(0)
    policy = torch.randn(50).log_softmax(-1)
    reference = (policy + 0.5 * torch.randn(50)).log_softmax(-1)
    exact = float((policy.exp() * (policy - reference)).sum())
    samples = torch.multinomial(policy.exp(), 200_000, replacement=True)
    _, loss, _ = loss_and_batch(kl_estimator=estimator)
    data = TensorDict({}, batch_size=[len(samples)])
    estimates = loss.token_kl(data, policy[samples][:, None], reference[samples][:, None],
                              torch.ones(len(samples), 1, dtype=torch.bool))
    assert float(estimates.mean()) == pytest.approx(exact, rel=0.03)  # ~10 standard errors of the mean
    if estimator == "k3":
        assert bool((estimates >= 0).all())


def test_the_exact_estimator_sums_over_the_vocabulary():
    model, loss, batch = loss_and_batch(kl_estimator="exact", reference_network=tiny_model(seed=1)[0])
    mask = batch.get(RESPONSE_MASK).clone()
    got = loss._exact_kl(batch, mask)
    mask[:, 0] = False
    tokens, attention = batch.get(TOKENS), batch.get(ATTENTION_MASK)
    with torch.no_grad():
        pi = vocab_log_probs(model, tokens, attention, mask)
        ref = vocab_log_probs(loss.reference_network, tokens, attention, mask)
    expected = (pi.exp() * (pi - ref)).sum(-1)
    torch.testing.assert_close(got[mask].detach(), expected)
    assert bool((expected > 0).all())


@pytest.mark.parametrize("aggregation, per_row_factor", [
    ("sequence_sum", [1, 1, 1, 1, 1, 1, 1, 1]),
    ("prompt_mean", [1 / 2, 1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 3, 1 / 3, 1 / 3]),
    ("token_mean", [1 / 2, 1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 3, 1 / 3, 1 / 3]),
])
def test_aggregation_on_two_queries_by_three_answers(aggregation, per_row_factor):
    """Rows: challenger (2 tokens), 3 solver answers (3 tokens), twice. A constant log-ratio of 0.1 per token
    gives k1 = 0.1 * tokens per row, scaled by the mode's factor; the logged KL is the mean over rows."""
    _, loss, batch = loss_and_batch(aggregation=aggregation, kl_estimator="k1")
    mask = batch.get(RESPONSE_MASK)
    current = torch.where(mask, torch.full(mask.shape, -1.0), torch.zeros(mask.shape))
    _, logged = loss.kl_to_reference(batch, current, torch.full(mask.shape, -1.1), mask.bool())
    lengths = torch.tensor([2, 3, 3, 3, 2, 3, 3, 3], dtype=torch.float)
    expected = float((0.1 * lengths * torch.tensor(per_row_factor)).mean())
    assert float(logged) == pytest.approx(expected, rel=1e-5)


def test_token_mean_divides_by_the_mean_length_of_its_side():
    _, loss, batch = loss_and_batch(aggregation="token_mean")
    mask = batch.get(RESPONSE_MASK).clone()
    mask[1, -1] = False  # one solver answer one token shorter: solver lengths 2, 3, 3, 3, 3, 3
    batch.set(RESPONSE_MASK, mask)
    scale = loss._token_scale(batch)
    solver = batch.get(BRANCH_KEY).bool()
    assert scale[solver].tolist() == pytest.approx([1 / (17 / 6)] * 6)
    assert scale[~solver].tolist() == pytest.approx([1 / 2, 1 / 2])


@pytest.mark.parametrize("aggregation", ["sequence_sum", "prompt_mean", "token_mean"])
def test_micro_batches_give_the_whole_batch_gradient_with_kl(aggregation):
    """Groups split 1 + 1 with each micro-batch weighted by its share of rows == the whole batch (beta 0.05)."""
    model, loss, batch = loss_and_batch(beta=0.05, aggregation=aggregation)
    with torch.no_grad():
        reference = token_log_probs(tiny_model(seed=1)[0], batch.get(TOKENS), batch.get(ATTENTION_MASK),
                                    batch.get(RESPONSE_MASK))
    batch.set(REF_LOG_PROBS, reference)
    model.train()

    def gradient(parts):
        model.zero_grad()
        for rows in parts:
            output = loss(batch[rows])
            ((output.loss_objective + output.loss_kl_to_ref) * float(rows.sum()) / len(batch)).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    groups = batch.get(GROUP_KEY)
    whole = gradient([torch.ones(len(batch), dtype=torch.bool)])
    split = gradient([groups == 0, groups == 1])
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-4)


def test_kl_gradient_with_beta_matches_the_hand_derived_k3_gradient():
    """d/dtheta beta * mean_rows(w * scale * sum_t k3), k3 = exp(ref - logp) - 1 - (ref - logp): written out."""
    model, loss, batch = loss_and_batch(beta=0.05, aggregation="sequence_sum")
    tokens, attention, mask = batch.get(TOKENS), batch.get(ATTENTION_MASK), batch.get(RESPONSE_MASK)
    with torch.no_grad():
        reference = token_log_probs(tiny_model(seed=1)[0], tokens, attention, mask)
    batch.set(REF_LOG_PROBS, reference)
    batch.set(ADVANTAGE_KEY, torch.zeros_like(batch.get(ADVANTAGE_KEY)))  # isolate the KL term
    model.train()
    got = torch.autograd.grad(loss(batch).loss_kl_to_ref, list(model.parameters()), allow_unused=True)
    logp = token_log_probs(model, tokens, attention, mask)
    diff = torch.where(mask, reference - logp, torch.zeros_like(logp))
    per_row = (diff.exp() - 1 - diff).sum(-1)
    expected = 0.05 * (per_row * batch.get(WEIGHT_KEY)).mean()
    want = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    for g, w in zip(got, want):
        if w is not None:
            torch.testing.assert_close(g, w, atol=1e-7, rtol=1e-4)


def test_normalised_advantages_on_worked_numbers_and_a_group_without_spread():
    """Group 0 answers R = [1, 0, 0.5]: mean 0.5, std sqrt(1/6); group 1 answers all 0.2 -> advantages 0."""
    _, loss, batch = loss_and_batch(normalize_advantages=True)
    reward = batch.get(REWARD_KEY).clone()
    solver = batch.get(BRANCH_KEY).bool()
    reward[solver] = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.2, 0.2])
    batch.set(REWARD_KEY, reward)
    loss.compute_advantages(batch)
    advantage = batch.get(ADVANTAGE_KEY)[:, 0, 0][solver]
    std = (1 / 6) ** 0.5
    assert advantage.tolist() == pytest.approx([0.5 / std, -0.5 / std, 0.0, 0.0, 0.0, 0.0], rel=1e-4)


def test_the_learning_rate_defaults_to_the_papers_for_full_fine_tuning():
    resolve = algorithms.resolve
    assert resolve("lsp").recommended_lr(lora=False) == resolve("lsp-zero").recommended_lr(lora=False) == 3e-6
    assert resolve("grpo").recommended_lr(lora=False) == 1e-6
    assert resolve("lsp").recommended_lr(lora=True) == resolve("grpo").recommended_lr(lora=True) == 1e-4


def unequal_batch(**settings):
    """test_advantages' 2 queries x 3 answers (R = [[1, 0, 0.5], [0.2, 0.2, 0.8]]) with unequal lengths:
    queries of 2 and 4 tokens, answers of 1, 2, 3 and 3, 1, 2 tokens."""
    from agents.policy import Completion
    from algorithms.collector import Episode, Rollout, Turn
    from tests.algorithms.test_advantages import JUDGE

    model, tokenizer = tiny_model(seed=0)
    episodes = []
    for i, (query_length, answer_lengths) in enumerate([(2, [1, 2, 3]), (4, [3, 1, 2])]):
        query = Turn("challenger", "p", "q", Completion("q", [1, 2, 3], [10] * query_length, [-1.0] * query_length),
                     branch=False)
        for j, length in enumerate(answer_lengths):
            answer = Turn("solver", "q", "a", Completion("a", [1, 2, 3], [20 + j] * length, [-1.0] * length), True)
            returns = {"challenger": -JUDGE[i][j], "solver": JUDGE[i][j]}
            episodes.append(Episode(group=i, turns=[query, answer], returns=returns, branched=True))
    batch = make_batch(rollout_rows(Rollout(episodes, {})), ["challenger", "solver"], tokenizer.pad_token_id)
    loss = algorithms.make("lsp-zero", model, **settings)
    loss.compute_advantages(batch)
    return model, loss, batch


@pytest.mark.parametrize("aggregation, coefficient", [
    # d loss / d log pi(token) = -w * A * factor / 8 rows; rows ch0, s00, s01, s02, ch1, s10, s11, s12 with
    # A = [-0.05, 0.5, -0.5, 0, 0.05, -0.2, -0.2, 0.4], w = 4 (challenger: 8 / 2) or 8 / 6 (solver).
    ("sequence_sum", [0.025, -1 / 12, 1 / 12, 0, -0.025, 1 / 30, 1 / 30, -1 / 15]),
    # factor 1 / length: queries 2 and 4 tokens, answers 1, 2, 3 and 3, 1, 2.
    ("prompt_mean", [0.0125, -1 / 12, 1 / 24, 0, -0.00625, 1 / 90, 1 / 30, -1 / 30]),
    # factor 1 / mean length of the row's side: queries 3, answers 2.
    ("token_mean", [0.025 / 3, -1 / 24, 1 / 24, 0, -0.025 / 3, 1 / 60, 1 / 60, -1 / 30]),
])
def test_each_aggregation_weights_every_token_as_worked_out_by_hand(aggregation, coefficient, monkeypatch):
    _, loss, batch = unequal_batch(beta=0.0, aggregation=aggregation)
    mask = batch.get(RESPONSE_MASK)
    log_probs = torch.full(mask.shape, -1.0, requires_grad=True)
    monkeypatch.setattr("algorithms.base.token_log_probs", lambda *args, **kwargs: log_probs)
    (grad,) = torch.autograd.grad(loss(batch).loss_objective, log_probs)
    expected = torch.tensor(coefficient)[:, None].expand(mask.shape) * mask
    torch.testing.assert_close(grad, expected.float(), atol=1e-7, rtol=1e-5)


def test_full_loss_gradient_with_beta_matches_finite_differences():
    """The gradient of objective + beta * KL (k3, sequence sum) along a random direction equals the central
    difference of the loss written by hand, f(theta) = mean_rows w * sum_t [-A exp(logp - logp_0) + beta k3]."""
    model, loss, batch = unequal_batch(beta=0.05)
    tokens, attention, mask = batch.get(TOKENS), batch.get(ATTENTION_MASK), batch.get(RESPONSE_MASK)
    with torch.no_grad():
        reference = token_log_probs(tiny_model(seed=1)[0], tokens, attention, mask)
        start = token_log_probs(model, tokens, attention, mask)
    batch.set(REF_LOG_PROBS, reference)
    advantage = torch.tensor([-0.05, 0.5, -0.5, 0.0, 0.05, -0.2, -0.2, 0.4])[:, None]
    weight = torch.tensor([4.0, 8 / 6, 8 / 6, 8 / 6, 4.0, 8 / 6, 8 / 6, 8 / 6])[:, None]

    def by_hand():
        logp = token_log_probs(model, tokens, attention, mask)
        diff = reference - logp
        per_token = -advantage * (logp - start).exp() + 0.05 * (diff.exp() - 1 - diff)
        return (weight * per_token * mask).sum(-1).mean()

    params = [p for p in model.parameters()]
    output = loss(batch)
    grads = torch.autograd.grad(output.loss_objective + output.loss_kl_to_ref, params)
    torch.manual_seed(0)
    layer = {id(p) for p in model.model.layers[-1].parameters()}
    directions = {"gradient": [g for g in grads],  # and a random one over the last layer's weights
                  "random": [torch.randn_like(p) * (id(p) in layer) for p in params]}
    for name, direction in directions.items():
        norm = torch.sqrt(sum((d ** 2).sum() for d in direction))
        direction = [d / norm for d in direction]
        analytic = float(sum((g * d).sum() for g, d in zip(grads, direction)))
        values = []
        with torch.no_grad():
            for step in (1e-2, -1e-2):
                for p, d in zip(params, direction):
                    p.add_(step * d)
                values.append(float(by_hand()))
                for p, d in zip(params, direction):
                    p.sub_(step * d)
        numeric = (values[0] - values[1]) / 2e-2
        assert abs(analytic) > 1e-3, name
        assert analytic == pytest.approx(numeric, rel=2e-2), name


def test_k1_is_differentiated_through_the_score_function():
    """Value: sum_t log(pi / pi_ref). Gradient: sum_t (KL from t to the answer's end) * grad log pi(token t),
    whose expectation is the gradient of KL(pi || pi_ref) (the direct gradient of k1 averages to 0)."""
    model, loss, batch = unequal_batch(beta=0.05, kl_estimator="k1")
    tokens, attention, mask = batch.get(TOKENS), batch.get(ATTENTION_MASK), batch.get(RESPONSE_MASK)
    with torch.no_grad():
        reference = token_log_probs(tiny_model(seed=1)[0], tokens, attention, mask)
    batch.set(REF_LOG_PROBS, reference)
    batch.set(ADVANTAGE_KEY, torch.zeros_like(batch.get(ADVANTAGE_KEY)))
    params = list(model.parameters())
    output = loss(batch)
    got = torch.autograd.grad(output.loss_kl_to_ref, params, allow_unused=True)
    logp = token_log_probs(model, tokens, attention, mask)
    k1 = ((logp - reference) * mask).detach()
    assert float(output.kl_to_ref) == pytest.approx(float(k1.sum(-1).mean()), rel=1e-5)
    to_go = k1.flip(-1).cumsum(-1).flip(-1)
    expected = 0.05 * (batch.get(WEIGHT_KEY) * (to_go * logp * mask).sum(-1)).mean()
    want = torch.autograd.grad(expected, params, allow_unused=True)
    for g, w in zip(got, want):
        if w is not None:
            torch.testing.assert_close(g, w, atol=1e-7, rtol=1e-4)



def _objective_gradient(model, batch, keep=None, **settings) -> tuple[torch.Tensor, float]:
    """The objective's gradient (beta 0), and the share of tokens clipped; `keep(advantage)` masks advantages."""
    model.zero_grad()
    loss = algorithms.make("lsp-zero", model, beta=0.0, aggregation="prompt_mean", **settings)
    loss.compute_advantages(batch)
    if keep is not None:
        batch.set(ADVANTAGE_KEY, batch.get(ADVANTAGE_KEY) * keep(batch.get(ADVANTAGE_KEY)))
    output = loss(batch)
    output.loss_objective.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]), float(output.clip_fraction)


def test_the_clipped_ratio_against_the_sampler_is_on_policy_for_fresh_samples_and_clips_stale_ones(eight_groups):
    """With clip_epsilon the ratio is r = pi / pi_sampler. Samples from the current weights (r = 1) give the
    on-policy gradient. Samples whose sampler log-probs are 1 nat lower (r = e > 1 + 0.2) are clipped where the
    advantage is positive (no gradient) and kept where it is negative: e times the on-policy gradient there."""
    model, batch = eight_groups
    mask = batch.get(RESPONSE_MASK)
    with torch.no_grad():
        current = token_log_probs(model, batch.get(TOKENS), batch.get(ATTENTION_MASK), mask)
    batch.set(SAMPLER_LOG_PROBS, torch.where(mask, current, torch.zeros_like(current)))
    on_policy, _ = _objective_gradient(model, batch)
    fresh, clipped = _objective_gradient(model, batch, clip_epsilon=0.2)
    scale = float(on_policy.abs().max())  # the sums differ in their last bits between thread counts
    torch.testing.assert_close(fresh, on_policy, rtol=1e-4, atol=1e-4 * scale)
    assert clipped == 0.0

    batch.set(SAMPLER_LOG_PROBS, torch.where(mask, current - 1.0, torch.zeros_like(current)))
    stale, clipped = _objective_gradient(model, batch, clip_epsilon=0.2)
    negative_only, _ = _objective_gradient(model, batch, keep=lambda advantage: (advantage < 0).float())
    assert clipped > 0 and negative_only.abs().sum() > 0
    torch.testing.assert_close(stale, math.e * negative_only, rtol=1e-4, atol=1e-4 * scale)
