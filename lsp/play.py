"""`lsp play`: one episode of a game, played by a model against itself."""
from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from agents.models import DEFAULT_MODEL


@dataclass
class PlayConfig:
    """Watch one episode: the challenger writes a query, the solver answers it
    `answers` times (the episode is forked at the solver's turn), the judges score."""

    game: str = "LanguageSelfPlay-v0"
    model: str = DEFAULT_MODEL
    """Alias, Hugging Face id, local folder, or a LoRA adapter folder (its base model is loaded)."""
    adapter: str | None = None
    """A LoRA adapter folder (PEFT format) to load onto `model`."""
    seed: int = 0
    answers: int = 2
    """Solver answers to the one query (G)."""
    judge: str = "helpfulness"
    """helpfulness, rubric, reward-model:PATH."""
    quality_judge: str = "rubric"
    """Self-reward R_Q; "none" to turn it off."""
    judge_mode: str = "expected"
    """Self-judges: "expected" (expected score digit) or "generate" (write, then parse "Score: N")."""
    max_new_tokens: int = 96
    temperature: float = 0.8


def check_play(config: PlayConfig) -> None:
    """Refuse an unknown game or judge before any model loads."""
    import lsp_env
    from agents.judges import check_judge_name

    lsp_env.registry[config.game]
    check_judge_name(config.judge)
    check_judge_name(config.quality_judge)


def play(config: PlayConfig, console: Console | None = None):
    """Play and print one episode group; returns the `algorithms.collector.Rollout`."""
    import torch

    from agents.agent import LLMAgent
    from agents.hf import HFPolicy
    from agents.models import load_model
    from agents.policy import SamplingParams
    from algorithms.assembly import build_judges, make_game
    from algorithms.collector import Collector
    from algorithms.run_log import rollout_markdown

    console = console or Console()
    torch.manual_seed(config.seed)
    with console.status(f"loading {config.model} ..."):
        policy = HFPolicy(*load_model(config.model, adapter=config.adapter))
    judges = build_judges({"judge": config.judge, "quality_judge": config.quality_judge}, lambda: policy,
                          mode=config.judge_mode)
    env = make_game(config.game, judges)
    agent = LLMAgent(policy, params=SamplingParams(config.max_new_tokens, config.temperature))
    collector = Collector(lambda: make_game(config.game, judges), {r: agent for r in env.possible_agents},
                          group_size=config.answers)
    with console.status("playing ..."):
        rollout = collector.collect(num_groups=1, seed=config.seed)
    console.rule(f"{config.game} · {config.model} · seed {config.seed}")
    console.print(rollout_markdown(rollout, everything=True), markup=False, highlight=False)  # model text as is
    policy.close()
    return rollout
