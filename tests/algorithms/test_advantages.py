"""Advantages and losses against numbers worked out by hand from the paper's formulas."""
import pytest
import torch

import algorithms
from agents.policy import Completion
from algorithms.base import ADVANTAGE_KEY, REF_LOG_PROBS, WEIGHT_KEY
from algorithms.batch import make_batch, rollout_rows, share_without_spread
from algorithms.collector import Episode, Rollout, Turn
from agents.models import tiny_model

JUDGE = [[1.0, 0.0, 0.5], [0.2, 0.2, 0.8]]  # R(q_i, a_ij): 2 queries x 3 answers
QUALITY = [[0.6, 0.2, 0.4], [0.9, 0.6, 0.3]]  # R_Q(q_i, a_ij)


def completion(tokens):
    return Completion(text="x", prompt_ids=[1, 2, 3], token_ids=tokens, logprobs=[-1.0] * len(tokens))


def rollout(self_reward: bool) -> Rollout:
    """What the LSP game hands back: solver R (+R_Q), challenger -R (+R_Q) per episode."""
    episodes = []
    for i in range(2):
        query = Turn("challenger", "prompt", "query", completion([10 + i, 11]), branch=False)
        for j in range(3):
            quality = QUALITY[i][j] if self_reward else 0.0
            answer = Turn("solver", "query", "answer", completion([20 + j, 21, 22]), branch=True)
            returns = {"challenger": -JUDGE[i][j] + quality, "solver": JUDGE[i][j] + quality}
            episodes.append(Episode(group=i, turns=[query, answer], returns=returns, branched=True))
    return Rollout(episodes, {})


def advantages(name: str, self_reward: bool, **settings):
    model, tokenizer = tiny_model()
    rows = rollout_rows(rollout(self_reward))
    batch = make_batch(rows, ["challenger", "solver"], tokenizer.pad_token_id)
    loss = algorithms.make(name, model, **settings)
    loss.compute_advantages(batch)
    return rows, batch, loss


@pytest.mark.parametrize("name, self_reward, challenger, solver", [
    # LSP-Zero: V = [0.5, 0.4], V_bar = 0.45; A_ch = V_bar - V; A_sol = R - V.
    ("lsp-zero", False, [-0.05, 0.05], [0.5, -0.5, 0.0, -0.2, -0.2, 0.4]),
    # LSP: solver R + R_Q = [1.6, 0.2, 0.9 | 1.1, 0.8, 1.1], group means [0.9, 1.0];
    # challenger -V + V_Q = [-0.1, 0.2], mean 0.05.
    ("lsp", True, [-0.15, 0.15], [0.7, -0.7, 0.0, 0.1, -0.2, 0.1]),
])
def test_lsp_advantages_match_hand_computation(name, self_reward, challenger, solver):
    rows, batch, _ = advantages(name, self_reward)
    advantage = batch.get(ADVANTAGE_KEY)[:, 0, 0]
    roles = [r.role for r in rows]
    assert roles == ["challenger", "solver", "solver", "solver", "challenger", "solver", "solver", "solver"]
    got_challenger = [a for a, r in zip(advantage.tolist(), roles) if r == "challenger"]
    got_solver = [a for a, r in zip(advantage.tolist(), roles) if r == "solver"]
    assert got_challenger == pytest.approx(challenger, abs=1e-6)
    assert got_solver == pytest.approx(solver, abs=1e-6)


def test_challenger_row_reward_is_minus_value_plus_quality():
    rows, _, _ = advantages("lsp", True)
    challenger = [r.reward for r in rows if r.role == "challenger"]
    assert challenger == pytest.approx([-0.5 + 0.4, -0.4 + 0.6])


def test_row_weights_give_solver_loss_plus_alpha_challenger_loss():
    _, batch, _ = advantages("lsp-zero", False, challenger_weight=0.5)
    weight = batch.get(WEIGHT_KEY)
    # 8 rows: 6 solver rows weigh 8/6 each, 2 challenger rows 0.5 * 8/2 each.
    assert weight.tolist() == pytest.approx([2.0, 8 / 6, 8 / 6, 8 / 6, 2.0, 8 / 6, 8 / 6, 8 / 6])


@pytest.mark.parametrize("aggregation", ["sequence_sum", "prompt_mean", "token_mean"])
def test_loss_gradient_equals_hand_written_objective(aggregation):
    """d loss / d theta == d [-mean_sol(A * agg_t log pi) - alpha * mean_ch(A * agg_t log pi)] / d theta, with agg
    the sum over the answer's tokens (the paper), their mean, or the sum over the side's mean length."""
    rows, batch, loss = advantages("lsp-zero", False, beta=0.0, challenger_weight=0.5, aggregation=aggregation)
    model = loss.actor_network
    model.train()
    output = loss(batch)
    grads = torch.autograd.grad(output.loss_objective, list(model.parameters()), allow_unused=True)

    from agents.logprobs import token_log_probs

    mask = batch.get(("masks", "all_assistant_mask"))
    logp = token_log_probs(model, batch.get(("tokens", "full")), batch.get(("masks", "all_attention_mask")))
    solver = batch.get("branch")
    lengths = mask.sum(-1).float()
    side_mean = torch.where(solver, lengths[solver].mean(), lengths[~solver].mean())
    per_row = (logp * mask).sum(-1) / {"sequence_sum": 1.0, "prompt_mean": lengths, "token_mean": side_mean}[aggregation]
    advantage = batch.get(ADVANTAGE_KEY)[:, 0, 0]
    expected = -(advantage * per_row)[solver].mean() - 0.5 * (advantage * per_row)[~solver].mean()
    expected_grads = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    for got, want in zip(grads, expected_grads):
        if want is not None:
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_kl_is_zero_at_initialisation():
    _, batch, loss = advantages("lsp", True, beta=0.05)
    from agents.logprobs import token_log_probs

    with torch.no_grad():
        reference = token_log_probs(loss.actor_network, batch.get(("tokens", "full")),
                                    batch.get(("masks", "all_attention_mask")))
    batch.set(REF_LOG_PROBS, reference)
    output = loss(batch)
    assert float(output.kl_to_ref) == pytest.approx(0.0, abs=1e-6)
    assert float(output.loss_kl_to_ref) == pytest.approx(0.0, abs=1e-6)


def test_kl_grows_when_reference_differs():
    _, batch, loss = advantages("lsp", True, beta=0.05)
    batch.set(REF_LOG_PROBS, torch.full_like(batch.get(REF_LOG_PROBS), -30.0))
    assert float(loss(batch).kl_to_ref) > 1.0


def test_grpo_normalises_within_groups_and_trains_solver_only():
    rows, batch, _ = advantages("grpo", False)
    advantage = batch.get(ADVANTAGE_KEY)[:, 0, 0]
    solver = batch.get("branch")
    assert torch.all(advantage[~solver] == 0)
    assert torch.all(batch.get(WEIGHT_KEY)[~solver] == 0)
    first = advantage[solver][:3]
    centred = torch.tensor([0.5, -0.5, 0.0])
    torch.testing.assert_close(first, centred / (centred.pow(2).mean().sqrt() + 1e-6))


def test_batch_carries_the_reward_breakdown():
    episodes = rollout(self_reward=True).episodes
    for index, episode in enumerate(episodes):
        i, j = divmod(index, 3)
        episode.infos = {"solver": {"reward": JUDGE[i][j], "quality": QUALITY[i][j]}}
    rows = rollout_rows(Rollout(episodes, {}))
    batch = make_batch(rows, ["challenger", "solver"], 0)
    judge, quality = batch.get(("breakdown", "reward")), batch.get(("breakdown", "quality"))
    assert judge[0] == pytest.approx(0.5) and quality[0] == pytest.approx(0.4)  # challenger: V(q), V_Q(q)
    assert judge[1:4].tolist() == pytest.approx(JUDGE[0]) and quality[5:8].tolist() == pytest.approx(QUALITY[1])


def test_share_without_spread_counts_groups_whose_answers_tie():
    tokenizer = tiny_model()[1]
    batch = make_batch(rollout_rows(rollout(self_reward=False)), ["challenger", "solver"], tokenizer.pad_token_id)
    assert share_without_spread(batch) == 0.0  # JUDGE's first query has spread, and so has the second's 0.8
    flat = rollout(self_reward=False)
    for episode in flat.episodes[3:]:  # the second query's three answers all get 0.2
        episode.returns = {"challenger": -0.2, "solver": 0.2}
    assert share_without_spread(make_batch(rollout_rows(flat), ["challenger", "solver"], 0)) == 0.5


def test_share_without_spread_of_a_breakdown_key_skips_games_that_do_not_report_it():
    episodes = rollout(self_reward=True).episodes
    for index, episode in enumerate(episodes):
        episode.infos = {"solver": {"reward": 0.0 if index < 3 else JUDGE[1][index - 3]}}
    batch = make_batch(rollout_rows(Rollout(episodes, {})), ["challenger", "solver"], 0)
    assert share_without_spread(batch, ("breakdown", "reward")) == 0.5  # R ties in the first group only
    assert share_without_spread(batch) == 0.0  # R_Q still tells the first group's answers apart
    assert share_without_spread(batch, ("breakdown", "passed")) != share_without_spread(batch, ("breakdown", "passed"))
