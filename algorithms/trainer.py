"""The self-play training loop behind `lsp train`, at every scale.

`Trainer` owns the iteration once: collect -> reference log-probs -> advantages, loss and one optimizer step ->
new weights into the engines, verified (`agents.sync`) -> log -> checkpoint, plus the held-out evaluation before
and after. What changes with scale is composed into it (`algorithms.backends`): a rollout backend (the
in-process collector, or Ray rollout workers) and an update backend (AdamW in this process, or an FSDP2 process
group). With `overlap`, the next iteration's collection runs during this one's training step, and the engines
take the new weights once it has finished.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import torch
import yaml

from agents import SamplingParams
from algorithms import checkpoint
from algorithms.assembly import build_run, check_run
from algorithms.backends import (LocalRollout, LocalUpdate, Pending, RolloutBackend, UpdateBackend,
                                 load_checkpoint_weights)
from algorithms.base import RESPONSE_MASK
from algorithms.batch import make_batch
from algorithms.collector import Rollout
from algorithms.config import TrainConfig
from algorithms.device import device_peak_gib, synchronize
from algorithms.memory import PeakMemory, release_freed_memory
from algorithms.metrics import iteration_metrics
from algorithms.run_log import RunLog, plot_curves
from algorithms.stopping import StopRequested, StopSignals
from evaluation.suite import load_suite

ABANDONABLE_PHASES = ("collect", "reference")  # a stop signal leaves these at once (`algorithms.stopping`)


class Trainer:
    """Trains a run built from a `TrainConfig`, over the backends its `cluster` settings pick."""

    def __init__(self, config: TrainConfig, run_dir: Path | None = None, judges: dict | None = None,
                 policy=None, resume_from: Path | None = None,
                 backends: tuple[RolloutBackend, UpdateBackend] | None = None):
        """`judges` ({"judge": ..., "quality_judge": ...}) replaces the judges named in the config; `policy`
        replaces the engine named in the config (it must serve `config.model`); `resume_from` is a checkpoint
        the update backend starts from; `backends` replaces the pair the config picks."""
        self.suite = load_suite(config.eval_suite) if config.eval_suite else None  # a wrong name fails before loading
        if backends is None:
            config, *backends = make_backends(config, judges, policy, resume_from)
        self.config = config
        self.rollout, self.update = backends
        self.settings = check_run(config, judges_given=judges is not None)[2]  # the algorithm's, as resolved
        self.run_dir = Path(run_dir) if run_dir else _new_run_dir(config)
        self.start_iteration = 0
        self.next_rollout: Pending | None = None  # with overlap: the next iteration's, being collected
        self.peak_memory = PeakMemory()
        self.stop: StopSignals | None = None  # while `train` runs
        self.stopped_checkpoint: Path | None = None
        self.sync_weights()  # the engines start from the trainer's weights
        self.run_dir.mkdir(parents=True, exist_ok=True)

    # --- resume -----------------------------------------------------------------
    @classmethod
    def resume(cls, run_dir: Path, judges: dict | None = None, policy=None, **overrides) -> "Trainer":
        """Continue the run in `run_dir` from its newest intact checkpoint (`overrides` change its config, e.g.
        `cluster=ClusterConfig(...)` to continue at another scale), warning about each newer, damaged one it
        skips."""
        run_dir = checkpoint.find_run(run_dir)
        path, skipped = checkpoint.newest_valid_checkpoint(run_dir)
        for line in skipped:
            warnings.warn(line, stacklevel=2)
        state = checkpoint.load_trainer_state(path)
        config = TrainConfig.from_yaml(path / "config.yaml", **overrides)
        trainer = cls(config, run_dir, judges, policy, resume_from=path)
        checkpoint.set_rng_state(state["rng"])
        trainer.start_iteration = state["iteration"]
        _truncate_metrics(Path(run_dir) / "metrics.jsonl", state["iteration"], state["extra"].get("metrics"))
        return trainer

    # --- the loop ---------------------------------------------------------------
    def train(self, progress: bool = True, stop: StopSignals | None = None) -> Path:
        """Run until `config.iterations` or `config.time_limit_minutes`; returns the run folder.

        SIGINT or SIGTERM stops it cleanly (`algorithms.stopping`; pass `stop` where the caller installed its
        handlers already): the last whole iteration is checkpointed (`stopped_checkpoint`, None when nothing
        was trained), and `StopRequested` is raised; `close()` then ends every process of the run."""
        with contextlib.ExitStack() as stack:
            self.stop = stop or stack.enter_context(StopSignals())
            try:
                return self._train(progress)
            except StopRequested:
                self.stopped_checkpoint = self._checkpoint_for_resume()
                plot_curves(self.run_dir)
                raise
            finally:
                self.stop = None

    def _train(self, progress: bool) -> Path:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.config.to_yaml(self.run_dir / "config.yaml")
        self.completed, self.saved_iteration = (self.start_iteration, None), self.start_iteration
        if self.suite and self.start_iteration == 0:
            with self.stop.phase(abandonable=True):
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
                    self.stop.check()
                    metrics, rollout = self.iteration(iteration)
                    log.log(iteration, metrics)
                    self.completed = (iteration, metrics)
                    if iteration % self.config.transcript_every == 0:
                        log.transcripts(iteration, rollout)
                    out_of_time = limit_s is not None and time.perf_counter() - started >= limit_s
                    if iteration % self.config.save_every == 0 or iteration == self.config.iterations or out_of_time:
                        self.save(iteration, metrics)
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
            with self.stop.phase(abandonable=True):
                self.evaluate_heldout("after")
        return self.run_dir

    def _checkpoint_for_resume(self) -> Path | None:
        """The checkpoint a resume continues from: the last whole iteration's, written now if it was not."""
        iteration, metrics = self.completed
        if iteration > self.saved_iteration:
            return self.save(iteration, metrics)
        return checkpoint.latest_checkpoint(self.run_dir) if iteration > 0 else None

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

    def heldout_score(self):
        """The policy's greedy answers to the held-out suite (spread over the rollout workers), graded here."""
        from evaluation.suite import grade, summarize

        params = SamplingParams(self.config.eval_max_new_tokens, temperature=0.0)
        return summarize(grade(self.suite, self.rollout.answer_prompts([item.prompt for item in self.suite.items],
                                                                       params)))

    def start_collection(self, iteration: int, background: bool = False) -> Pending:
        """Start `iteration`'s rollout: `num_queries` groups from its seed."""
        return self.rollout.start(self.config.num_queries, iteration_seed(self.config, iteration), background)

    def sync_weights(self):
        """The update backend's weights into the rollout backend's engines, verified; returns the `SyncReport`."""
        return self.rollout.receive_weights(self.update.publish_weights())

    def iteration(self, iteration: int) -> tuple[dict, Rollout]:
        """One collect/reference/update/sync step; returns its metrics and rollout."""
        config, start = self.config, time.perf_counter()
        times, peaks = {}, {}
        self.take_peaks()

        def phase(name, fn, *args):
            tick = time.perf_counter()
            abandonable = name in ABANDONABLE_PHASES  # the update's step and the weight sync finish once begun
            with self.stop.phase(abandonable) if self.stop else contextlib.nullcontext():
                value = fn(*args)
            synchronize(self.update.device)  # GPU work is timed when it has finished
            times[name], peaks[name] = time.perf_counter() - tick, self.take_peaks()
            release_freed_memory()
            return value

        pending, self.next_rollout = self.next_rollout or self.start_collection(iteration), None
        collected = phase("collect", pending.result)
        rollout = collected.rollout
        batch = make_batch(collected.rows, self.rollout.roles, self.rollout.pad_token_id)
        phase("reference", self.rollout.reference, batch)
        if config.overlap and iteration < config.iterations:  # sampled with these weights, trained on after the step
            self.next_rollout = self.start_collection(iteration + 1, background=True)
        losses = phase("train", self.train_step, batch)
        tick = time.perf_counter()
        if self.next_rollout:
            self.next_rollout.wait()  # the engines take new weights between collections only
        waited = time.perf_counter() - tick
        sync = phase("sync", self.sync_weights)

        metrics = losses | iteration_metrics(rollout, batch, self.rollout.roles, self.rollout.guard_names)
        metrics |= collected.failures
        metrics |= {f"algorithm/{name}": float(value) for name, value in asdict(self.settings).items()
                    if isinstance(value, (int, float)) and not isinstance(value, bool)}
        generate = rollout.timings.get("generate", 0.0)
        metrics.update({
            "time/generate": generate, "time/env_and_judge": rollout.timings.get("env_and_judge", 0.0),
            "time/reference": times["reference"], "time/train": times["train"], "time/overlap_wait": waited,
            "time/sync": sync.total_s, "sync/max_logprob_gap": sync.max_abs_diff, "sync/bytes": sync.bytes,
            "time/iteration": time.perf_counter() - start,
            "throughput/generated_tokens_per_s": int(batch.get(RESPONSE_MASK).sum()) / max(generate, 1e-9),
        })
        metrics.update(memory_metrics(peaks, by_phase=not config.overlap))
        return metrics, rollout

    def train_step(self, batch) -> dict[str, float]:
        """The update backend's step; the engines sleep through it unless they are collecting (overlap)."""
        if self.next_rollout:
            return self.update.step(batch)
        self.rollout.sleep()
        try:
            return self.update.step(batch)
        finally:
            self.rollout.wake_up()

    def take_peaks(self) -> tuple[float | None, float | None]:
        """(resident GiB, device GiB): the largest peak of any process of the run since the last call."""
        found = [(self.peak_memory.take(), device_peak_gib(self.update.device)),
                 *self.rollout.take_peaks(), *self.update.take_peaks()]
        return tuple(max((p[i] for p in found if p[i] is not None), default=None) for i in (0, 1))

    def save(self, iteration: int, metrics: dict | None = None) -> Path:
        """Checkpoint `iteration`, with its `metrics` line; returns the checkpoint folder."""
        config_yaml = yaml.safe_dump(asdict(self.config), sort_keys=False)
        self.update.save(self.run_dir, iteration, config_yaml, {"iteration": iteration, **(metrics or {})})
        return checkpoint.latest_checkpoint(self.run_dir)

    def close(self) -> None:
        self.peak_memory.close()
        try:
            self.rollout.close()
        finally:
            self.update.close()


def make_backends(config: TrainConfig, judges: dict | None = None, policy=None,
                  resume_from: Path | None = None) -> tuple[TrainConfig, RolloutBackend, UpdateBackend]:
    """(the config with its resolved defaults, the rollout backend, the update backend) of a run; with
    `resume_from`, the update backend starts from that checkpoint's weights, optimizer and algorithm state."""
    if config.cluster.address:
        if judges is not None or policy is not None:
            raise ValueError("a cluster run builds its engine and judges in each rollout worker; "
                             "judges and a policy cannot be passed in")
        from algorithms.cluster import ray_backends

        return ray_backends(config, resume_from)
    parts = build_run(config, judges, policy)
    if resume_from:
        load_checkpoint_weights(parts.model, Path(resume_from), parts.config)
    update = LocalUpdate(parts.config, parts.model, parts.tokenizer, parts.loss, resume_from)
    return parts.config, LocalRollout(parts, parts.config), update


def memory_metrics(peaks: dict[str, tuple[float | None, float | None]], by_phase: bool = True) -> dict[str, float]:
    """From each phase's (resident GiB, device GiB) peak: `memory/peak_gib`, the iteration's peak resident
    memory, and `memory/device_peak_gib`, its peak device memory (GPU runs only); with `by_phase` also each
    phase's (`memory/peak_gib/train`, ...). With overlap, collection runs beside the other phases, so only the
    totals."""
    metrics = {}
    for index, key in enumerate(("memory/peak_gib", "memory/device_peak_gib")):
        values = {phase: peak[index] for phase, peak in peaks.items()}
        if None in values.values():
            continue
        metrics[key] = max(values.values())
        if by_phase:
            metrics |= {f"{key}/{phase}": value for phase, value in values.items()}
    return metrics


def iteration_seed(config: TrainConfig, iteration: int) -> int:
    """The seed of `iteration`'s first group; group g plays from this seed + g."""
    return config.seed * 1_000_003 + iteration * config.num_queries


def _new_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.output) / f"{config.algorithm}-{stamp}"


def _truncate_metrics(path: Path, iteration: int, saved: dict | None = None) -> None:
    """Drop metric lines logged after the checkpoint we resume from. A torn last line (what a killed run
    leaves) is dropped with a warning; a damaged line before it raises `CheckpointError`. The checkpoint's own
    line (`saved`, kept in its trainer state) is put back when the log lost it, as a database replays its log."""
    import json

    if not path.exists():
        if saved:
            path.write_text(json.dumps(saved) + "\n")
        return

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
    if saved and not any(json.loads(line)["iteration"] == saved.get("iteration") for line in keep):
        keep.append(json.dumps(saved))
    path.write_text("".join(line + "\n" for line in keep))
