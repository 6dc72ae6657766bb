"""Fixtures shared by the test packages."""
import pytest
import torch

from agents.logprobs import token_log_probs
from agents.models import tiny_model
from agents.policy import Completion
from algorithms.base import ATTENTION_MASK, REF_LOG_PROBS, RESPONSE_MASK, TOKENS
from algorithms.batch import make_batch, rollout_rows
from algorithms.collector import Episode, Rollout, Turn


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    """A tiny random Llama (with the real tokenizer) saved to a folder, for `TrainConfig(model=...)`."""
    path = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = tiny_model(seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def eight_groups():
    """The tiny model (seed 0) and a batch of 8 queries x 3 answers of unequal lengths with varied rewards, its
    reference log-probs from another tiny model (seed 1)."""
    episodes = []
    for i in range(8):
        query = Turn("challenger", "p", "q", Completion("q", [1, 2, 3], [10 + i] * (2 + i % 3), [-1.0] * (2 + i % 3)),
                     branch=False)
        for j in range(3):
            length = 1 + (i + j) % 4
            answer = Turn("solver", "q", "a", Completion("a", [1, 2, 3], [20 + j] * length, [-1.0] * length), True)
            reward = float((i * 7 + j * 3) % 5) / 4
            episodes.append(Episode(i, [query, answer], {"challenger": -reward, "solver": reward}, branched=True))
    model, tokenizer = tiny_model(seed=0)
    batch = make_batch(rollout_rows(Rollout(episodes, {})), ["challenger", "solver"], tokenizer.pad_token_id)
    with torch.no_grad():
        batch.set(REF_LOG_PROBS, token_log_probs(tiny_model(seed=1)[0], batch.get(TOKENS), batch.get(ATTENTION_MASK),
                                                 batch.get(RESPONSE_MASK)))
    return model, batch


def pytest_collection_modifyitems(items):
    """Distributed tests (several processes, a local Ray cluster) are slow too: `pytest -m "not slow"` skips
    both, for a quick local loop; CI runs everything."""
    for item in items:
        if item.get_closest_marker("distributed"):
            item.add_marker(pytest.mark.slow)
