"""LoRA adapters on a tiny random model: what trains, what the reference is, and what a checkpoint holds."""
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from agents.hf import HFPolicy
from agents.logprobs import token_log_probs
from agents.lora import ALL_LINEAR, add_lora, base_weights, merged_state_dict
from agents.models import load_model, tiny_model
from agents.sync import WeightSync
from algorithms.config import TrainConfig
from algorithms.trainer import Trainer

from tests.algorithms.test_trainer import JUDGES, tiny_config


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, 1000, (3, 12), generator=generator)
    attention = torch.ones_like(tokens, dtype=torch.bool)
    response = torch.zeros_like(attention)
    response[:, 6:] = True
    return tokens, attention, response


def lora_model(seed: int = 0):
    model, tokenizer = tiny_model(seed=seed)
    return add_lora(model, rank=4, alpha=8, target_modules=ALL_LINEAR, base_name="tiny-base"), tokenizer


def step(model, lr: float = 1e-2) -> None:
    """One optimizer step that raises the log-probs of `batch()`."""
    tokens, attention, response = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss = -token_log_probs(model, tokens, attention, response).sum()
    loss.backward()
    optimizer.step()
    model.eval()


def log_probs(model) -> torch.Tensor:
    with torch.no_grad():
        return token_log_probs(model, *batch())


def test_a_step_changes_only_adapter_weights():
    model, _ = lora_model()
    before = {name: value.clone() for name, value in model.named_parameters()}
    step(model)
    changed = {name for name, value in model.named_parameters() if not torch.equal(value, before[name])}
    assert changed and all("lora_" in name for name in changed)
    assert any("lora_B" in name for name in changed)


def test_the_reference_is_the_base_with_the_adapter_off():
    model, _ = lora_model()
    base, _ = tiny_model(seed=0)
    expected = log_probs(base)
    step(model)
    assert not torch.allclose(log_probs(model), expected, atol=1e-4)  # the adapter moved the policy
    with base_weights(model):
        assert torch.allclose(log_probs(model), expected, atol=1e-5)
    assert torch.allclose(log_probs(model), log_probs(model))  # and it is back on afterwards
    policy = HFPolicy(model, _tokenizer())
    reference = HFPolicy(model, _tokenizer(), base_only=True)
    prompt, completion = [[1, 2, 3, 4]], [[5, 6, 7]]
    [adapted], [referenced] = policy.score(prompt, completion), reference.score(prompt, completion)
    assert adapted != pytest.approx(referenced, abs=1e-4)
    assert referenced == pytest.approx(HFPolicy(base, _tokenizer()).score(prompt, completion)[0], abs=1e-5)


def _tokenizer():
    return tiny_model()[1]


def trained_adapter(tmp_path):
    """A stepped LoRA model saved as `tmp_path/adapter` over a base saved as `tmp_path/base`; its log-probs."""
    model, tokenizer = lora_model()
    step(model)
    base, _ = tiny_model(seed=0)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    model.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    model.save_pretrained(tmp_path / "adapter")
    return model, log_probs(model)


def test_save_load_and_merge_round_trip(tmp_path):
    model, expected = trained_adapter(tmp_path)
    files = {path.name for path in (tmp_path / "adapter").iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors", "README.md"}  # the adapter only
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tmp_path / "base")
    # plain PEFT loading
    fresh, _ = tiny_model(seed=0)
    assert torch.allclose(log_probs(PeftModel.from_pretrained(fresh, tmp_path / "adapter")), expected, atol=1e-5)
    # our loader: an adapter folder, or a base plus --adapter, both merged
    merged, _ = load_model(str(tmp_path / "adapter"))
    assert not isinstance(merged, PeftModel)
    assert torch.allclose(log_probs(merged), expected, atol=1e-5)
    explicit, _ = load_model(str(tmp_path / "base"), adapter=str(tmp_path / "adapter"))
    assert torch.allclose(log_probs(explicit), expected, atol=1e-5)
    # the merged state dict an engine receives
    plain, _ = tiny_model(seed=0)
    plain.load_state_dict(merged_state_dict(model))
    assert torch.allclose(log_probs(plain), expected, atol=1e-5)


def test_weight_sync_pushes_the_merged_adapter():
    model, tokenizer = lora_model()
    step(model)
    engine = HFPolicy(*tiny_model(seed=0))  # a separate engine with the base weights
    sync = WeightSync(engine, model, tokenizer)
    report = sync()
    assert report.max_abs_diff < 1e-4
    engine.close()


def test_trainer_with_lora_trains_the_adapter_and_checkpoints_it_alone(tiny_path, tmp_path):
    config = tiny_config(tiny_path, tmp_path, lora_rank=4, lora_alpha=8.0, lr=1e-2)
    trainer = Trainer(config, judges=JUDGES)
    assert trainer.rollout.parts.reference_model is trainer.update.model
    base = {n: p.clone() for n, p in trainer.update.model.named_parameters() if "lora_" not in n}
    run_dir = trainer.train(progress=False)
    assert all(torch.equal(p, base[n]) for n, p in trainer.update.model.named_parameters() if "lora_" not in n)
    expected = log_probs(trainer.update.model)
    trainer.close()
    folder = run_dir / "checkpoints" / "iter_000002" / "model"
    assert (folder / "adapter_model.safetensors").exists() and not (folder / "model.safetensors").exists()
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny_path
    merged, _ = load_model(str(folder))
    assert torch.allclose(log_probs(merged), expected, atol=1e-5)
    resumed = Trainer.resume(run_dir, judges=JUDGES, iterations=3)
    assert torch.allclose(log_probs(resumed.update.model), expected, atol=1e-6)
    resumed.train(progress=False)
    resumed.close()


def test_lora_settings_are_checked():
    with pytest.raises(ValueError, match="lora_rank"):
        TrainConfig(lora_rank=-1)


def test_serve_merges_an_adapter_before_serving(tmp_path):
    from agents.serve import ServeConfig, VLLMServer

    _, expected = trained_adapter(tmp_path)
    server = VLLMServer(ServeConfig(model=str(tmp_path / "adapter")))
    folder = server.model_folder()
    assert server.command()[server.command().index("--model") + 1] == folder
    served, _ = load_model(folder)
    assert torch.allclose(log_probs(served), expected, atol=1e-5)
    server.stop()
    assert not Path(folder).exists()  # the merged copy is removed with the server
