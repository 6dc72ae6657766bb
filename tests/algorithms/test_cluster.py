"""Training on a local Ray cluster: rollout workers and FSDP2 trainer processes as Ray actors, on a tiny model."""
import json

import pytest
import torch

from algorithms import checkpoint
from algorithms.config import ClusterConfig, TrainConfig

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray cluster for the module, with a CPU for each of 2 rollout workers and 2 trainer processes."""
    ray.init(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def cluster_config(tiny_path, tmp_path, **overrides) -> TrainConfig:
    """lsp-zero on the verifiable game (no judge model), 2 rollout workers and 2 trainer processes."""
    settings = dict(model=tiny_path, engine="hf", game="ConstrainedInstructions-v1", algorithm="lsp-zero",
                    num_queries=4, group_size=2, batch_size=2, grad_accumulation=2, max_new_tokens=8, iterations=2,
                    lr=1e-2, lora_rank=4, lora_target_modules=["q_proj", "v_proj"], autocast=False, eval_suite=None,
                    output=str(tmp_path), save_every=1,
                    cluster=ClusterConfig(address="local", rollout_workers=2, trainer_processes=2))
    settings.update(overrides)
    return TrainConfig(**settings)


def test_two_rollout_workers_and_two_trainer_processes_train_checkpoint_and_resume(local_ray, tiny_path, tmp_path):
    from algorithms.cluster import ClusterTrainer

    trainer = ClusterTrainer(cluster_config(tiny_path, tmp_path))
    try:
        run_dir = trainer.train(progress=False)
    finally:
        trainer.close()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    for line in lines:
        assert torch.isfinite(torch.tensor(line["loss/objective"])) and line["loss/grad_norm"] > 0
        assert line["sync/max_logprob_gap"] <= 0.05  # every engine verified against the trainer's weights
    assert lines[0]["reward/solver"] != pytest.approx(0.0) or lines[1]["reward/solver"] != pytest.approx(0.0)

    # the checkpoint is gathered on rank 0, in the one-process format: an adapter PEFT loads, the optimizer's
    # states keyed by parameter index as `optimizer.state_dict()` has them
    path = checkpoint.latest_checkpoint(run_dir)
    assert path.name == "iter_000002" and checkpoint.checkpoint_problem(path) is None
    from safetensors.torch import load_file

    adapter = load_file(path / "model" / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert any(value.abs().sum() > 0 for name, value in adapter.items() if "lora_B" in name)  # trained
    optimizer = checkpoint.load_trainer_state(path)["optimizer"]
    assert sorted(optimizer["state"]) == list(range(len(adapter)))

    # resumed with overlap: the workers sample iteration 4 while the trainer steps on 3
    resumed = ClusterTrainer.resume(run_dir, iterations=4, overlap=True)
    try:
        assert resumed.start_iteration == 2
        resumed.train(progress=False)
    finally:
        resumed.close()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4]
    assert lines[2]["loss/sampler_gap"] == pytest.approx(0.0, abs=1e-4)  # sampled on-policy after the resume
    assert abs(lines[3]["loss/sampler_gap"]) > 1e-4  # sampled before iteration 3's step


def test_the_ray_trainer_processes_take_the_one_process_step(local_ray, tiny_path, tmp_path, eight_groups):
    """Two TrainerWorker actors (one gloo process group, FSDP2) and one process, from the same weights, take the
    same AdamW step on the same batch."""
    from algorithms.assembly import check_run, load_models
    from algorithms.cluster import TrainerWorker
    from algorithms.update import optimizer_step

    _, batch = eight_groups
    config = cluster_config(tiny_path, tmp_path, num_queries=8, batch_size=4, grad_accumulation=2,
                            algorithm_args={"aggregation": "prompt_mean"}, min_p=0.0)
    actor = ray.remote(num_cpus=1)(TrainerWorker)
    workers = [actor.remote(config, rank, 2) for rank in range(2)]
    master = ray.get(workers[0].address.remote())
    ray.get([w.setup.remote(*master) for w in workers])
    sharded_losses = ray.get([w.step.remote(batch.clone()) for w in workers])[0]
    sharded = ray.get([w.weights.remote() for w in workers])[0]
    ray.get([w.close.remote() for w in workers])

    config, algorithm_class, algorithm_config = check_run(config)
    model, _, reference = load_models(config)
    loss = algorithm_class(model, config=algorithm_config, sampling=config.sampling(), reference_network=reference)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    loss.compute_advantages(batch)
    alone_losses = optimizer_step(model, loss, optimizer, batch, 4, config.max_grad_norm)
    alone = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    assert set(sharded) == set(alone)
    assert any(not torch.equal(alone[name], before[name]) for name in alone)
    for name in alone:
        torch.testing.assert_close(sharded[name], alone[name], atol=1e-6, rtol=1e-5, msg=name)
    assert sharded_losses == pytest.approx(alone_losses, rel=1e-5, abs=1e-7)
