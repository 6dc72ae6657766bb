"""Training on a Ray cluster: `lsp train --cluster.address local` (or `auto`, or a head node's address).

One driver process (the one `lsp train` runs in) drives two kinds of Ray actors:

- `RolloutWorker`s each build the run's engine, game and judges (`algorithms.assembly.build_run`) and play
  their share of the iteration's groups. They also compute the reference log-probs of their own rows with the
  base weights they hold (with LoRA: the adapter switched off), so the reference and the self-judges live
  where the base weights already are.
- `TrainerWorker`s form one torch process group (gloo on CPU, NCCL on GPU), shard the model with FSDP2
  (`algorithms.distributed.shard`) and take the optimizer step together: each trains on every N-th group of the
  batch, and the step equals the one-process step on the whole batch.

After each step the trainer's rank 0 gathers the trained weights (with LoRA the adapter alone, a few MB), the
driver puts them once in Ray's object store, and every rollout worker loads them and runs the same verified
weight sync as one process does (`agents.sync.WeightSync`: push into its engine, compare the probe log-probs).
A sync that does not finish within `sync_timeout_s` stops the run. Checkpoints are gathered on the trainer's
rank 0 and written in the one-process format, so either mode resumes the other's runs.

The loop, logs, checkpoints and held-out evaluation are `algorithms.trainer.Trainer`'s; this module replaces
how an iteration is collected and trained.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import yaml

from algorithms import checkpoint
from algorithms.base import REF_LOG_PROBS, RESPONSE_MASK
from algorithms.batch import make_batch, rollout_rows
from algorithms.collector import Collector, Rollout
from algorithms.config import ClusterConfig, TrainConfig
from algorithms.metrics import iteration_metrics
from algorithms.trainer import Trainer, _new_run_dir, iteration_seed, load_checkpoint_weights


class RolloutWorker:
    """A Ray actor that plays groups of the game with its own engine and judges."""

    def __init__(self, config: TrainConfig):
        from agents.sync import WeightSync
        from algorithms.assembly import build_run

        self.parts = build_run(replace(config, cluster=ClusterConfig(), overlap=False))  # its own weights
        self.collector = Collector(self.parts.make_env, self.parts.players(), config.group_size)
        self.weight_sync = WeightSync(self.parts.policy, self.parts.model, self.parts.tokenizer,
                                      config.sync_tolerance, config.sync_timeout_s)
        env = self.parts.make_env()
        self.roles = list(env.possible_agents)
        self.guard_names = [guard.name for guard in getattr(env, "guards", ())]
        env.close()

    def game(self) -> tuple[list[str], list[str], int]:
        """(roles, guard names, pad token id) of the run's game and tokenizer."""
        return self.roles, self.guard_names, self.parts.pad_token_id()

    def collect(self, num_groups: int, seed: int) -> tuple[list, Rollout, dict]:
        """Play `num_groups` groups from `seed`; returns their rows (with the reference log-probs), the rollout and
        the judges' parse failures."""
        torch.manual_seed(seed)
        failures = {name: getattr(judge, "failures", 0) for name, judge in self.parts.judges.items() if judge}
        rollout = self.collector.collect(num_groups, seed=seed)
        rows = rollout_rows(rollout)
        start = time.perf_counter()
        batch = make_batch(rows, self.roles, self.parts.pad_token_id())
        self.parts.fill_reference_log_probs(batch)
        reference, response = batch.get(REF_LOG_PROBS), batch.get(RESPONSE_MASK)
        for index, row in enumerate(rows):
            row.reference = reference[index][response[index]].tolist()
        rollout.timings["reference"] = time.perf_counter() - start
        failures = {name: getattr(judge, "failures", 0) - failures[name]
                    for name, judge in self.parts.judges.items() if judge and hasattr(judge, "failures")}
        return rows, rollout, failures

    def load_weights(self, state: dict):
        """Load the trainer's weights (a state dict of the trained parameters) and push them into the engine,
        verified; returns the `agents.sync.SyncReport`."""
        model = self.parts.model
        expected = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        unexpected = set(state) - set(model.state_dict())
        if unexpected or not expected <= set(state):
            raise RuntimeError(f"the trainer's weights do not fit the rollout worker's model: unexpected "
                               f"{sorted(unexpected)[:3]}, missing {sorted(expected - set(state))[:3]}")
        model.load_state_dict(state, strict=False)
        return self.weight_sync()

    def heldout_score(self, suite_name: str, max_new_tokens: int):
        from agents import SamplingParams
        from evaluation.suite import evaluate_policy, load_suite

        return evaluate_policy(self.parts.policy, load_suite(suite_name), SamplingParams(max_new_tokens, 0.0))[0]

    def close(self) -> None:
        self.parts.close()


class TrainerWorker:
    """A Ray actor: one process of the FSDP2 trainer."""

    def __init__(self, config: TrainConfig, rank: int, world_size: int):
        self.config, self.rank, self.world_size = config, rank, world_size

    def address(self) -> tuple[str, int]:
        """This node's address and a free port, for the process group's rendezvous (asked of rank 0)."""
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            return ray.util.get_node_ip_address(), probe.getsockname()[1]

    def setup(self, master_address: str, master_port: int, resume_from: str | None = None) -> None:
        """Join the process group, load the model (and the checkpoint `resume_from`), shard it, make the optimizer."""
        from algorithms import distributed
        from algorithms.assembly import check_run, load_models

        os.environ.update(MASTER_ADDR=master_address, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size))
        distributed.init()
        config, algorithm_class, algorithm_config = check_run(self.config)
        model, self.tokenizer, reference_model = load_models(config)
        if resume_from:
            load_checkpoint_weights(model, Path(resume_from), config)
        self.trained = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
        self.adapter_only = bool(config.lora_rank)
        if self.world_size > 1:
            distributed.shard(model)
        self.model = model
        self.loss = algorithm_class(model, config=algorithm_config, sampling=config.sampling(),
                                    reference_network=reference_model, packed=config.packing)
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                           weight_decay=config.weight_decay)
        if resume_from:
            state = checkpoint.load_trainer_state(Path(resume_from))
            self._load_optimizer_state(state["optimizer"])
            self.loss.load_algorithm_state(state["extra"].get("algorithm", {}))

    def step(self, batch) -> dict[str, float]:
        """This process's share of the optimizer step on `batch` (the same batch on every process)."""
        from algorithms.update import optimizer_step

        config = self.config
        self.loss.compute_advantages(batch)
        return optimizer_step(self.model, self.loss, self.optimizer, batch, config.micro_batches()[0],
                              config.max_grad_norm, config.autocast, self.rank, self.world_size,
                              rows_per_pass=config.rows_per_pass)

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The trained parameters (with LoRA the adapter; else every weight), gathered; None except on rank 0."""
        state = self._full_state_dict()
        if self.rank:
            return None
        return {name: state[name] for name in self.trained} if self.adapter_only else state

    def save(self, run_dir: str, iteration: int, config_yaml: str) -> None:
        """Write checkpoint `iteration` from rank 0, in the one-process format (every process takes part)."""
        state, optimizer_state = self._full_state_dict(), self._optimizer_state()
        if self.rank == 0:
            checkpoint.save_checkpoint(Path(run_dir), iteration, self.model, self.tokenizer, optimizer_state,
                                       config_yaml, extra={"algorithm": self.loss.algorithm_state()},
                                       state_dict=state)

    def close(self) -> None:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

    # --- gathered state, in the one-process format --------------------------------
    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        from algorithms.distributed import full_state_dict

        return full_state_dict(self.model) if self.world_size > 1 else dict(self.model.state_dict())

    def _optimizer_state(self) -> dict:
        """`optimizer.state_dict()` as one process would have it: states keyed by the parameter's index."""
        if self.world_size == 1:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(self.model, self.optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank:  # gathered on rank 0 only
            return {}
        index = {name: i for i, name in enumerate(self.trained)}
        return {"state": {index[name]: value for name, value in state["state"].items()},
                "param_groups": [group | {"params": [index[name] for name in group["params"]]}
                                 for group in state["param_groups"]]}

    def _load_optimizer_state(self, state: dict) -> None:
        if self.world_size == 1:
            self.optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        by_name = {"state": {self.trained[i]: value for i, value in state["state"].items()},
                   "param_groups": [group | {"params": [self.trained[i] for i in group["params"]]}
                                    for group in state["param_groups"]]}
        set_optimizer_state_dict(self.model, self.optimizer, by_name, options=StateDictOptions(full_state_dict=True))


class ClusterTrainer(Trainer):
    """`Trainer` over Ray actors: `config.cluster.rollout_workers` rollout workers and
    `config.cluster.trainer_processes` FSDP2 trainer processes."""

    def __init__(self, config: TrainConfig, run_dir: Path | None = None, resume_from: Path | None = None):
        from algorithms.assembly import check_run
        from evaluation.suite import load_suite

        ray = _import_ray()

        config, _, _ = check_run(config)  # a wrong setting fails before Ray starts
        self.config, self.start_iteration = config, 0
        self.suite = load_suite(config.eval_suite) if config.eval_suite else None
        self.run_dir = Path(run_dir) if run_dir else _new_run_dir(config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cluster = config.cluster
        self.started_ray = start_ray(cluster)
        resources = {"num_cpus": cluster.cpus_per_worker, "num_gpus": cluster.gpus_per_worker}
        trainer_actor = ray.remote(**resources)(TrainerWorker)
        self.trainers = [trainer_actor.remote(config, rank, cluster.trainer_processes)
                         for rank in range(cluster.trainer_processes)]
        master = ray.get(self.trainers[0].address.remote())
        setups = [t.setup.remote(*master, str(resume_from) if resume_from else None) for t in self.trainers]
        rollout_actor = ray.remote(**resources)(RolloutWorker)
        self.workers = [rollout_actor.remote(config) for _ in range(cluster.rollout_workers)]
        ray.get(setups)
        self.roles, self.guard_names, self.pad_token_id = ray.get(self.workers[0].game.remote())
        self.next_rollout = None  # with overlap: the next iteration's, being collected
        self.sync_weights()  # the engines start from the trainer's weights

    @classmethod
    def _restored(cls, config: TrainConfig, run_dir: Path, path: Path, state: dict,
                  judges: dict | None) -> "ClusterTrainer":
        """The trainer processes load checkpoint `path` themselves (`TrainerWorker.setup`)."""
        if judges is not None:
            raise ValueError("a cluster run builds its judges in each rollout worker; judges cannot be passed in")
        return cls(config, run_dir, resume_from=path)

    def sync_weights(self):
        """Gather the trained weights from the trainer, load them into every rollout worker and verify each engine;
        returns a `SyncReport` of the whole sync (the largest probe gap of any worker)."""
        import ray

        from agents.sync import SyncReport, WeightSyncTimeout

        start = time.perf_counter()
        state = ray.put(ray.get([t.weights.remote() for t in self.trainers])[0])
        try:
            reports = ray.get([w.load_weights.remote(state) for w in self.workers],
                              timeout=self.config.sync_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise WeightSyncTimeout(f"the rollout workers did not load and verify the weights within "
                                    f"{self.config.sync_timeout_s:g} s; stopping the run") from None
        worst, verify_s = max(reports, key=lambda report: report.max_abs_diff), max(r.verify_s for r in reports)
        return SyncReport(time.perf_counter() - start - verify_s, verify_s, worst.max_abs_diff, worst.mean_abs_diff)

    def iteration(self, iteration: int) -> tuple[dict, Rollout]:
        """One iteration: the workers collect their shares, the trainer steps on the whole batch, the engines sync."""
        import ray

        config, start = self.config, time.perf_counter()
        share = config.num_queries // len(self.workers)
        results = ray.get(self.next_rollout or self.collect(iteration))
        self.next_rollout = None
        if config.overlap and iteration < config.iterations:  # sampled with these weights, trained on after the step
            self.next_rollout = self.collect(iteration + 1)
        rows, episodes, failures = [], [], {}
        for i, (worker_rows, rollout, worker_failures) in enumerate(results):
            for item in (*worker_rows, *rollout.episodes):  # group numbers are per worker: make them unique
                item.group += i * share
            rows += worker_rows
            episodes += rollout.episodes
            for name, count in worker_failures.items():
                failures[f"{name}/parse_failures"] = failures.get(f"{name}/parse_failures", 0) + count
        timings = {phase: max(r[1].timings.get(phase, 0.0) for r in results)  # the workers run side by side
                   for phase in ("generate", "env_and_judge", "reference")}
        rollout = Rollout(episodes, timings)
        batch = make_batch(rows, self.roles, self.pad_token_id)

        tick = time.perf_counter()
        losses = ray.get([t.step.remote(batch) for t in self.trainers])[0]
        train_time = time.perf_counter() - tick
        tick = time.perf_counter()
        if self.next_rollout:  # the engines take new weights between collections only
            ray.wait(self.next_rollout, num_returns=len(self.next_rollout))
        waited = time.perf_counter() - tick
        sync = self.sync_weights()

        metrics = losses | iteration_metrics(rollout, batch, self.roles, self.guard_names) | failures
        generated = int(batch.get(RESPONSE_MASK).sum())
        metrics.update({
            "time/generate": timings["generate"], "time/env_and_judge": timings["env_and_judge"],
            "time/reference": timings["reference"], "time/train": train_time, "time/overlap_wait": waited,
            "time/sync": sync.total_s,
            "sync/max_logprob_gap": sync.max_abs_diff, "time/iteration": time.perf_counter() - start,
            "throughput/generated_tokens_per_s": generated / max(timings["generate"], 1e-9),
        })
        return metrics, rollout

    def collect(self, iteration: int) -> list:
        """Start the workers on their shares of `iteration`'s groups, with the seeds a one-process run would use;
        returns the pending results."""
        share = self.config.num_queries // len(self.workers)
        seed = iteration_seed(self.config, iteration)
        return [worker.collect.remote(share, seed + i * share) for i, worker in enumerate(self.workers)]

    def heldout_score(self):
        import ray

        return ray.get(self.workers[0].heldout_score.remote(self.config.eval_suite, self.config.eval_max_new_tokens))

    def save(self, iteration: int) -> Path:
        import ray

        config_yaml = yaml.safe_dump(asdict(self.config), sort_keys=False)
        ray.get([t.save.remote(str(self.run_dir), iteration, config_yaml) for t in self.trainers])
        return checkpoint.latest_checkpoint(self.run_dir)

    def close(self) -> None:
        import ray

        try:
            ray.get([w.close.remote() for w in self.workers] + [t.close.remote() for t in self.trainers])
        finally:
            for actor in (*self.workers, *self.trainers):
                ray.kill(actor)
            if self.started_ray:
                ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("--cluster.address needs Ray: pip install 'language-self-play[cluster]' "
                          "(./setup.sh installs it)") from None
    return ray


def start_ray(cluster: ClusterConfig) -> bool:
    """Connect to the cluster `cluster.address` names, or start one on this machine ("local"); returns whether it
    started one. A local cluster offers at least as many CPUs as the actors ask for, so that every actor starts
    on a small machine too (they then share its cores)."""
    import ray

    if ray.is_initialized():
        return False
    if cluster.address == "local":
        wanted = (cluster.rollout_workers + cluster.trainer_processes) * cluster.cpus_per_worker
        ray.init(num_cpus=max(os.cpu_count() or 1, int(wanted + 0.999)), include_dashboard=False,
                 log_to_driver=True)
        return True
    try:
        ray.init(address=cluster.address, log_to_driver=True)
    except ConnectionError as error:
        raise ConnectionError(f"cannot reach the Ray cluster at {cluster.address!r} ({error}); start one with "
                              f"`ray start --head`, or use --cluster.address local") from error
    return False
