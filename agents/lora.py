"""LoRA adapters (PEFT) on the shared policy.

With LoRA the trainer updates only small adapter matrices. The frozen base
weights are then the reference model (and the self-judges' model): the same
module with the adapter switched off (`base_weights`), not a second copy.
Checkpoints hold the adapter only, in PEFT's format, so
`peft.PeftModel.from_pretrained(base, folder)` loads them too; engines that
need plain weights get `merged_state_dict`.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(model, rank: int, alpha: float, target_modules: list[str], base_name: str):
    """`model` wrapped in a trainable LoRA adapter (a `peft.PeftModel`); `base_name` is recorded as its base."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    return peft_model


def has_adapter(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def base_weights(model):
    """A context in which `model` computes with its base weights (no-op without an adapter)."""
    return model.disable_adapter() if has_adapter(model) else nullcontext()


def merged_state_dict(model) -> dict:
    """The weights with the adapter merged in, under the base model's Hugging Face names."""
    if not has_adapter(model):
        return model.state_dict()
    import torch
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    with torch.no_grad():
        deltas = {f"{name}.weight": module.get_delta_weight("default").detach()
                  for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    state = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = value + deltas[key].to(value.dtype) if key in deltas else value
    return state


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder names (`base_model_name_or_path`)."""
    return json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]


def load_adapter(model, path: str | Path):
    """`model` with the adapter in `path` (a `peft.PeftModel`, frozen)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(path))
