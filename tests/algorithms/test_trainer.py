"""The training loop on a tiny random model with programmatic rewards."""
import json
from pathlib import Path

import pytest
import torch

import algorithms
from agents.judges import FunctionJudge
from algorithms.checkpoint import CheckpointError
from algorithms.config import TrainConfig
from algorithms.trainer import Trainer


def space_fraction(query: str, answer: str) -> float:
    """A programmatic reward: the share of the answer's characters that are spaces."""
    return answer.count(" ") / max(len(answer), 1)


JUDGES = {"judge": FunctionJudge(space_fraction, name="spaces")}


def tiny_config(tiny_path, tmp_path, **overrides) -> TrainConfig:
    settings = dict(model=tiny_path, engine="hf", game="LanguageSelfPlay-v0", algorithm="lsp-zero", num_queries=2,
                    group_size=2, batch_size=1, grad_accumulation=2, max_new_tokens=8, iterations=2, lr=1e-3,
                    output=str(tmp_path), save_every=1, lora_rank=0, min_p=0.0, autocast=False, eval_suite=None)
    settings.update(overrides)
    return TrainConfig(**settings)


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_metrics_transcripts_plot_and_checkpoints(tiny_path, tmp_path):
    trainer = Trainer(tiny_config(tiny_path, tmp_path), judges=JUDGES)
    run_dir = trainer.train(progress=False)
    trainer.close()
    records = metrics(run_dir)
    assert [r["iteration"] for r in records] == [1, 2]
    for key in ("reward/solver", "reward/challenger", "loss/kl", "length/solver", "entropy/solver",
                "time/generate", "time/train", "time/sync", "value/mean", "memory/peak_gib/train"):
        assert key in records[0], key
    assert records[0]["reward/challenger"] == pytest.approx(-records[0]["judge/reward"], abs=1e-6)
    assert records[0]["memory/peak_gib"] == max(records[0][f"memory/peak_gib/{phase}"]
                                                 for phase in ("collect", "reference", "train", "sync"))
    assert (run_dir / "transcripts.md").read_text().count("## Iteration") == 2
    assert (run_dir / "curves.png").stat().st_size > 0
    assert (run_dir / "checkpoints" / "latest").read_text() == "iter_000002"
    assert (run_dir / "checkpoints" / "iter_000002" / "model" / "config.json").exists()
    assert any((run_dir / "tensorboard").iterdir())



def test_time_limit_stops_early_with_a_checkpoint(tiny_path, tmp_path):
    config = tiny_config(tiny_path, tmp_path, iterations=50, save_every=10, time_limit_minutes=1e-6)
    trainer = Trainer(config, judges=JUDGES)
    run_dir = trainer.train(progress=False)
    trainer.close()
    assert [r["iteration"] for r in metrics(run_dir)] == [1]
    assert (run_dir / "checkpoints" / "latest").read_text() == "iter_000001"


def test_time_limit_must_be_positive(tiny_path, tmp_path):
    with pytest.raises(ValueError, match="time_limit_minutes"):
        tiny_config(tiny_path, tmp_path, time_limit_minutes=0)

def test_resume_matches_an_uninterrupted_run(tiny_path, tmp_path):
    straight = Trainer(tiny_config(tiny_path, tmp_path / "a", iterations=3), judges=JUDGES)
    straight_dir = straight.train(progress=False)
    straight.close()

    first = Trainer(tiny_config(tiny_path, tmp_path / "b", iterations=2), judges=JUDGES)
    resumed_dir = first.train(progress=False)
    first.close()
    second = Trainer.resume(resumed_dir, judges=JUDGES, iterations=3)
    assert second.start_iteration == 2
    second.train(progress=False)
    second.close()

    expected, got = metrics(straight_dir)[2], metrics(resumed_dir)[2]
    assert got["iteration"] == 3
    for key in ("reward/solver", "reward/challenger", "loss/objective", "loss/kl", "length/solver"):
        assert got[key] == pytest.approx(expected[key], abs=1e-5), key


def test_resume_from_a_corrupt_checkpoint_fails_clearly(tiny_path, tmp_path):
    trainer = Trainer(tiny_config(tiny_path, tmp_path, iterations=1), judges=JUDGES)
    run_dir = trainer.train(progress=False)
    trainer.close()
    (run_dir / "checkpoints" / "iter_000001" / "trainer.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        Trainer.resume(run_dir, judges=JUDGES)


def test_resume_without_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer.resume(tmp_path, judges=JUDGES)


def test_user_algorithm_registered_outside_the_package_trains(tiny_path, tmp_path):
    from algorithms.lsp_zero import LSPZero

    weights = []

    class SolverOnly(LSPZero):
        """Trains only the solver."""

        def compute_advantages(self, batch):
            batch = super().compute_advantages(batch)
            batch.set("row_weight", batch.get("row_weight") * batch.get("branch").float())
            weights.append(batch.get("row_weight").clone())
            return batch

    algorithms.register("solver-only", SolverOnly)
    try:
        trainer = Trainer(tiny_config(tiny_path, tmp_path, algorithm="solver-only", iterations=1), judges=JUDGES)
        before = [p.detach().clone() for p in trainer.update.model.parameters()]
        trainer.train(progress=False)
        trainer.close()
    finally:
        algorithms.registry.unregister("solver-only")
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.update.model.parameters()))
    assert len(weights) == 1 and (weights[0] == 0).any() and (weights[0] > 0).any()  # its advantages were used


@pytest.mark.slow
def test_reward_goes_up_on_a_programmatic_game(tiny_path, tmp_path):
    """Thirty steps on the tiny model raise the solver's space share (from about 0.1)."""
    config = tiny_config(tiny_path, tmp_path, iterations=30, num_queries=4, group_size=4, batch_size=2,
                         max_new_tokens=8, lr=5e-2, beta=0.0, save_every=100, transcript_every=100)
    trainer = Trainer(config, judges=JUDGES)
    run_dir = trainer.train(progress=False)
    trainer.close()
    rewards = [r["judge/reward"] for r in metrics(run_dir)]
    early, late = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert late > early + 0.08, rewards


def test_held_out_suite_is_answered_before_and_after_training(tiny_path, tmp_path, capsys):
    suite = tmp_path / "small.jsonl"
    suite.write_text("\n".join(json.dumps(item) for item in [
        {"id": "a", "prompt": "Greet me.", "constraints": [{"kind": "all_lowercase"}]},
        {"id": "b", "prompt": "Count.", "constraints": [{"kind": "max_words", "parameters": {"n": 3}}]},
    ]) + "\n")
    trainer = Trainer(tiny_config(tiny_path, tmp_path, iterations=1, eval_suite=str(suite), eval_max_new_tokens=4),
                      judges=JUDGES)
    run_dir = trainer.train(progress=False)
    trainer.close()
    results = json.loads((run_dir / "eval.json").read_text())
    assert set(results) == {"before", "after"}
    assert results["after"]["prompts"] == 2 and 0 <= results["after"]["strict"] <= 1
    output = capsys.readouterr().out
    assert "before training: strict pass" in output and "after training: strict pass" in output


def test_an_unknown_suite_fails_before_any_model_loads(tmp_path):
    with pytest.raises(ValueError, match="no suite named"):
        Trainer(TrainConfig(model=str(tmp_path / "no-model"), eval_suite="no-such-suite"))


def test_lsp_on_a_game_without_a_quality_judge_fails_before_any_model_loads(tmp_path):
    with pytest.raises(ValueError, match="takes no quality_judge"):
        Trainer(TrainConfig(model=str(tmp_path / "no-model"), game="ArithmeticSelfPlay-v0", algorithm="lsp"))


@pytest.mark.parametrize("algorithm, judges", [("lsp", ["quality_judge"]), ("lsp-zero", [])])
def test_only_the_judges_the_game_takes_are_built_on_the_reference(tiny_path, tmp_path, algorithm, judges):
    """ConstrainedInstructions verifies R itself and takes only R_Q; with the hf engine the self-judges score on
    the reference (the base weights), not on a second engine."""
    config = tiny_config(tiny_path, tmp_path, game="ConstrainedInstructions-v1", algorithm=algorithm,
                         quality_judge="rubric", judge="helpfulness")
    trainer = Trainer(config)
    try:
        assert sorted(trainer.rollout.parts.judges) == judges
        assert all(judge.policy is trainer.rollout.parts.reference for judge in trainer.rollout.parts.judges.values())
        assert trainer.rollout.parts.judge_policy is None
    finally:
        trainer.close()


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_gradient_checkpointing_gives_the_same_update(tiny_path, tmp_path, lora_rank):
    before, after = [], []
    for checkpointing in (False, True):
        trainer = Trainer(tiny_config(tiny_path, tmp_path / str(checkpointing), iterations=1, lora_rank=lora_rank,
                                      gradient_checkpointing=checkpointing), judges=JUDGES)
        assert trainer.update.model.is_gradient_checkpointing is checkpointing
        before.append([p.detach().clone() for p in trainer.update.model.parameters() if p.requires_grad])
        trainer.train(progress=False)
        trainer.close()
        after.append([p.detach().clone() for p in trainer.update.model.parameters() if p.requires_grad])
    assert all(torch.equal(a, b) for a, b in zip(*before))
    assert not all(torch.equal(a, b) for a, b in zip(before[0], after[0]))  # the step moved the weights
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*after))


def test_packing_gives_the_same_update_and_a_zero_kl_at_the_start(tiny_path, tmp_path):
    """Packed passes compute the policy's and the reference's log-probs the same way, so the first KL is exactly 0,
    and the update equals the padded passes' (rows of different lengths, several rows per pass)."""
    after = []
    for packing in (False, True):
        trainer = Trainer(tiny_config(tiny_path, tmp_path / str(packing), iterations=1, lora_rank=4, num_queries=4,
                                      group_size=3, batch_size=2, rows_per_pass=3, packing=packing), judges=JUDGES)
        assert trainer.rollout.parts.loss.packed is packing
        run_dir = trainer.train(progress=False)
        trainer.close()
        assert metrics(run_dir)[0]["loss/kl"] == 0.0
        after.append([p.detach().clone() for p in trainer.update.model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*after))


def test_overlap_needs_an_engine_with_its_own_weights(tiny_path, tmp_path):
    with pytest.raises(ValueError, match="own copy of the weights"):
        Trainer(tiny_config(tiny_path, tmp_path, overlap=True), judges=JUDGES)


def test_overlap_trains_on_samples_one_step_old_with_the_clipped_ratio(tiny_path, tmp_path):
    """With overlap the engine (here an HF engine with its own copy of the weights, synced after each step) samples
    iteration k+1 while the trainer steps on k. From iteration 2 on, the samples come from the weights before the
    last step: the sampler's log-probs then differ from the trainer's, which they do not without overlap."""
    import copy

    from agents.hf import HFPolicy
    from agents.models import load_model

    gaps = {}
    for overlap in (False, True):
        config = tiny_config(tiny_path, tmp_path / str(overlap), overlap=overlap, iterations=3, lr=1e-2)
        engine_model, tokenizer = load_model(tiny_path)
        trainer = Trainer(config, judges=JUDGES, policy=HFPolicy(copy.deepcopy(engine_model), tokenizer))
        try:
            assert (trainer.rollout.parts.loss.config.clip_epsilon == 0.2) is overlap
            run_dir = trainer.train(progress=False)
        finally:
            trainer.close()
        gaps[overlap] = [abs(line["loss/sampler_gap"]) for line in metrics(run_dir)]
    assert max(gaps[False]) < 1e-4
    assert gaps[True][0] < 1e-4 and min(gaps[True][1:]) > 10 * max(gaps[False])


@pytest.mark.parametrize("overlap", [False, True])
def test_the_engine_sleeps_through_each_step_unless_it_is_collecting(tiny_path, tmp_path, overlap):
    """vLLM on a GPU frees its memory for the step (`Policy.sleep`); with overlap it is sampling then, and stays
    awake, except in the last iteration, which starts no collection."""
    import copy

    from agents.hf import HFPolicy
    from agents.models import load_model

    events = []

    class Recording(HFPolicy):
        def generate_batch(self, *args, **kwargs):
            events.append("generate")
            return super().generate_batch(*args, **kwargs)

        def sleep(self):
            events.append("sleep")

        def wake_up(self):
            events.append("wake_up")

    engine_model, tokenizer = load_model(tiny_path)
    trainer = Trainer(tiny_config(tiny_path, tmp_path, overlap=overlap, iterations=3), judges=JUDGES,
                      policy=Recording(copy.deepcopy(engine_model), tokenizer))
    try:
        trainer.train(progress=False)
    finally:
        trainer.close()
    assert "generate" in events
    assert events.count("sleep") == events.count("wake_up") == (1 if overlap else 3)
    for start in [i for i, event in enumerate(events) if event == "sleep"]:
        assert events[start + 1] == "wake_up"  # nothing samples while the engine sleeps


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_rows_per_pass_gives_the_same_update(tiny_path, tmp_path, lora_rank):
    after = []
    for rows_per_pass in (0, 1, 3):
        trainer = Trainer(tiny_config(tiny_path, tmp_path / str(rows_per_pass), iterations=1, lora_rank=lora_rank,
                                      num_queries=4, group_size=3, batch_size=2, rows_per_pass=rows_per_pass),
                          judges=JUDGES)
        trainer.train(progress=False)
        trainer.close()
        after.append([p.detach().clone() for p in trainer.update.model.parameters() if p.requires_grad])
    for other in after[1:]:
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after[0], other))


def test_kl_is_exactly_zero_before_the_first_step_under_autocast(tiny_path, tmp_path):
    """The reference pass computes each row in the same padded pass as the training step, so bfloat16 rounding
    is the same on both sides."""
    trainer = Trainer(tiny_config(tiny_path, tmp_path, iterations=1, lora_rank=4, autocast=True, num_queries=4,
                                  group_size=3, batch_size=2, rows_per_pass=2), judges=JUDGES)
    try:
        metrics, _ = trainer.iteration(1)
    finally:
        trainer.close()
    assert metrics["loss/kl"] == 0.0
