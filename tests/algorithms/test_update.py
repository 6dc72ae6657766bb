"""One optimizer step moves log-probabilities the way the advantages say."""
import torch

import algorithms
from agents.logprobs import token_log_probs
from agents.models import tiny_model
from agents.policy import Completion
from algorithms.batch import make_batch, rollout_rows
from algorithms.collector import Episode, Rollout, Turn


def sequence_log_probs(model, batch):
    mask = batch.get(("masks", "all_assistant_mask"))
    with torch.no_grad():
        logp = token_log_probs(model, batch.get(("tokens", "full")), batch.get(("masks", "all_attention_mask")))
    return (logp * mask).sum(-1)


def test_one_step_raises_positive_and_lowers_negative_advantage_samples():
    model, tokenizer = tiny_model(seed=1)
    prompt = [1, 30, 40, 50]
    good = Turn("solver", "q", "good", Completion("good", prompt, [100, 200, 300], [-1.0] * 3), branch=True)
    bad = Turn("solver", "q", "bad", Completion("bad", prompt, [400, 500, 600], [-1.0] * 3), branch=True)
    episodes = [Episode(0, [good], {"solver": 1.0}, branched=True), Episode(0, [bad], {"solver": 0.0}, branched=True)]
    batch = make_batch(rollout_rows(Rollout(episodes, {})), ["challenger", "solver"], tokenizer.pad_token_id)
    loss = algorithms.make("lsp-zero", model, beta=0.0)
    loss.compute_advantages(batch)
    before = sequence_log_probs(model, batch)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    output = loss(batch)
    output.loss_objective.backward()
    optimizer.step()

    after = sequence_log_probs(model, batch)
    assert after[0] > before[0]
    assert after[1] < before[1]
