"""The self-play training loop behind `lsp train`.

Each iteration: collect -> reference log-probs -> advantages -> loss ->
one optimizer step (AdamW, gradient clipping) -> push the new weights to the
engine and verify them (`agents.sync`) -> log -> checkpoint.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from statistics import mean, pstdev

import torch
import yaml

import lsp_env
from agents import LLMAgent, SamplingParams
from agents.agent import PromptAgent
from agents.engines import make_policy
from agents.hf import HFPolicy
from agents.judges import RUBRICS, build_judge
from agents.logprobs import token_log_probs
from agents.lora import add_lora, base_weights, has_adapter
from agents.models import load_model, resolve_model
from agents.policy import Policy
from agents.sync import WeightSync
from algorithms import checkpoint, registration
from algorithms.base import (ATTENTION_MASK, GROUP_KEY, REF_LOG_PROBS, RESPONSE_MASK, ROLE_KEY, SAMPLER_LOG_PROBS,
                             TOKENS)
from algorithms.batch import episode_breakdown, make_batch, rollout_rows, share_without_spread
from algorithms.collector import Collector, Rollout
from algorithms.config import SAMPLE_PROMPTS, TrainConfig, check_settings
from algorithms.run_log import RunLog, plot_curves
from evaluation.suite import evaluate_policy, load_suite
from lsp_env.contract import BREAKDOWN, branch_agent, judge_arguments
from lsp_env.guards import penalty_totals, trigger_counts
from lsp_env.outcomes import outcome_rates


class Trainer:
    """Builds every part of a run from a `TrainConfig` and trains it."""

    def __init__(self, config: TrainConfig, run_dir: Path | None = None, judges: dict | None = None,
                 policy: Policy | None = None):
        """`judges` ({"judge": ..., "quality_judge": ...}) replaces the judges named in the config;
        `policy` replaces the engine named in the config (it must serve `config.model`)."""
        self.config = config
        self.run_dir = Path(run_dir) if run_dir else _new_run_dir(config)  # made once the run can start
        self.start_iteration = 0
        # Settings that cannot work fail here, before any model loads.
        self.suite = load_suite(config.eval_suite) if config.eval_suite else None
        self.algorithm_config = check_settings(config)
        self.algorithm_class = registration.resolve(config.algorithm)
        if config.lr is None:  # the paper's lr for full fine-tuning, the recipe's for LoRA
            self.config = config = replace(config, lr=self.algorithm_class.recommended_lr(bool(config.lora_rank)))
        game_judges = judge_arguments(lsp_env.registry[config.game].load())
        if self.algorithm_class.self_reward and "quality_judge" not in game_judges:
            raise ValueError(f"algorithm {config.algorithm!r} adds the quality self-reward R_Q, but {config.game} "
                             f"takes no quality_judge; use lsp-zero, or a game with one (LanguageSelfPlay-v0, "
                             f"ConstrainedInstructions-v0)")
        if self.algorithm_class.self_reward and judges is None and config.quality_judge in (None, "", "none"):
            raise ValueError(f"algorithm {config.algorithm!r} adds the quality self-reward R_Q, but quality_judge is "
                             f"{config.quality_judge!r}; name one (paper-rubric, rubric) or use lsp-zero")
        torch.manual_seed(config.seed)
        dtype = getattr(torch, config.dtype)
        model_path = resolve_model(config.model)
        self.model, self.tokenizer = load_model(model_path, dtype=dtype, device=config.device)
        if config.lora_rank:
            self.model = add_lora(self.model, config.lora_rank, config.lora_alpha, config.lora_target_modules,
                                  config.model)
            self.reference_model = self.model  # used under `base_weights`: the adapter switched off
        else:
            self.reference_model = load_model(model_path, dtype=dtype, device=config.device)[0].requires_grad_(False)
        self.policy = policy if policy is not None else make_policy(
            config.engine, self.model, self.tokenizer, model_path=model_path, dtype=config.engine_dtype_name(),
            device=config.device, seed=config.seed, server_url=config.server_url,
            server_timeout_s=config.server_timeout_s)
        shares_model = config.lora_rank and isinstance(self.policy, HFPolicy) and self.policy.model is self.model
        shared_lock = self.policy._lock if shares_model else None  # one model, adapter on for one, off for the other
        self.reference = HFPolicy(self.reference_model, self.tokenizer, base_only=bool(config.lora_rank),
                                  lock=shared_lock, autocast=torch.bfloat16 if config.autocast else None)
        self.weight_sync = WeightSync(self.policy, self.model, self.tokenizer, config.sync_tolerance,
                                      config.sync_timeout_s)
        self.weight_sync(push=False)  # the engine must start from the trainer's weights
        self.sampling = SamplingParams(config.max_new_tokens, config.temperature, config.top_p, config.min_p)
        self.loss = self.algorithm_class(self.model, config=self.algorithm_config, sampling=self.sampling,
                                         reference_network=self.reference_model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.judge_policy = None  # the engine of the self-judges, when it is not the reference
        self.judges = self._judges(game_judges) if judges is None else judges
        env = self._make_env()
        self.roles = list(env.possible_agents)
        self.guard_names = [guard.name for guard in getattr(env, "guards", ())]
        self.collector = Collector(self._make_env, self._players(), config.group_size)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    # --- construction -----------------------------------------------------------
    def _judges(self, game_judges: tuple[str, ...]) -> dict:
        """The judges the game takes, self-judges on the base weights (`_judge_engine`)."""
        config = self.config
        names = {"judge": config.judge, "quality_judge": config.quality_judge if self.algorithm_class.self_reward
                 else None}
        names = {role: name for role, name in names.items() if role in game_judges and name not in (None, "", "none")}
        policy = self._judge_engine() if any(name in RUBRICS for name in names.values()) else None
        return {role: build_judge(name, policy, config.judge_max_new_tokens, config.judge_mode)
                for role, name in names.items()}

    def _judge_engine(self) -> Policy:
        """The reference model, or a frozen vLLM engine of the base weights (`TrainConfig.judge_engine`)."""
        config = self.config
        if config.judge_engine == "hf":
            return self.reference
        self.judge_policy = make_policy("vllm", None, self.tokenizer, model_path=resolve_model(config.model),
                                        dtype=config.engine_dtype_name(), device=config.device, seed=config.seed,
                                        kv_cache_gib=0.5)
        return self.judge_policy

    def _make_env(self):
        env = lsp_env.make_with_judges(self.config.game, self.judges, self.config.game_args)
        if getattr(self.algorithm_config, "zero_sum", False):
            env.zero_sum = True  # penalties credited to the other role (TextGame)
        return env

    def _players(self) -> dict:
        env = self._make_env()
        players = {}
        for role in env.possible_agents:
            if self.algorithm_class.needs_prompts and role != branch_agent(env):
                players[role] = PromptAgent(self.config.prompts or SAMPLE_PROMPTS, seed=self.config.seed)
            else:
                players[role] = LLMAgent(self.policy, params=self.sampling)
        return players

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
        config = TrainConfig.from_yaml(path / "config.yaml", **overrides)
        trainer = cls(config, run_dir, judges)
        if has_adapter(trainer.model):
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(trainer.model, load_file(path / "model" / "adapter_model.safetensors"))
        else:
            weights, _ = load_model(str(path / "model"), dtype=getattr(torch, config.dtype), device=config.device)
            trainer.model.load_state_dict(weights.state_dict())
        trainer.weight_sync()
        trainer.optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        trainer.start_iteration = state["iteration"]
        trainer.loss.load_algorithm_state(state["extra"].get("algorithm", {}))
        _truncate_metrics(Path(run_dir) / "metrics.jsonl", state["iteration"])
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
        params = SamplingParams(self.config.eval_max_new_tokens, temperature=0.0)
        score, _ = evaluate_policy(self.policy, suite, params)
        path = self.run_dir / "eval.json"
        results = json.loads(path.read_text()) if path.exists() else {}
        results[when] = {"suite": suite.name, "prompts": len(suite.items), **score.as_dict()}
        path.write_text(json.dumps(results, indent=1))
        line = f"held-out {suite.name} ({len(suite.items)} prompts), {when} training: strict pass {score.strict:.1%}"
        if when == "after" and "before" in results:
            line += f" (before: {results['before']['strict']:.1%})"
        print(line, flush=True)
        return score.strict

    def iteration(self, iteration: int) -> tuple[dict, Rollout]:
        """One collect/update/sync step; returns its metrics and rollout."""
        config, start = self.config, time.perf_counter()
        torch.manual_seed(config.seed * 1_000_003 + iteration)
        failures_before = {name: getattr(j, "failures", 0) for name, j in self.judges.items() if j}
        rollout = self.collector.collect(config.num_queries, seed=config.seed * 1_000_003 + iteration * config.num_queries)
        rows = rollout_rows(rollout)
        batch = make_batch(rows, self.roles, self._pad_id())

        tick = time.perf_counter()
        self._fill_reference_log_probs(batch)
        reference_time = time.perf_counter() - tick

        tick = time.perf_counter()
        self.loss.compute_advantages(batch)
        losses = self._optimizer_step(batch)
        train_time = time.perf_counter() - tick

        sync = self.weight_sync()

        metrics = self._metrics(rollout, batch, losses)
        for name, judge in self.judges.items():
            if judge is not None and hasattr(judge, "failures"):
                metrics[f"{name}/parse_failures"] = judge.failures - failures_before[name]
        generated = int(batch.get(RESPONSE_MASK).sum())
        metrics.update({
            "time/generate": rollout.timings.get("generate", 0.0),
            "time/env_and_judge": rollout.timings.get("env_and_judge", 0.0),
            "time/reference": reference_time, "time/train": train_time, "time/sync": sync.total_s,
            "sync/max_logprob_gap": sync.max_abs_diff,
            "time/iteration": time.perf_counter() - start,
            "throughput/generated_tokens_per_s": generated / max(rollout.timings.get("generate", 0.0), 1e-9),
        })
        return metrics, rollout

    @torch.no_grad()
    def _fill_reference_log_probs(self, batch) -> None:
        """The reference model's log-probs of the sampled tokens under the same sampling settings, so that
        the KL compares like with like (and is exactly 0 while the policy equals the reference)."""
        with base_weights(self.reference_model), self._autocast():
            batch.set(REF_LOG_PROBS, token_log_probs(self.reference_model.eval(), batch.get(TOKENS),
                                                     batch.get(ATTENTION_MASK), batch.get(RESPONSE_MASK),
                                                     self.sampling))

    def _optimizer_step(self, batch) -> dict:
        """Gradient accumulation over micro-batches of `batch_size` groups (`TrainConfig.micro_batches`), then one
        step."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        groups = batch.get(GROUP_KEY).unique()
        totals = {"objective": 0.0, "kl": 0.0, "kl_penalty": 0.0, "sampler_gap": 0.0}
        for chunk in groups.split(self.config.micro_batches()[0]):
            rows = torch.isin(batch.get(GROUP_KEY), chunk)
            share = float(rows.sum()) / len(batch)
            with self._autocast():
                output = self.loss(batch[rows])
            objective = output.loss_objective
            penalty = getattr(output, "loss_kl_to_ref", None)
            total = objective + (penalty if penalty is not None else 0.0)
            (total * share).backward()
            totals["objective"] += float(objective.detach()) * share
            totals["kl_penalty"] += float(penalty.detach()) * share if penalty is not None else 0.0
            kl = getattr(output, "kl_to_ref", None)
            totals["kl"] += float(kl) * share if kl is not None else 0.0
            totals["sampler_gap"] += float(output.kl_approx) * share
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.model.eval()
        return {f"loss/{k}": v for k, v in totals.items()} | {"loss/grad_norm": float(grad_norm)}

    def _autocast(self):
        return torch.autocast(self.model.device.type, torch.bfloat16, enabled=self.config.autocast)

    def _metrics(self, rollout: Rollout, batch, losses: dict) -> dict:
        metrics = dict(losses)
        mask = batch.get(RESPONSE_MASK)
        lengths = mask.sum(-1).float()
        token_logprobs = (batch.get(SAMPLER_LOG_PROBS) * mask).sum(-1)
        for index, role in enumerate(self.roles):
            rows = batch.get(ROLE_KEY) == index
            if rows.any():
                metrics[f"reward/{role}"] = float(batch.get("reward")[rows].mean())
                metrics[f"length/{role}"] = float(lengths[rows].mean())
                metrics[f"entropy/{role}"] = float(-token_logprobs[rows].sum() / lengths[rows].sum())
        metrics["groups/no_spread"] = share_without_spread(batch)  # no gradient from these groups
        for key in BREAKDOWN:
            values = [v for e in rollout.episodes if (v := episode_breakdown(e, key)) is not None]
            if values:
                metrics[f"judge/{key}"] = mean(values)
            if (share := share_without_spread(batch, ("breakdown", key))) == share:  # NaN: no group to count
                metrics[f"groups/no_spread_in_{key}"] = share  # e.g. groups only the self-reward R_Q tells apart
        metrics["episodes/invalid_moves"] = sum(any(i.get("invalid_move") for i in e.infos.values())
                                                for e in rollout.episodes)
        metrics.update(trigger_counts(rollout.episodes, self.guard_names))
        metrics.update(penalty_totals(rollout.episodes, self.roles))
        metrics.update(outcome_rates(rollout.episodes))
        values = [mean(rewards) for episodes in rollout.groups().values()
                  if (rewards := [v for e in episodes if (v := episode_breakdown(e, "reward")) is not None])]
        if values:
            metrics["value/mean"], metrics["value/std_across_queries"] = mean(values), pstdev(values)
        return metrics

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    def save(self, iteration: int) -> Path:
        return checkpoint.save_checkpoint(self.run_dir, iteration, self.model, self.tokenizer, self.optimizer,
                                          yaml.safe_dump(asdict(self.config), sort_keys=False),
                                          extra={"algorithm": self.loss.algorithm_state()})

    def close(self) -> None:
        for judge in self.judges.values():
            if judge is not None and hasattr(judge, "close"):
                judge.close()
        self.policy.close()
        self.reference.close()
        if self.judge_policy is not None:
            self.judge_policy.close()


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
