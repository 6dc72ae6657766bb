"""One trainer at both scales: the same short run in one process and on a local Ray cluster (2 rollout workers, 2
FSDP2 trainer processes), on a tiny model, logging the same metrics, writing the same checkpoints, and resuming
each other's runs."""
import json

import pytest
import torch

from algorithms import checkpoint
from algorithms.config import ClusterConfig, TrainConfig
from algorithms.trainer import Trainer
from evaluation.suite import load_suite

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.distributed

CLUSTER = ClusterConfig(address="local", rollout_workers=2, trainer_processes=2)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray cluster for the module, with a CPU for each of 2 rollout workers and 2 trainer processes."""
    ray.init(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def run_config(tiny_path, tmp_path, scale: str, **overrides) -> TrainConfig:
    """lsp-zero on the verifiable game (no judge model), with LoRA; `scale` "local" (one process) or "cluster"."""
    settings = dict(model=tiny_path, engine="hf", game="ConstrainedInstructions-v1", algorithm="lsp-zero",
                    num_queries=4, group_size=2, batch_size=2, grad_accumulation=2, max_new_tokens=8, iterations=2,
                    lr=1e-2, lora_rank=4, lora_target_modules=["q_proj", "v_proj"], autocast=False, eval_suite=None,
                    output=str(tmp_path), save_every=1, cluster=CLUSTER if scale == "cluster" else ClusterConfig())
    settings.update(overrides)
    return TrainConfig(**settings)


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def layout(path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


def train(config: TrainConfig):
    trainer = Trainer(config)
    try:
        return trainer.train(progress=False)
    finally:
        trainer.close()


@pytest.mark.parametrize("first, then", [("local", "cluster"), ("cluster", "local")])
def test_the_same_run_at_both_scales_logs_the_same_metrics_and_resumes_across_scales(local_ray, tiny_path, tmp_path,
                                                                                     first, then):
    run_dir = train(run_config(tiny_path, tmp_path, first))
    trainer = Trainer.resume(run_dir, iterations=3, cluster=CLUSTER if then == "cluster" else ClusterConfig())
    try:
        assert trainer.start_iteration == 2
        assert type(trainer.rollout).__name__ == ("RayRollout" if then == "cluster" else "LocalRollout")
        trainer.train(progress=False)
    finally:
        trainer.close()

    lines = metrics(run_dir)
    assert [line["iteration"] for line in lines] == [1, 2, 3]
    assert set(lines[2]) == set(lines[0])  # the same metrics at both scales
    for key in ("memory/peak_gib", "memory/peak_gib/collect", "memory/peak_gib/reference", "memory/peak_gib/train",
                "memory/peak_gib/sync", "time/generate", "time/reference", "time/train", "time/sync", "sync/bytes"):
        assert key in lines[0], key
    for line in lines:
        assert torch.isfinite(torch.tensor(line["loss/objective"])) and line["loss/grad_norm"] > 0
        assert line["sync/max_logprob_gap"] <= 0.05  # every engine verified against the trainer's weights
    assert len({line["reward/solver"] for line in lines}) > 1 or lines[0]["reward/solver"] != 0

    # one checkpoint layout: the adapter PEFT loads, the optimizer keyed by parameter index as one process has it
    root = run_dir / "checkpoints"
    assert layout(root / "iter_000002") == layout(root / "iter_000003")
    path = checkpoint.latest_checkpoint(run_dir)
    assert path.name == "iter_000003" and checkpoint.checkpoint_problem(path) is None
    from safetensors.torch import load_file

    adapter = load_file(path / "model" / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert any(value.abs().sum() > 0 for name, value in adapter.items() if "lora_B" in name)  # trained
    assert sorted(checkpoint.load_trainer_state(path)["optimizer"]["state"]) == list(range(len(adapter)))

    # on the cluster, the weight broadcast carries the adapter alone: its float32 values, nothing else
    cluster_line = lines[0] if first == "cluster" else lines[2]
    assert cluster_line["sync/bytes"] == 4 * sum(value.numel() for value in adapter.values())


def test_overlap_on_the_cluster_samples_a_step_behind(local_ray, tiny_path, tmp_path):
    """The workers sample iteration k+1 while the trainer processes step on k."""
    run_dir = train(run_config(tiny_path, tmp_path, "cluster", iterations=3, overlap=True))
    lines = metrics(run_dir)
    assert lines[0]["loss/sampler_gap"] == pytest.approx(0.0, abs=1e-4)  # the first samples are on-policy
    assert min(abs(line["loss/sampler_gap"]) for line in lines[1:]) > 1e-4  # sampled before the last step


def test_the_ray_trainer_processes_take_the_one_process_step(local_ray, tiny_path, tmp_path, eight_groups):
    """Two TrainerWorker actors (one gloo process group, FSDP2) and one process, from the same weights, take the
    same AdamW step on the same batch."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from algorithms.assembly import check_run, load_models
    from algorithms.cluster import TrainerWorker
    from algorithms.update import optimizer_step

    _, batch = eight_groups
    config = run_config(tiny_path, tmp_path, "cluster", num_queries=8, batch_size=4, grad_accumulation=2,
                        algorithm_args={"aggregation": "prompt_mean"}, min_p=0.0)
    actor = ray.remote(num_cpus=1)(TrainerWorker)
    workers = [actor.remote(config, rank, 2) for rank in range(2)]
    address, port = ray.get(workers[0].address.remote())
    ray.get([w.join.remote(address, port, rank, 2, 2, 60.0) for rank, w in enumerate(workers)])
    ray.get([w.setup.remote() for w in workers])
    sharded_losses = ray.get([w.step.remote(batch.clone()) for w in workers])[0][0]
    ray.get([w.save.remote(str(tmp_path / "sharded"), 1, "{}") for w in workers])
    ray.get([w.close.remote() for w in workers])
    sharded = load_file(tmp_path / "sharded" / "checkpoints" / "iter_000001" / "model" / "adapter_model.safetensors")

    config, algorithm_class, algorithm_config = check_run(config)
    model, _, reference = load_models(config)
    loss = algorithm_class(model, config=algorithm_config, sampling=config.sampling(), reference_network=reference)
    before = {name: value.clone() for name, value in get_peft_model_state_dict(model).items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    loss.compute_advantages(batch)
    alone_losses = optimizer_step(model, loss, optimizer, batch, 4, config.max_grad_norm)
    alone = get_peft_model_state_dict(model)
    assert set(sharded) == set(alone)
    assert any(not torch.equal(alone[name], before[name]) for name in alone)
    for name in alone:
        torch.testing.assert_close(sharded[name], alone[name], atol=1e-6, rtol=1e-5, msg=name)
    assert sharded_losses == pytest.approx(alone_losses, rel=1e-5, abs=1e-7)


def test_the_held_out_answers_are_spread_over_the_workers_and_do_not_depend_on_their_number(local_ray, tmp_path):
    """The real model's greedy answers to a small suite: the same from one process, one rollout worker and two
    (each answering its own share of the prompts), in the suite's order; so the same scores."""
    from agents import SamplingParams
    from agents.models import DEFAULT_MODEL

    prompts = [item.prompt for item in load_suite("if-heldout").items[:7]]  # an odd count: unequal shares
    greedy, answers, scores = SamplingParams(12, temperature=0.0), {}, {}
    for workers in (0, 1, 2):
        cluster = ClusterConfig(address="local", rollout_workers=workers, trainer_processes=1) if workers else \
            ClusterConfig()
        trainer = Trainer(run_config(DEFAULT_MODEL, tmp_path / str(workers), "local", cluster=cluster, num_queries=2,
                                     batch_size=1, eval_suite="if-heldout", eval_max_new_tokens=12))
        try:
            answers[workers] = trainer.rollout.answer_prompts(prompts, greedy)
            if workers:
                shares = [ray.get(worker.answer_prompts.remote(prompts[:4], greedy))
                          for worker in trainer.rollout.workers]  # every worker holds the same weights
                assert all(share == answers[workers][:4] for share in shares)
            scores[workers] = trainer.heldout_score().as_dict()
        finally:
            trainer.close()
    assert len(answers[0]) == 7 and len(set(answers[0])) > 1
    assert answers[1] == answers[0] and answers[2] == answers[0]
    assert scores[1] == scores[0] and scores[2] == scores[0]

