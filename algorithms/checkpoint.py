"""Atomic, verified, resumable checkpoints.

Layout of `RUN/checkpoints/iter_000012/`:
    model/         the policy in Hugging Face format (`save_pretrained`), or with LoRA the adapter alone
                   (adapter_config.json + adapter_model.safetensors); plus the tokenizer files
    trainer.pt     optimizer state, RNG states, iteration, extra algorithm state: tensors and plain
                   containers only, so it loads with `torch.load(weights_only=True)`, which runs no pickled code
    config.yaml    the run's config
    manifest.json  written last: {"files": {relative path: {"size": bytes, "sha256": hex digest}}} for
                   every other file of the checkpoint
A checkpoint is written to a staging folder, its manifest last, and the folder is renamed into place; then
`RUN/checkpoints/latest` is replaced atomically to name it. An interrupted save thus leaves no `iter_*`
folder, and later damage (a truncated, edited or deleted file) shows against the manifest.

`newest_valid_checkpoint` picks the checkpoint to resume from: the newest one whose files match its manifest,
whose config.yaml parses and whose trainer state loads; it says which newer ones it skipped and why.
Checkpoints without a manifest (written before manifests existed) are never resumed from.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read."""


def rng_state() -> dict:
    """The torch, numpy and Python RNG states, as tensors and plain values."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": keys.tolist(), "position": int(position), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached_gaussian)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    numpy, python = state["numpy"], state["python"]
    torch.set_rng_state(state["torch"])
    np.random.set_state((numpy["name"], np.array(numpy["keys"], dtype=np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))


def save_checkpoint(run_dir: Path, iteration: int, model, tokenizer, optimizer_state: dict, config_yaml: str,
                    extra: dict | None = None, state_dict: dict | None = None) -> Path:
    """Write checkpoint `iteration` atomically, its manifest last, and point `latest` at it. `optimizer_state` is
    `optimizer.state_dict()`; `state_dict` replaces the model's own (the gathered weights of a sharded model)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iter_{iteration:06d}"
    staging = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    # A LoRA adapter never changes the embeddings, so PEFT need not look the base model up to check that.
    adapter_only = {"save_embedding_layers": False} if hasattr(model, "peft_config") else {}
    model.save_pretrained(staging / "model", **adapter_only, **({"state_dict": state_dict} if state_dict else {}))
    tokenizer.save_pretrained(staging / "model")
    torch.save({"iteration": iteration, "optimizer": optimizer_state, "rng": rng_state(),
                "extra": extra or {}}, staging / "trainer.pt")
    (staging / "config.yaml").write_text(config_yaml)
    write_manifest(staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    pointer = root / f".latest-{os.getpid()}"
    pointer.write_text(final.name)
    os.replace(pointer, root / "latest")
    return final


def write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file under `folder` in `folder/manifest.json`."""
    folder = Path(folder)
    files = {path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from, in a few words; None when it can."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return f"{MANIFEST} is missing"
    try:
        listed = {name: (int(entry["size"]), str(entry["sha256"]))
                  for name, entry in json.loads((path / MANIFEST).read_text())["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{MANIFEST} is unreadable ({_one_line(error)})"
    present = {file.relative_to(path).as_posix() for file in path.rglob("*") if file.is_file()} - {MANIFEST}
    if unlisted := sorted(present - set(listed)):  # a manifest is written last, over every other file
        return f"{unlisted[0]} is not in the manifest"
    for name, (size, digest) in listed.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if (actual := (path / name).stat().st_size) != size:
            return f"{name} has {actual} bytes, the manifest says {size}"
        if _sha256(path / name) != digest:
            return f"{name} differs from the manifest (sha256 mismatch)"
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError) as error:
        return f"config.yaml does not parse ({_one_line(error)})"
    if not isinstance(config, dict):
        return "config.yaml is not a YAML mapping"
    try:
        load_trainer_state(path)
    except CheckpointError as error:
        return str(error)
    return None


def find_run(folder: Path) -> Path:
    """The run folder to resume: `folder` itself when it holds checkpoints, else its newest run folder that does
    (so `--resume` takes the same folder as `--output`). Raises `CheckpointError` when there is none."""
    folder = Path(folder)
    if (folder / "checkpoints").is_dir():
        return folder
    runs = [run for run in folder.glob("*/") if (run / "checkpoints").is_dir()] if folder.is_dir() else []
    if not runs:
        raise CheckpointError(f"{folder} has no checkpoint to resume from: neither it nor a run folder in it "
                              "has a checkpoints/ folder")
    return max(runs, key=lambda run: (run / "checkpoints").stat().st_mtime)


def newest_valid_checkpoint(run_dir: Path) -> tuple[Path, list[str]]:
    """The newest checkpoint of a run that `checkpoint_problem` passes, and one line per newer one skipped
    ("skipped iter_000002: ..."). Raises `CheckpointError` when there is none."""
    root = Path(run_dir) / "checkpoints"
    folders = sorted((p for p in root.glob("iter_*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]),
                     reverse=True)
    if not folders:
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from (no {root}/iter_* folder)")
    skipped = []
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append(f"skipped {folder.name}: {problem}")
    raise CheckpointError(f"cannot read any checkpoint in {root}: {'; '.join(skipped)}")


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint `latest` points to, checked to be complete."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.exists():
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from ({pointer} is missing)")
    path = root / pointer.read_text().strip()
    missing = [name for name in ("model", "trainer.pt", "config.yaml") if not (path / name).exists()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
    return path


def load_trainer_state(path: Path) -> dict:
    """The optimizer/RNG/iteration state of a checkpoint (loaded with `weights_only=True`), with a clear
    error if it is missing or damaged."""
    file = Path(path) / "trainer.pt"
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)  # a GPU run resumes anywhere
    except pickle.UnpicklingError as error:  # torch's long advice on weights_only, for any unexpected byte
        raise CheckpointError(f"cannot read {file}: it does not load with weights_only=True (damaged, or saved "
                              f"with pickled objects by an older version)") from error
    except Exception as error:  # torch raises several kinds for a missing or damaged file
        raise CheckpointError(f"cannot read {file}: {_one_line(error)}") from error
    if not isinstance(state, dict) or not {"iteration", "optimizer", "rng", "extra"} <= state.keys():
        raise CheckpointError(f"cannot read {file}: it is not a trainer state")
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(error: Exception, limit: int = 200) -> str:
    """An exception's message on one line, cut to `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
