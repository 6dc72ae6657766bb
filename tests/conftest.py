"""Fixtures shared by the test packages."""
import pytest

from agents.models import tiny_model


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    """A tiny random Llama (with the real tokenizer) saved to a folder, for `TrainConfig(model=...)`."""
    path = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = tiny_model(seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
