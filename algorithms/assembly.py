"""Assembly: `build_run` turns a `TrainConfig` into the parts of a run.

    parts = build_run(config)        # models, engine, judges, game factory, players, loss
    env = parts.make_env()           # a fresh game with the run's judges
    parts.close()

`Trainer` adds the optimizer, the weight sync and the collector; `lsp play` and
the benchmarks build their judges and games with the same functions.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

import lsp_env
from agents import LLMAgent, SamplingParams
from agents.agent import PromptAgent
from agents.engines import make_policy
from agents.hf import HFPolicy
from agents.judges import RUBRICS, build_judge
from agents.lora import add_lora
from agents.models import load_model, resolve_model
from agents.policy import Policy
from agents.vllm_engine import JUDGE_GPU_MEMORY_FRACTION
from algorithms import registration
from algorithms.config import ALGORITHM_ALIASES, SAMPLE_PROMPTS, TrainConfig, check_settings
from lsp_env.contract import branch_agent, judge_arguments


@dataclass
class RunParts:
    """Everything a run is built from."""

    config: TrainConfig
    algorithm_class: type
    algorithm_config: Any
    model: torch.nn.Module
    """The trained model (a PEFT model with LoRA)."""
    tokenizer: Any
    reference_model: torch.nn.Module
    """With LoRA the model itself, used with the adapter off (`agents.lora.base_weights`); else a frozen copy."""
    policy: Policy
    """The engine that samples both roles."""
    reference: HFPolicy
    """The reference model behind the `Policy` interface."""
    sampling: SamplingParams
    loss: torch.nn.Module
    judges: dict
    """{"judge": ..., "quality_judge": ...}: the judges the game takes."""
    judge_policy: Policy | None = None
    """A frozen vLLM engine of the base weights for the self-judges (`judge_engine: vllm`)."""

    def make_env(self):
        """A fresh game with the run's judges."""
        return make_game(self.config.game, self.judges, self.config.game_args,
                         zero_sum=getattr(self.algorithm_config, "zero_sum", False))

    def players(self) -> dict:
        """The agent of each role: the shared policy, or the prompt file for data-driven algorithms (grpo)."""
        env = self.make_env()
        players = {}
        for role in env.possible_agents:
            if self.algorithm_class.needs_prompts and role != branch_agent(env):
                players[role] = PromptAgent(self.config.prompts or SAMPLE_PROMPTS, seed=self.config.seed)
            else:
                players[role] = LLMAgent(self.policy, params=self.sampling)
        env.close()
        return players

    def pad_token_id(self) -> int:
        tokenizer = self.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def close(self) -> None:
        for judge in self.judges.values():
            if judge is not None and hasattr(judge, "close"):
                judge.close()
        for engine in (self.policy, self.reference, self.judge_policy):
            if engine is not None:
                engine.close()


def make_game(game: str, judges: Mapping[str, Any], game_args: Mapping[str, Any] | None = None,
              zero_sum: bool = False):
    """`lsp_env.make(game)` with the judges the game takes; `zero_sum` credits each role's penalties to the other
    (`TextGame`)."""
    env = lsp_env.make_with_judges(game, judges, game_args)
    if zero_sum:
        env.zero_sum = True
    return env


def build_judges(names: Mapping[str, str | None], policy_factory, max_new_tokens: int = 128,
                 mode: str = "expected") -> dict:
    """{role: judge} for the named judges ("none" or None: no judge). `policy_factory()` gives the engine of the
    self-judges (the rubric judges); it is called only when one of them is asked for."""
    names = {role: name for role, name in names.items() if name not in (None, "", "none")}
    policy = policy_factory() if any(name in RUBRICS for name in names.values()) else None
    return {role: build_judge(name, policy, max_new_tokens, mode) for role, name in names.items()}


def check_run(config: TrainConfig, judges_given: bool = False) -> tuple[TrainConfig, type, Any]:
    """The checks that load no model: settings (`check_settings`), and that the algorithm gets what it needs from
    the game. Returns the config with its default lr filled in, the algorithm class and its settings."""
    settings = check_settings(config)
    algorithm = registration.resolve(config.algorithm)
    if config.lr is None:  # the paper's lr for full fine-tuning, the recipe's for LoRA
        config = replace(config, lr=algorithm.recommended_lr(bool(config.lora_rank)))
    if config.overlap and settings.clip_epsilon is None:  # samples a step old need the clipped ratio
        settings = replace(settings, clip_epsilon=0.2)
    if algorithm.self_reward and "quality_judge" not in judge_arguments(lsp_env.registry[config.game].load()):
        raise ValueError(f"algorithm {config.algorithm!r} adds the quality self-reward R_Q, but {config.game} "
                         f"takes no quality_judge; use lsp-zero, or a game with one (LanguageSelfPlay-v0, "
                         f"ConstrainedInstructions-v0)")
    if algorithm.self_reward and not judges_given and config.quality_judge in (None, "", "none"):
        raise ValueError(f"algorithm {config.algorithm!r} adds the quality self-reward R_Q, but quality_judge is "
                         f"{config.quality_judge!r}; name one (paper-rubric, rubric) or use lsp-zero")
    return config, algorithm, settings


def resolved_config(config: TrainConfig) -> TrainConfig:
    """`config` with every default that its run resolves filled in (what `lsp train --print_config` shows): the
    lr, the micro-batches, and the algorithm's settings as `algorithm_args`, with their aliases beside them."""
    config, _, settings = check_run(config)
    batch_size, accumulation = config.micro_batches()
    values = asdict(settings)
    return replace(config, batch_size=batch_size, grad_accumulation=accumulation, algorithm_args=values,
                   **{name: values[name] for name in ALGORITHM_ALIASES})


def build_run(config: TrainConfig, judges: dict | None = None, policy: Policy | None = None) -> RunParts:
    """Check `config` (before any model loads), then build every part of its run. `judges` replaces the judges
    named in the config; `policy` replaces its engine (it must serve `config.model`)."""
    config, algorithm_class, algorithm_config = check_run(config, judges_given=judges is not None)
    model, tokenizer, reference_model = load_models(config)
    model_path = resolve_model(config.model)
    if policy is None:
        policy = make_policy(config.engine, model, tokenizer, model_path=model_path, dtype=config.engine_dtype_name(),
                             device=config.device, seed=config.seed, server_url=config.server_url,
                             server_timeout_s=config.server_timeout_s, kv_cache_gib=config.kv_cache_gib)
        if config.engine == "openai":  # the run pushes new weights after each step: fail now, not after one
            policy.check_weight_updates()
    if config.overlap and getattr(policy, "threads", None):  # sampling shares the cores with the training step
        policy.threads = 1
    if config.overlap and isinstance(policy, HFPolicy) and policy.model is model:
        raise ValueError("overlap samples while the model trains, so the engine needs its own copy of the weights: "
                         "use --engine vllm (or openai), or turn overlap off")
    shares_model = config.lora_rank and isinstance(policy, HFPolicy) and policy.model is model
    reference = HFPolicy(reference_model, tokenizer, base_only=bool(config.lora_rank),
                         lock=policy.lock if shares_model else None,  # one model: adapter on, then off
                         autocast=torch.bfloat16 if config.autocast else None)
    sampling = config.sampling()
    loss = algorithm_class(model, config=algorithm_config, sampling=sampling, reference_network=reference_model,
                           packed=config.packing)
    parts = RunParts(config, algorithm_class, algorithm_config, model, tokenizer, reference_model, policy, reference,
                     sampling, loss, judges={})
    parts.judges = _self_judges(parts) if judges is None else judges
    on_trained_model = [j for j in parts.judges.values() if getattr(j, "policy", None) is reference]
    if config.overlap and config.lora_rank and on_trained_model:
        raise ValueError("overlap runs the self-judges while the model trains, and with LoRA they score with that "
                         "same model (its adapter off): use --judge_engine vllm, or turn overlap off")
    return parts


def load_models(config: TrainConfig) -> tuple[torch.nn.Module, Any, torch.nn.Module]:
    """(model, tokenizer, reference model) of a run, seeded with `config.seed`: with LoRA the reference is the
    model itself (used with the adapter off), else a frozen copy."""
    torch.manual_seed(config.seed)
    dtype = getattr(torch, config.dtype)
    model_path = resolve_model(config.model)
    model, tokenizer = load_model(model_path, dtype=dtype, device=config.device)
    if config.gradient_checkpointing:  # active in train mode only, so sampling on the model keeps its KV cache
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora_rank:
        model = add_lora(model, config.lora_rank, config.lora_alpha, config.lora_target_modules, config.model)
        return model, tokenizer, model
    return model, tokenizer, load_model(model_path, dtype=dtype, device=config.device)[0].requires_grad_(False)


def _self_judges(parts: RunParts) -> dict:
    """The judges the game takes, scoring with the base weights: the reference model, or a frozen vLLM engine
    (`TrainConfig.judge_engine`)."""
    config = parts.config
    takes = judge_arguments(lsp_env.registry[config.game].load())
    names = {"judge": config.judge,
             "quality_judge": config.quality_judge if parts.algorithm_class.self_reward else None}

    def engine() -> Policy:
        if config.judge_engine == "hf":
            return parts.reference
        parts.judge_policy = make_policy("vllm", None, parts.tokenizer, model_path=resolve_model(config.model),
                                         dtype=config.engine_dtype_name(), device=config.device, seed=config.seed,
                                         kv_cache_gib=0.5, memory_fraction=JUDGE_GPU_MEMORY_FRACTION)
        return parts.judge_policy

    return build_judges({role: name for role, name in names.items() if role in takes}, engine,
                        config.judge_max_new_tokens, config.judge_mode)
