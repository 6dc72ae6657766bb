"""The self-play training loop behind `lsp train`, over the parts `algorithms.assembly` builds.

Each iteration: collect -> reference log-probs -> advantages -> loss ->
one optimizer step (AdamW, gradient clipping) -> push the new weights to the
engine and verify them (`agents.sync`) -> log -> checkpoint. With `overlap`, the
next iteration's collection runs in a thread during this one's reference and
training phases, and the engine takes the new weights once it has finished.
`algorithms.cluster.ClusterTrainer` runs the same loop over Ray actors.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import torch
import yaml

from agents import SamplingParams
from agents.lora import has_adapter
from agents.models import load_model
from agents.policy import Policy
from agents.sync import WeightSync
from algorithms import checkpoint
from algorithms.assembly import build_run
from algorithms.base import RESPONSE_MASK
from algorithms.batch import make_batch, rollout_rows
from algorithms.collector import Collector, Rollout
from algorithms.config import TrainConfig
from algorithms.memory import PeakMemory, release_freed_memory
from algorithms.metrics import iteration_metrics
from algorithms.run_log import RunLog, plot_curves
from algorithms.update import optimizer_step
from evaluation.suite import evaluate_policy, load_suite


class Trainer:
    """Trains the parts of a run (`algorithms.assembly.build_run`) built from a `TrainConfig`."""

    def __init__(self, config: TrainConfig, run_dir: Path | None = None, judges: dict | None = None,
                 policy: Policy | None = None):
        """`judges` ({"judge": ..., "quality_judge": ...}) replaces the judges named in the config;
        `policy` replaces the engine named in the config (it must serve `config.model`)."""
        self.suite = load_suite(config.eval_suite) if config.eval_suite else None  # a wrong name fails before loading
        self.parts = build_run(config, judges, policy)
        self.config, self.model, self.loss = self.parts.config, self.parts.model, self.parts.loss
        self.run_dir = Path(run_dir) if run_dir else _new_run_dir(config)
        self.start_iteration = 0
        self.weight_sync = WeightSync(self.parts.policy, self.model, self.parts.tokenizer, config.sync_tolerance,
                                      config.sync_timeout_s)
        self.weight_sync(push=False)  # the engine must start from the trainer's weights
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=self.config.lr, weight_decay=config.weight_decay)
        env = self.parts.make_env()
        self.roles = list(env.possible_agents)
        self.guard_names = [guard.name for guard in getattr(env, "guards", ())]
        self.collector = Collector(self.parts.make_env, self.parts.players(), config.group_size)
        self.next_rollout: Future | None = None  # with overlap: the next iteration's, being collected
        self.overlap_thread = ThreadPoolExecutor(1, thread_name_prefix="overlap") if config.overlap else None
        self.peak_memory = PeakMemory()
        self.run_dir.mkdir(parents=True, exist_ok=True)

    # --- resume -----------------------------------------------------------------
    @classmethod
    def resume(cls, run_dir: Path, judges: dict | None = None, **overrides) -> "Trainer":
        """Continue the run in `run_dir` from its newest intact checkpoint (`overrides` change its config),
        warning about each newer, damaged one it skips."""
        import warnings

        run_dir = checkpoint.find_run(run_dir)
        path, skipped = checkpoint.newest_valid_checkpoint(run_dir)
        for line in skipped:
            warnings.warn(line, stacklevel=2)
        state = checkpoint.load_trainer_state(path)
        trainer = cls._restored(TrainConfig.from_yaml(path / "config.yaml", **overrides), run_dir, path, state, judges)
        checkpoint.set_rng_state(state["rng"])
        trainer.start_iteration = state["iteration"]
        _truncate_metrics(Path(run_dir) / "metrics.jsonl", state["iteration"])
        return trainer

    @classmethod
    def _restored(cls, config: TrainConfig, run_dir: Path, path: Path, state: dict, judges: dict | None) -> "Trainer":
        """A trainer with checkpoint `path`'s weights (pushed to the engine), optimizer and algorithm state."""
        trainer = cls(config, run_dir, judges)
        load_checkpoint_weights(trainer.model, path, config)
        trainer.weight_sync()
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.loss.load_algorithm_state(state["extra"].get("algorithm", {}))
        return trainer

    # --- the loop ---------------------------------------------------------------
    def train(self, progress: bool = True) -> Path:
        """Run until `config.iterations` or `config.time_limit_minutes`; returns the run folder."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.config.to_yaml(self.run_dir / "config.yaml")
        if self.suite and self.start_iteration == 0:
            self.evaluate_heldout("before")
        log = RunLog(self.run_dir)
        started = time.perf_counter()
        limit_s = None if self.config.time_limit_minutes is None else 60 * self.config.time_limit_minutes
        columns = [TextColumn("[bold]iteration {task.completed}/{task.total}"), BarColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
        try:
            with Progress(*columns, disable=not progress) as bar:
                task = bar.add_task("train", total=self.config.iterations, completed=self.start_iteration, status="")
                for iteration in range(self.start_iteration + 1, self.config.iterations + 1):
                    metrics, rollout = self.iteration(iteration)
                    log.log(iteration, metrics)
                    if iteration % self.config.transcript_every == 0:
                        log.transcripts(iteration, rollout)
                    out_of_time = limit_s is not None and time.perf_counter() - started >= limit_s
                    if iteration % self.config.save_every == 0 or iteration == self.config.iterations or out_of_time:
                        self.save(iteration)
                    status = "  ".join(f"{k.split('/')[1]} {metrics[k]:+.3f}" for k in metrics if k.startswith("reward/"))
                    bar.update(task, completed=iteration, status=status)
                    if out_of_time:
                        bar.console.print(f"time limit of {self.config.time_limit_minutes:g} min reached "
                                          f"after iteration {iteration}")
                        break
        finally:
            log.close()
        plot_curves(self.run_dir)
        if self.suite:
            self.evaluate_heldout("after")
        return self.run_dir

    def evaluate_heldout(self, when: str) -> float:
        """Strict pass rate of the current policy on `config.eval_suite` (greedy); printed and saved to eval.json."""
        import json

        suite = self.suite
        score = self.heldout_score()
        path = self.run_dir / "eval.json"
        results = json.loads(path.read_text()) if path.exists() else {}
        results[when] = {"suite": suite.name, "prompts": len(suite.items), **score.as_dict()}
        path.write_text(json.dumps(results, indent=1))
        line = f"held-out {suite.name} ({len(suite.items)} prompts), {when} training: strict pass {score.strict:.1%}"
        if when == "after" and "before" in results:
            line += f" (before: {results['before']['strict']:.1%})"
        print(line, flush=True)
        return score.strict

    def collect(self, iteration: int) -> Rollout:
        """The rollout of `iteration`: `num_queries` groups from its seeds."""
        return self.collector.collect(self.config.num_queries, seed=iteration_seed(self.config, iteration))

    def heldout_score(self):
        """The policy's greedy answers to the held-out suite, graded."""
        params = SamplingParams(self.config.eval_max_new_tokens, temperature=0.0)
        return evaluate_policy(self.parts.policy, self.suite, params)[0]

    def iteration(self, iteration: int) -> tuple[dict, Rollout]:
        """One collect/update/sync step; returns its metrics and rollout."""
        config, start = self.config, time.perf_counter()
        torch.manual_seed(config.seed * 1_000_003 + iteration)
        failures_before = {name: getattr(j, "failures", 0) for name, j in self.parts.judges.items() if j}
        rollout = self.next_rollout.result() if self.next_rollout else self.collect(iteration)
        peaks = {"collect": self.peak_memory.take()}
        self.next_rollout = None
        if config.overlap and iteration < config.iterations:  # sampled with these weights, trained on after the step
            self.next_rollout = self.overlap_thread.submit(self.collect, iteration + 1)
        rows = rollout_rows(rollout)
        batch = make_batch(rows, self.roles, self.parts.pad_token_id())
        release_freed_memory()

        tick = time.perf_counter()
        self.parts.fill_reference_log_probs(batch)
        reference_time = time.perf_counter() - tick
        peaks["reference"] = self.peak_memory.take()
        release_freed_memory()

        tick = time.perf_counter()
        self.loss.compute_advantages(batch)
        losses = optimizer_step(self.model, self.loss, self.optimizer, batch, config.micro_batches()[0],
                                config.max_grad_norm, config.autocast, rows_per_pass=config.rows_per_pass)
        train_time = time.perf_counter() - tick
        peaks["train"] = self.peak_memory.take()

        tick = time.perf_counter()
        if self.next_rollout:
            wait([self.next_rollout])  # the engine takes new weights between collections only
        waited = time.perf_counter() - tick
        sync = self.weight_sync()
        peaks["sync"] = self.peak_memory.take()
        release_freed_memory()

        metrics = losses | iteration_metrics(rollout, batch, self.roles, self.guard_names)
        for name, judge in self.parts.judges.items():
            if judge is not None and hasattr(judge, "failures"):
                metrics[f"{name}/parse_failures"] = judge.failures - failures_before[name]
        generated = int(batch.get(RESPONSE_MASK).sum())
        metrics.update({
            "time/generate": rollout.timings.get("generate", 0.0),
            "time/env_and_judge": rollout.timings.get("env_and_judge", 0.0),
            "time/reference": reference_time, "time/train": train_time, "time/overlap_wait": waited,
            "time/sync": sync.total_s,
            "sync/max_logprob_gap": sync.max_abs_diff,
            "time/iteration": time.perf_counter() - start,
            "throughput/generated_tokens_per_s": generated / max(rollout.timings.get("generate", 0.0), 1e-9),
        })
        metrics.update(memory_metrics(peaks, by_phase=not config.overlap))
        return metrics, rollout

    def save(self, iteration: int) -> Path:
        return checkpoint.save_checkpoint(self.run_dir, iteration, self.model, self.parts.tokenizer,
                                          self.optimizer.state_dict(),
                                          yaml.safe_dump(asdict(self.config), sort_keys=False),
                                          extra={"algorithm": self.loss.algorithm_state()})

    def close(self) -> None:
        self.peak_memory.close()
        if self.overlap_thread:  # a run stopped by its time limit leaves one collection running
            self.overlap_thread.shutdown(wait=True)
        self.parts.close()


def memory_metrics(peaks: dict[str, float | None], by_phase: bool = True) -> dict[str, float]:
    """`memory/peak_gib`: the iteration's peak resident memory, and with `by_phase` each phase's
    (`memory/peak_gib/train`, ...); with overlap, collection runs beside the other phases, so only the total."""
    if None in peaks.values():
        return {}
    metrics = {"memory/peak_gib": max(peaks.values())}
    if by_phase:
        metrics |= {f"memory/peak_gib/{phase}": peak for phase, peak in peaks.items()}
    return metrics


def iteration_seed(config: TrainConfig, iteration: int) -> int:
    """The seed of `iteration`'s first group; group g plays from this seed + g."""
    return config.seed * 1_000_003 + iteration * config.num_queries


def load_checkpoint_weights(model: torch.nn.Module, path: Path, config: TrainConfig) -> None:
    """Load the model of checkpoint `path` (its LoRA adapter, or all weights) into `model`, in place."""
    if has_adapter(model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(Path(path) / "model" / "adapter_model.safetensors"))
    else:
        weights, _ = load_model(str(Path(path) / "model"), dtype=getattr(torch, config.dtype), device=config.device)
        model.load_state_dict(weights.state_dict())


def _new_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.output) / f"{config.algorithm}-{stamp}"


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from. A torn last line (what a killed run
    leaves) is dropped with a warning; a damaged line before it raises `CheckpointError`."""
    if not path.exists():
        return
    import json
    import warnings

    lines = [(number, line) for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if line.strip()]
    keep = []
    for number, line in lines:
        try:
            if json.loads(line)["iteration"] <= iteration:
                keep.append(line)
        except (ValueError, KeyError, TypeError) as error:
            if number != lines[-1][0]:
                raise checkpoint.CheckpointError(f"{path} line {number} is damaged ({error}); only a torn last "
                                                 f"line can be dropped, so fix or delete it by hand") from error
            warnings.warn(f"{path}: dropped its torn last line {number} ({error})", stacklevel=2)
    path.write_text("".join(line + "\n" for line in keep))
