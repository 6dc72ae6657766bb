"""Checkpoints that survive damage: a manifest written last, resume that falls back past damaged checkpoints,
trainer state that loads without pickle, and a torn last line of metrics.jsonl."""
import hashlib
import json
import random
import re
import shutil

import numpy as np
import pytest
import torch

from agents.models import tiny_model
from algorithms import checkpoint
from algorithms.checkpoint import CheckpointError, checkpoint_problem, newest_valid_checkpoint, write_manifest
from algorithms.trainer import Trainer, _truncate_metrics

from tests.algorithms.test_trainer import JUDGES, metrics, tiny_config

COMPARED = ("reward/solver", "reward/challenger", "loss/objective", "loss/kl", "length/solver")


def train(config):
    trainer = Trainer(config, judges=JUDGES)
    run_dir = trainer.train(progress=False)
    trainer.close()
    return run_dir


@pytest.fixture(scope="module")
def full_run(tiny_path, tmp_path_factory):
    """A 2-iteration run of the full tiny model, checkpointed after each iteration (copy it before damaging)."""
    return train(tiny_config(tiny_path, tmp_path_factory.mktemp("full")))


def copy(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "run")


def cut_in_half(name):
    def damage(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:len(data) // 2])
    return damage


def edit_manifest(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["config.yaml"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))


def empty_manifest_and_cut_weights(folder):
    cut_in_half("model/model.safetensors")(folder)
    (folder / "manifest.json").write_text(json.dumps({"files": {}}))


DAMAGES = {
    "model cut in half": (cut_in_half("model/model.safetensors"),
                          r"model/model.safetensors has \d+ bytes, the manifest says \d+"),
    "garbage config": (lambda folder: (folder / "config.yaml").write_text("{{ not yaml"),
                       r"config.yaml has 11 bytes, the manifest says \d+"),
    "trainer state deleted": (lambda folder: (folder / "trainer.pt").unlink(), "trainer.pt is missing"),
    "manifest deleted": (lambda folder: (folder / "manifest.json").unlink(), "manifest.json is missing"),
    "manifest edited": (edit_manifest, r"config.yaml differs from the manifest \(sha256 mismatch\)"),
    "empty manifest, weights cut": (empty_manifest_and_cut_weights, r"\S+ is not in the manifest"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_resume_skips_a_damaged_checkpoint_and_continues_exactly(full_run, tmp_path, damage):
    run_dir = copy(full_run, tmp_path)
    original = metrics(run_dir)
    damage_folder, reason = DAMAGES[damage]
    damage_folder(run_dir / "checkpoints" / "iter_000002")
    with pytest.warns(UserWarning, match=f"^skipped iter_000002: {reason}$"):
        trainer = Trainer.resume(run_dir, judges=JUDGES)
    assert trainer.start_iteration == 1
    trainer.train(progress=False)
    trainer.close()
    records = metrics(run_dir)
    assert [r["iteration"] for r in records] == [1, 2]
    for key in COMPARED:  # iteration 2 again, from iteration 1's state: the same numbers
        assert records[1][key] == pytest.approx(original[1][key], abs=1e-5), key
    assert newest_valid_checkpoint(run_dir) == (run_dir / "checkpoints" / "iter_000002", [])


def test_resume_with_lora_skips_a_damaged_adapter(tiny_path, tmp_path):
    run_dir = train(tiny_config(tiny_path, tmp_path, lora_rank=4, lora_alpha=8.0, lr=1e-2))
    original = metrics(run_dir)
    cut_in_half("model/adapter_model.safetensors")(run_dir / "checkpoints" / "iter_000002")
    with pytest.warns(UserWarning, match=r"skipped iter_000002: model/adapter_model.safetensors has \d+ bytes"):
        trainer = Trainer.resume(run_dir, judges=JUDGES)
    assert trainer.start_iteration == 1
    trainer.train(progress=False)
    trainer.close()
    for key in COMPARED:
        assert metrics(run_dir)[1][key] == pytest.approx(original[1][key], abs=1e-5), key


def test_resume_with_every_checkpoint_damaged_fails_in_one_line(full_run, tmp_path):
    run_dir = copy(full_run, tmp_path)
    (run_dir / "checkpoints" / "iter_000002" / "manifest.json").unlink()
    cut_in_half("model/model.safetensors")(run_dir / "checkpoints" / "iter_000001")
    with pytest.raises(CheckpointError) as error:
        Trainer.resume(run_dir, judges=JUDGES)
    message = str(error.value)
    assert message.startswith(f"cannot read any checkpoint in {run_dir / 'checkpoints'}: ")
    assert "skipped iter_000002: manifest.json is missing; skipped iter_000001: model/model.safetensors has" in message
    assert "\n" not in message


def test_resume_drops_a_torn_last_metrics_line(full_run, tmp_path):
    run_dir = copy(full_run, tmp_path)
    path = run_dir / "metrics.jsonl"
    with path.open("a") as handle:
        handle.write('{"iteration": 3, "reward/sol')  # what kill -9 during a write leaves
    with pytest.warns(UserWarning, match=f"^{re.escape(str(path))}: dropped its torn last line 3 "):
        trainer = Trainer.resume(run_dir, judges=JUDGES)
    trainer.close()
    assert trainer.start_iteration == 2
    assert [r["iteration"] for r in metrics(run_dir)] == [1, 2]


def test_resume_puts_back_the_checkpointed_iterations_line_when_it_was_torn(full_run, tmp_path):
    run_dir = copy(full_run, tmp_path)
    path = run_dir / "metrics.jsonl"
    original = metrics(run_dir)
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:20])  # iteration 2 torn, though its checkpoint was written
    with pytest.warns(UserWarning, match="dropped its torn last line 2"):
        trainer = Trainer.resume(run_dir, judges=JUDGES)
    trainer.close()
    assert trainer.start_iteration == 2
    assert metrics(run_dir) == original  # replayed from the checkpoint, as it was logged


def test_checkpoints_carry_a_manifest_of_every_file_and_a_weights_only_trainer_state(full_run):
    folder = full_run / "checkpoints" / "iter_000002"
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    assert set(listed) == set(files) - {"manifest.json"}
    assert {"model/model.safetensors", "trainer.pt", "config.yaml"} <= set(listed)
    for name, entry in listed.items():
        assert entry == {"size": files[name].stat().st_size,
                         "sha256": hashlib.sha256(files[name].read_bytes()).hexdigest()}, name
    assert not list((full_run / "checkpoints").glob(".tmp-*"))
    state = torch.load(folder / "trainer.pt", weights_only=True)
    assert state["iteration"] == 2 and state["optimizer"]["state"]


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached Gaussian in both states

    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.standard_normal(), random.gauss(0, 1)

    torch.save(checkpoint.rng_state(), tmp_path / "rng.pt")
    expected = draws()
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of the tiny model written by `save_checkpoint`."""
    model, tokenizer = tiny_model(seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    return checkpoint.save_checkpoint(tmp_path, 1, model, tokenizer, optimizer.state_dict(), "seed: 0\n")


def pickled_trainer_state(folder):
    """A trainer.pt as saved before: numpy's RNG state needs pickle to load."""
    torch.save({"iteration": 1, "optimizer": {}, "rng": {"numpy": np.random.get_state()}, "extra": {}},
               folder / "trainer.pt")


PROBLEMS = {  # damage that matches a rewritten manifest: the content checks must catch it
    "config does not parse": (lambda folder: (folder / "config.yaml").write_text("{{ not yaml"),
                              r"config.yaml does not parse \(.*\)"),
    "config not a mapping": (lambda folder: (folder / "config.yaml").write_text("- a list\n"),
                             "config.yaml is not a YAML mapping"),
    "pickled trainer state": (pickled_trainer_state,
                              r"cannot read .*trainer.pt: it does not load with weights_only=True \(.*\)"),
    "not a trainer state": (lambda folder: torch.save({"iteration": 1}, folder / "trainer.pt"),
                            "cannot read .*trainer.pt: it is not a trainer state"),
}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_content_checks_catch_what_the_manifest_cannot(saved, problem):
    assert checkpoint_problem(saved) is None
    damage, reason = PROBLEMS[problem]
    damage(saved)
    write_manifest(saved)
    assert re.fullmatch(reason, checkpoint_problem(saved))


def test_an_unreadable_manifest_is_named(saved):
    (saved / "manifest.json").write_text('{"files": ')
    assert checkpoint_problem(saved).startswith("manifest.json is unreadable (")


def test_a_run_without_checkpoints_fails_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="has no checkpoint to resume from"):
        newest_valid_checkpoint(tmp_path)


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (1, 2, 3)) + '{"iteration": 4, "x": 0.')
    with pytest.warns(UserWarning, match=f"^{re.escape(str(path))}: dropped its torn last line 4 "):
        _truncate_metrics(path, 2)
    assert path.read_text() == '{"iteration": 1}\n{"iteration": 2}\n'


def test_a_damaged_metrics_line_before_the_last_fails_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2, "x\n{"iteration": 3}\n')
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))} line 2 is damaged"):
        _truncate_metrics(path, 3)
    assert path.read_text().count("\n") == 3  # left as it was


def save_as_on_a_gpu(state, file):
    """`torch.save` as a GPU run writes it: every tensor's storage tagged cuda:0."""
    tagging = [True]
    torch.serialization.register_package(-1, lambda storage: "cuda:0" if tagging[0] else None,
                                         lambda storage, location: None)
    try:
        torch.save(state, file)
    finally:
        tagging[0] = False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_a_checkpoint_written_on_a_gpu_resumes_on_a_cpu(saved):
    model, _ = tiny_model(seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    save_as_on_a_gpu({"iteration": 1, "optimizer": optimizer.state_dict(), "rng": checkpoint.rng_state(),
                      "extra": {}}, saved / "trainer.pt")
    with pytest.raises(RuntimeError, match="CUDA"):  # what a load without map_location meets
        torch.load(saved / "trainer.pt", weights_only=True)
    write_manifest(saved)
    state = checkpoint.load_trainer_state(saved)
    assert all(value.device.type == "cpu" for values in state["optimizer"]["state"].values()
               for value in values.values() if isinstance(value, torch.Tensor))
