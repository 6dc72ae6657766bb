"""Training on a Ray cluster: `lsp train --cluster.address local` (or `auto`, or a head node's address).

The backends of `algorithms.backends` for a Ray cluster; the `Trainer` that drives them is the one-process
trainer. Two kinds of Ray actors hold the work:

- `RolloutWorker`s each hold a `LocalRollout` (the run's engine, game and judges, built by
  `algorithms.assembly.build_run`) and play their share of the iteration's groups. They also compute the
  reference log-probs of their own rows with the base weights they hold (with LoRA: the adapter switched off),
  so the reference and the self-judges live where the base weights already are.
- `TrainerWorker`s each hold a `LocalUpdate` on one rank of a torch process group (gloo on CPU, NCCL on GPU),
  with the model sharded by FSDP2 (`algorithms.distributed.shard`): each trains on every N-th group of the
  batch, and the step equals the one-process step on the whole batch.

All actors join one torch world (`algorithms.distributed.join_world`). After each step the trainer's rank 0
broadcasts the trained parameters (with LoRA the adapter alone, a few MB) to every rollout worker in one flat
tensor; each loads them and runs the same verified weight sync as one process does (`agents.sync.WeightSync`:
push into its engine, compare the probe log-probs). A sync that does not finish within `sync_timeout_s` stops
the run. Checkpoints are gathered on the trainer's rank 0 and written in the one-process format, so either
scale resumes the other's runs.
"""
from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import torch

from agents.sync import SyncReport
from algorithms.backends import Collected, LocalRollout, LocalUpdate, load_checkpoint_weights
from algorithms.base import REF_LOG_PROBS, RESPONSE_MASK
from algorithms.batch import make_batch
from algorithms.collector import Rollout
from algorithms.config import ClusterConfig, TrainConfig
from algorithms.device import device_peak_gib, model_device, synchronize
from algorithms.memory import PeakMemory
from algorithms.stopping import end_processes, polled, reclaim_signals


class _Measured:
    """An actor's own peak memory, returned with each result: `(value, (resident GiB, device GiB))`."""

    def _start_measuring(self, device) -> None:
        self._device, self._peak = device, PeakMemory()

    def _measured(self, value):
        synchronize(self._device)
        return value, (self._peak.take(), device_peak_gib(self._device))


class RolloutWorker(_Measured):
    """A Ray actor that plays groups of the game with its own engine and judges."""

    def __init__(self, config: TrainConfig):
        from algorithms.assembly import build_run

        parts = build_run(replace(config, cluster=ClusterConfig(), overlap=False))  # its own weights
        self.local = LocalRollout(parts, parts.config)
        self.rows = []
        self._start_measuring(model_device(parts.model))

    def game(self) -> tuple[list[str], list[str], int]:
        """(roles, guard names, pad token id) of the run's game and tokenizer."""
        return self.local.roles, self.local.guard_names, self.local.pad_token_id

    def join(self, address: str, port: int, rank: int, world_size: int, trainer_processes: int,
             timeout_s: float) -> None:
        from algorithms.distributed import join_world

        _, self.weight_group = join_world(address, port, rank, world_size, trainer_processes, timeout_s)

    def collect(self, num_groups: int, seed: int):
        """Play `num_groups` groups from `seed`; keeps their rows for `reference`."""
        collected = self.local.collect(num_groups, seed)
        self.rows = collected.rows
        return self._measured(collected)

    def reference(self):
        """The reference log-probs of each row of the last collection (a list per row)."""
        batch = make_batch(self.rows, self.local.roles, self.local.pad_token_id)
        self.local.reference(batch)
        reference, response = batch.get(REF_LOG_PROBS), batch.get(RESPONSE_MASK)
        return self._measured([reference[i][response[i]].tolist() for i in range(len(self.rows))])

    def receive_weights(self):
        """Receive the trainer's broadcast of the trained parameters, push them into the engine and verify it."""
        from algorithms.distributed import receive_weights

        moved = receive_weights(self.local.parts.model, self.weight_group)
        return self._measured(replace(self.local.receive_weights(), bytes=moved))

    def answer_prompts(self, prompts: list[str], params) -> list[str]:
        return self.local.answer_prompts(prompts, params)

    def close(self) -> None:
        self.local.close()
        torch.distributed.destroy_process_group()


class TrainerWorker(_Measured):
    """A Ray actor: one process of the FSDP2 trainer."""

    def __init__(self, config: TrainConfig, rank: int, world_size: int):
        self.config, self.rank, self.world_size = config, rank, world_size

    def address(self) -> tuple[str, int]:
        """This node's address and a free port, for the process group's rendezvous (asked of rank 0)."""
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            return ray.util.get_node_ip_address(), probe.getsockname()[1]

    def join(self, address: str, port: int, rank: int, world_size: int, trainer_processes: int,
             timeout_s: float) -> None:
        from algorithms.distributed import join_world

        self.trainer_group, self.weight_group = join_world(address, port, rank, world_size, trainer_processes,
                                                           timeout_s)

    def setup(self, resume_from: str | None = None) -> None:
        """Load the model (and the checkpoint `resume_from`), shard it, make the optimizer."""
        from algorithms import distributed
        from algorithms.assembly import check_run, load_models

        config, algorithm_class, algorithm_config = check_run(self.config)
        model, tokenizer, reference_model = load_models(config)
        if resume_from:
            load_checkpoint_weights(model, Path(resume_from), config)
        if self.world_size > 1:
            distributed.shard(model, self.trainer_group)
        loss = algorithm_class(model, config=algorithm_config, sampling=config.sampling(),
                               reference_network=reference_model, packed=config.packing)
        self.local = LocalUpdate(config, model, tokenizer, loss, resume_from, self.rank, self.world_size,
                                 self.trainer_group if self.world_size > 1 else None)
        self._start_measuring(self.local.device)

    def step(self, batch):
        """This process's share of the optimizer step on `batch` (the same batch on every process)."""
        return self._measured(self.local.step(batch))

    def send_weights(self) -> int:
        """Take part in broadcasting the trained parameters (rank 0 sends); returns the bytes sent."""
        from algorithms.distributed import send_weights

        return send_weights(self.local.model, self.weight_group, self.rank)

    def save(self, run_dir: str, iteration: int, config_yaml: str, metrics: dict | None = None) -> None:
        self.local.save(Path(run_dir), iteration, config_yaml, metrics)

    def close(self) -> None:
        torch.distributed.destroy_process_group()


class RayCollection:
    """The rollout workers' pending shares of one collection, merged into one `Collected` when asked."""

    def __init__(self, refs: list, share: int, peaks: list):
        self.refs, self.share, self.peaks, self.value = refs, share, peaks, None

    def wait(self) -> None:
        import ray

        ray.wait(self.refs, num_returns=len(self.refs))

    def result(self) -> Collected:
        if self.value is None:
            results = stoppable_get(self.refs)
            rows, episodes, failures = [], [], {}
            for i, (collected, peak) in enumerate(results):
                for item in (*collected.rows, *collected.rollout.episodes):  # groups are per worker: make them unique
                    item.group += i * self.share
                rows += collected.rows
                episodes += collected.rollout.episodes
                for key, count in collected.failures.items():
                    failures[key] = failures.get(key, 0) + count
                self.peaks.append(peak)
            timings = {phase: max(c.rollout.timings.get(phase, 0.0) for c, _ in results)  # side by side
                       for phase in ("generate", "env_and_judge")}
            self.value = Collected(rows, Rollout(episodes, timings), failures)
        return self.value


class RayRollout:
    """Rollout backend: `RolloutWorker` actors, each playing an equal share of every collection."""

    def __init__(self, workers: list, config: TrainConfig):
        self.workers, self.config, self.peaks = workers, config, []
        self.roles, self.guard_names, self.pad_token_id = stoppable_get([workers[0].game.remote()])[0]

    def start(self, num_groups: int, seed: int, background: bool = False) -> RayCollection:
        """Start every worker on its share, with the seeds a one-process run gives those groups."""
        share = num_groups // len(self.workers)
        refs = [worker.collect.remote(share, seed + i * share) for i, worker in enumerate(self.workers)]
        return RayCollection(refs, share, self.peaks)

    def reference(self, batch) -> None:
        """Each worker scores its own rows of the last collection (the batch holds them in worker order)."""
        results = stoppable_get([worker.reference.remote() for worker in self.workers])
        self.peaks += [peak for _, peak in results]
        values = [value for per_worker, _ in results for row in per_worker for value in row]
        reference = torch.zeros(batch.get(REF_LOG_PROBS).shape)
        reference[batch.get(RESPONSE_MASK)] = torch.tensor(values, dtype=reference.dtype)
        batch.set(REF_LOG_PROBS, reference)

    def receive_weights(self, published: list) -> SyncReport:
        """Wait for the trainer's broadcast (`published`) and every worker's verified load; returns one report
        (the largest probe gap of any worker)."""
        import ray

        from agents.sync import WeightSyncTimeout

        receiving = [worker.receive_weights.remote() for worker in self.workers]
        try:
            results = ray.get(receiving + published, timeout=self.config.sync_timeout_s)[:len(receiving)]
        except ray.exceptions.GetTimeoutError:
            raise WeightSyncTimeout(f"the rollout workers did not receive and verify the weights within "
                                    f"{self.config.sync_timeout_s:g} s; stopping the run") from None
        self.peaks += [peak for _, peak in results]
        reports = [report for report, _ in results]
        worst = max(reports, key=lambda report: report.max_abs_diff)
        return replace(worst, push_s=max(r.push_s for r in reports), verify_s=max(r.verify_s for r in reports))

    def answer_prompts(self, prompts: list[str], params) -> list[str]:
        """The prompts in one contiguous share per worker (as even as they divide), answered at once, gathered in
        order: the answers do not depend on the number of workers (with greedy decoding)."""
        size, extra = divmod(len(prompts), len(self.workers))
        bounds = [0]
        for rank in range(len(self.workers)):
            bounds.append(bounds[-1] + size + (rank < extra))
        shares = [worker.answer_prompts.remote(prompts[start:end], params)
                  for worker, start, end in zip(self.workers, bounds, bounds[1:]) if end > start]
        return [answer for share in stoppable_get(shares) for answer in share]

    def sleep(self) -> None:
        """Nothing: each worker's engines have a device of their own, which the trainer processes do not use."""

    def wake_up(self) -> None:
        pass

    def take_peaks(self) -> list:
        peaks, self.peaks[:] = list(self.peaks), []
        return peaks

    def close(self, timeout_s: float = 10.0) -> None:
        """Close each worker's engines and process group; one still busy after `timeout_s` (a collection a stop
        abandoned) is left to `RayUpdate.close`, which kills every actor."""
        import ray

        ray.wait([worker.close.remote() for worker in self.workers], num_returns=len(self.workers),
                 timeout=timeout_s)


class RayUpdate:
    """Update backend: `TrainerWorker` actors forming one FSDP2 process group."""

    device = torch.device("cpu")  # the driver holds no model

    def __init__(self, trainers: list, started_ray: bool, actors: list):
        self.trainers, self.started_ray, self.actors, self.peaks = trainers, started_ray, actors, []

    def step(self, batch) -> dict[str, float]:
        import ray

        results = ray.get([trainer.step.remote(batch) for trainer in self.trainers])
        self.peaks += [peak for _, peak in results]
        return results[0][0]

    def publish_weights(self) -> list:
        """Start the broadcast from rank 0 (every trainer process takes part); the rollout backend waits for it."""
        return [trainer.send_weights.remote() for trainer in self.trainers]

    def save(self, run_dir: Path, iteration: int, config_yaml: str, metrics: dict | None = None) -> None:
        import ray

        ray.get([trainer.save.remote(str(run_dir), iteration, config_yaml, metrics) for trainer in self.trainers])

    def take_peaks(self) -> list:
        peaks, self.peaks = self.peaks, []
        return peaks

    def close(self) -> None:
        """Stop the trainer processes, then every actor of the run, then the Ray cluster if this run started it."""
        import ray

        try:
            ray.wait([trainer.close.remote() for trainer in self.trainers], num_returns=len(self.trainers),
                     timeout=30)
        finally:
            stop_actors(self.actors, self.started_ray)


def stop_actors(actors: list, started_ray: bool) -> None:
    """Kill `actors`; if this run started the Ray cluster, shut it down and end every process of it that
    outlives `ray.shutdown()` (its agents may: they are children of processes that it ends first)."""
    import psutil
    import ray

    for actor in actors:
        ray.kill(actor)
    if started_ray:
        cluster = psutil.Process().children(recursive=True)
        ray.shutdown()
        end_processes(cluster)


def ray_backends(config: TrainConfig, resume_from: Path | None = None) -> tuple[TrainConfig, RayRollout, RayUpdate]:
    """Start (or join) the Ray cluster, its trainer processes and rollout workers, and one torch world over
    them; returns the config with its defaults resolved and the two backends."""
    from algorithms.assembly import check_run

    ray = _import_ray()
    config, _, _ = check_run(config)  # a wrong setting fails before Ray starts
    cluster = config.cluster
    resources = {"num_cpus": cluster.cpus_per_worker, "num_gpus": cluster.gpus_per_worker}
    trainers, workers, started_ray = [], [], False
    with polled() as poll:  # a stop signal is acted on between Ray's calls, never inside them
        try:  # a failure or a stop during the setup ends what it started
            started_ray = start_ray(cluster)
            poll()
            trainers += [ray.remote(**resources)(TrainerWorker).remote(config, rank, cluster.trainer_processes)
                         for rank in range(cluster.trainer_processes)]
            workers += [ray.remote(**resources)(RolloutWorker).remote(config) for _ in range(cluster.rollout_workers)]
            address, port = stoppable_get([trainers[0].address.remote()])[0]
            world = len(trainers) + len(workers)
            stoppable_get([actor.join.remote(address, port, rank, world, len(trainers), config.sync_timeout_s)
                           for rank, actor in enumerate([*trainers, *workers])])
            stoppable_get([trainer.setup.remote(str(resume_from) if resume_from else None) for trainer in trainers])
            rollout = RayRollout(workers, config)
        except BaseException:
            stop_actors([*workers, *trainers], started_ray)
            raise
    return config, rollout, RayUpdate(trainers, started_ray, [*workers, *trainers])


def stoppable_get(refs: list) -> list:
    """`ray.get(refs)` in short waits, so that a stop signal (`algorithms.stopping`) abandons it from Python:
    raised inside Ray's own wait, it would become a SystemError."""
    import ray

    with polled() as poll:
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            poll()
    return ray.get(refs)


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
        reclaim_signals()  # a stop signal stops the run cleanly (`algorithms.stopping`), not Ray's abort
        return True
    try:
        ray.init(address=cluster.address, log_to_driver=True)
    except ConnectionError as error:
        raise ConnectionError(f"cannot reach the Ray cluster at {cluster.address!r} ({error}); start one with "
                              f"`ray start --head`, or use --cluster.address local") from error
    reclaim_signals()
    return False
