"""Atomic, resumable checkpoints.

Layout of `RUN/checkpoints/iter_000012/`:
    model/        the policy in Hugging Face format (`save_pretrained`) + tokenizer
    trainer.pt    optimizer state, RNG states, iteration, extra algorithm state
    config.yaml   the run's config
A checkpoint is written to a temporary folder and renamed into place, then
`RUN/checkpoints/latest` is replaced atomically, so an interrupted save never
leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read."""


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(run_dir: Path, iteration: int, model, tokenizer, optimizer, config_yaml: str,
                    extra: dict | None = None) -> Path:
    """Write checkpoint `iteration` atomically and point `latest` at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iter_{iteration:06d}"
    staging = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging / "model")
    tokenizer.save_pretrained(staging / "model")
    torch.save({"iteration": iteration, "optimizer": optimizer.state_dict(), "rng": rng_state(),
                "extra": extra or {}}, staging / "trainer.pt")
    (staging / "config.yaml").write_text(config_yaml)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    pointer = root / f".latest-{os.getpid()}"
    pointer.write_text(final.name)
    os.replace(pointer, root / "latest")
    return final


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
    """The optimizer/RNG/iteration state of a checkpoint, with a clear error if corrupt."""
    try:
        return torch.load(Path(path) / "trainer.pt", weights_only=False)
    except Exception as error:  # torch raises several kinds for a damaged file
        others = sorted(p.name for p in Path(path).parent.glob("iter_*") if p != Path(path))
        hint = f" Older checkpoints: {', '.join(others)}." if others else ""
        raise CheckpointError(f"cannot read {path / 'trainer.pt'}: {error}.{hint}") from error
