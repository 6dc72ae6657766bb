"""What changes with scale, behind two small interfaces that `algorithms.trainer.Trainer` composes.

- A **rollout backend** plays an iteration's groups, scores their rows with the reference model, and takes
  new weights into its engines (verified by the probe, `agents.sync`).
- An **update backend** takes the optimizer step, hands out the trained weights, and writes checkpoints.

`algorithms.trainer.make_backends` picks them from the config:

| `cluster.address` | rollout backend                                   | update backend                          |
|-------------------|---------------------------------------------------|-----------------------------------------|
| unset             | `LocalRollout`: the collector over the run's engine (hf, vllm, or an OpenAI-compatible server) | `LocalUpdate`: AdamW in this process |
| set               | `algorithms.cluster.RayRollout`: Ray rollout workers, each a `LocalRollout` | `algorithms.cluster.RayUpdate`: an FSDP2 process group, each rank a `LocalUpdate` |

The trainer owns everything else (phases, timings, memory, seeds, logs, checkpoints, resume, evaluation), so
every feature exists once and runs at both scales.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from agents.lora import has_adapter
from agents.models import load_model
from agents.sync import SyncReport, WeightSync
from algorithms import checkpoint
from algorithms.batch import Row, rollout_rows
from algorithms.collector import Collector, Rollout
from algorithms.config import TrainConfig
from algorithms.device import make_optimizer, model_device
from algorithms.update import optimizer_step, reference_pass


@dataclass
class Collected:
    """One collection: the trainable rows, the episodes, and the judges' parse failures
    (`{"<judge>/parse_failures": count}`)."""

    rows: list[Row]
    rollout: Rollout
    failures: dict[str, int]


class Pending(Protocol):
    """A collection that may still be running."""

    def result(self) -> Collected: ...

    def wait(self) -> None: ...


class RolloutBackend(Protocol):
    roles: list[str]
    guard_names: list[str]
    pad_token_id: int

    def start(self, num_groups: int, seed: int, background: bool = False) -> Pending:
        """Play `num_groups` groups from `seed` (group g from seed + g); in the background if asked."""

    def reference(self, batch) -> None:
        """Write the reference model's log-probs of the batch's sampled tokens into it."""

    def receive_weights(self, published: Any) -> SyncReport:
        """Load the weights the update backend published into every engine, verified by the probe."""

    def answer_prompts(self, prompts: list[str], params) -> list[str]:
        """One answer per prompt (a one-turn chat), in order: the held-out evaluation's work."""

    def sleep(self) -> None:
        """Free the device memory the engines hold while the update backend steps on the same device."""

    def wake_up(self) -> None: ...

    def take_peaks(self) -> list[tuple[float | None, float | None]]:
        """(resident GiB, device GiB) peaks of the backend's own processes since the last call ([] in-process)."""

    def close(self) -> None: ...


class UpdateBackend(Protocol):
    device: torch.device
    """Where the trained model lives, seen from this process (the CPU when it lives in other processes)."""

    def step(self, batch) -> dict[str, float]:
        """Advantages, the loss and one optimizer step on `batch`; returns the losses."""

    def publish_weights(self) -> Any:
        """Hand the trained weights to the rollout backend (what `RolloutBackend.receive_weights` takes)."""

    def save(self, run_dir: Path, iteration: int, config_yaml: str, metrics: dict | None = None) -> None:
        """Checkpoint `iteration`, with its metrics line (what a resume puts back if metrics.jsonl lost it)."""

    def take_peaks(self) -> list[tuple[float | None, float | None]]: ...

    def close(self) -> None: ...


class Done:
    """A collection that ran in the caller's thread, or in a background thread (`future`)."""

    def __init__(self, value: Collected | None = None, future: Future | None = None):
        self.value, self.future = value, future

    def result(self) -> Collected:
        return self.value if self.future is None else self.future.result()

    def wait(self) -> None:
        self.result()


class LocalRollout:
    """The collector over the run's engine and judges (`algorithms.assembly.RunParts`), in this process."""

    def __init__(self, parts, config: TrainConfig):
        self.parts = parts
        self.collector = Collector(parts.make_env, parts.players(), config.group_size)
        self.weight_sync = WeightSync(parts.policy, parts.model, parts.tokenizer, config.sync_tolerance,
                                      config.sync_timeout_s)
        env = parts.make_env()
        self.roles = list(env.possible_agents)
        self.guard_names = [guard.name for guard in getattr(env, "guards", ())]
        env.close()
        self.pad_token_id = parts.pad_token_id()
        self.background = ThreadPoolExecutor(1, thread_name_prefix="overlap") if config.overlap else None

    def collect(self, num_groups: int, seed: int) -> Collected:
        """Play `num_groups` groups from `seed`; torch's sampling RNG is seeded with it too."""
        judges = {name: judge for name, judge in self.parts.judges.items() if hasattr(judge, "failures")}
        before = {name: judge.failures for name, judge in judges.items()}
        torch.manual_seed(seed)
        rollout = self.collector.collect(num_groups, seed=seed)
        failures = {f"{name}/parse_failures": judge.failures - before[name] for name, judge in judges.items()}
        return Collected(rollout_rows(rollout), rollout, failures)

    def start(self, num_groups: int, seed: int, background: bool = False) -> Done:
        if background:
            return Done(future=self.background.submit(self.collect, num_groups, seed))
        return Done(self.collect(num_groups, seed))

    def reference(self, batch) -> None:
        reference_pass(self.parts.reference_model, batch, self.parts.config, self.parts.sampling)

    def receive_weights(self, published: Any = None) -> SyncReport:
        """The engine reads the trained model of this process (`published` is None): push and verify."""
        return self.weight_sync()

    def answer_prompts(self, prompts: list[str], params) -> list[str]:
        from evaluation.episodes import answer_prompts

        return answer_prompts(self.parts.policy, prompts, params)

    def engines(self) -> list:
        return [engine for engine in (self.parts.policy, self.parts.judge_policy) if engine is not None]

    def sleep(self) -> None:
        for engine in self.engines():
            engine.sleep()

    def wake_up(self) -> None:
        for engine in self.engines():
            engine.wake_up()

    def take_peaks(self) -> list:
        return []

    def close(self) -> None:
        if self.background:  # a run stopped by its time limit leaves one collection running
            self.background.shutdown(wait=True)
        self.parts.close()


class LocalUpdate:
    """AdamW on the trained model in this process: the whole model, or rank `rank` of `world_size` FSDP2
    processes (`algorithms.distributed`), whose optimizer state is saved and loaded in the one-process format."""

    def __init__(self, config: TrainConfig, model: torch.nn.Module, tokenizer, loss: torch.nn.Module,
                 resume_from: Path | None = None, rank: int = 0, world_size: int = 1, group=None):
        self.config, self.model, self.tokenizer, self.loss = config, model, tokenizer, loss
        self.rank, self.world_size, self.group = rank, world_size, group
        self.device = model_device(model)
        self.trained = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
        self.optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config.lr,
                                        config.weight_decay)
        if resume_from:
            state = checkpoint.load_trainer_state(Path(resume_from))
            self._load_optimizer_state(state["optimizer"])
            self.loss.load_algorithm_state(state["extra"].get("algorithm", {}))

    def step(self, batch) -> dict[str, float]:
        config = self.config
        self.loss.compute_advantages(batch)
        return optimizer_step(self.model, self.loss, self.optimizer, batch, config.micro_batches()[0],
                              config.max_grad_norm, config.autocast, self.rank, self.world_size,
                              rows_per_pass=config.rows_per_pass, group=self.group)

    def publish_weights(self) -> None:
        return None  # the rollout backend of this process reads the model itself

    def save(self, run_dir: Path, iteration: int, config_yaml: str, metrics: dict | None = None) -> None:
        """Checkpoint `iteration` with its `metrics` line (every process takes part; rank 0 writes it)."""
        state = self._full_state_dict() if self.world_size > 1 else None
        optimizer_state = self._optimizer_state()
        if self.rank == 0:
            checkpoint.save_checkpoint(Path(run_dir), iteration, self.model, self.tokenizer, optimizer_state,
                                       config_yaml, extra={"algorithm": self.loss.algorithm_state(),
                                                           "metrics": metrics or {}},
                                       state_dict=state)

    def take_peaks(self) -> list:
        return []

    def close(self) -> None:
        pass

    # --- state in the one-process format ------------------------------------------
    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        from algorithms.distributed import full_state_dict

        return full_state_dict(self.model)

    def _optimizer_state(self) -> dict:
        """`optimizer.state_dict()` as one process has it: states keyed by the parameter's index."""
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


def load_checkpoint_weights(model: torch.nn.Module, path: Path, config: TrainConfig) -> None:
    """Load the model of checkpoint `path` (its LoRA adapter, or all weights) into `model`, in place."""
    if has_adapter(model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(Path(path) / "model" / "adapter_model.safetensors",
                                                   device=str(model_device(model))))
    else:
        weights, _ = load_model(str(Path(path) / "model"), dtype=getattr(torch, config.dtype), device=config.device)
        model.load_state_dict(weights.state_dict())
