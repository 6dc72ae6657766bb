"""Time per GRPO training step: our `grpo` against TRL's `GRPOTrainer`, in one run.

    pip install -e '.[bench]'                       # TRL is a benchmark-only dependency
    python -m benchmarks.trl_comparison --steps 3 --warmup 1 --engine vllm

Both train the same model on the same prompts (the bundled sample), with the
same G, number of prompts per step, token limit, sampling temperature,
learning rate, KL coefficient and reward: a cheap programmatic reward
(answer length, capped), so that the step time is the framework's own
(generation, reference log-probs, loss, optimizer, weight sync). Each side
makes one optimizer step per `num_prompts` x `group_size` completions, with
two gradient-accumulation micro-batches. Prints a Markdown table with the
median seconds per step of each and their ratio (ours / TRL's).
"""
from __future__ import annotations

import platform
import statistics
import tempfile
import time
from dataclasses import dataclass

from jsonargparse import auto_cli

from agents.agent import PromptAgent
from agents.judges import FunctionJudge
from agents.models import DEFAULT_MODEL
from algorithms.config import SAMPLE_PROMPTS, TrainConfig


@dataclass
class Settings:
    steps: int = 3
    """Measured optimizer steps (after the warm-up)."""
    warmup: int = 1
    """Steps run first and not counted."""
    model: str = DEFAULT_MODEL
    engine: str = "auto"
    """Our policy engine (hf, vllm, auto)."""
    trl_use_vllm: bool = False
    """Let TRL generate with vLLM ("colocate" mode) instead of transformers."""
    num_prompts: int = 8
    group_size: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    lr: float = 1e-6
    beta: float = 0.05
    seed: int = 0


def length_reward(answer: str) -> float:
    """The shared reward: longer answers score higher, up to 400 characters."""
    return min(len(answer), 400) / 400


def ours(settings: Settings) -> tuple[list[float], str]:
    """Seconds per optimizer step of our trainer with the `grpo` algorithm, and the engine it used."""
    from algorithms.trainer import Trainer

    config = TrainConfig(model=settings.model, engine=settings.engine, algorithm="grpo", prompts=SAMPLE_PROMPTS,
                         game="LanguageSelfPlay-v0", lora_rank=0, min_p=0.0, autocast=False, eval_suite=None,
                         num_queries=settings.num_prompts, group_size=settings.group_size,
                         batch_size=settings.num_prompts // 2, grad_accumulation=2, lr=settings.lr,
                         beta=settings.beta, max_new_tokens=settings.max_new_tokens,
                         temperature=settings.temperature, iterations=settings.warmup + settings.steps,
                         seed=settings.seed, output=tempfile.mkdtemp(prefix="lsp-trl-bench-"), save_every=10**6)
    judge = FunctionJudge(lambda query, answer: length_reward(answer), name="length")
    trainer = Trainer(config, judges={"judge": judge})
    times = []
    try:
        for step in range(1, config.iterations + 1):
            start = time.perf_counter()
            trainer.iteration(step)
            times.append(time.perf_counter() - start)
    finally:
        trainer.close()
    return times[settings.warmup:], trainer.parts.policy.name


def trl(settings: Settings) -> list[float]:
    """Seconds per optimizer step of TRL's `GRPOTrainer` on the same model, prompts and sizes."""
    import pyarrow
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.models import load_model

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    def reward(prompts, completions, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [length_reward(text) for text in texts]

    model, tokenizer = load_model(settings.model)
    prompts = PromptAgent(SAMPLE_PROMPTS, seed=settings.seed).prompts
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in prompts]
    dataset = Dataset(pyarrow.Table.from_pylist(rows), fingerprint="trl-comparison-prompts")  # no content hashing
    args = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="trl-bench-"), seed=settings.seed, use_cpu=True,
                      per_device_train_batch_size=settings.num_prompts * settings.group_size // 2,
                      gradient_accumulation_steps=2, num_generations=settings.group_size,
                      max_completion_length=settings.max_new_tokens, temperature=settings.temperature,
                      learning_rate=settings.lr, beta=settings.beta, max_steps=settings.warmup + settings.steps,
                      use_vllm=settings.trl_use_vllm, vllm_mode="colocate", logging_steps=1, save_strategy="no",
                      report_to="none", disable_tqdm=True)
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    return timer.times[settings.warmup:]


def run(settings: Settings) -> str:
    return compare(settings)[0]


def compare(settings: Settings, after=lambda trainer: "") -> tuple[str, float]:
    """The report, and the ratio of our median step time to TRL's. `after(name)` is called after each trainer's
    run ("ours", then "trl"); what it returns (e.g. peak memory) goes in the table's last column."""
    import importlib.util

    if importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None:
        raise ValueError("this benchmark needs TRL and datasets: pip install -e '.[bench]'")
    ours_times, engine_used = ours(settings)
    notes = {"ours": after("ours")}
    trl_times = trl(settings)
    notes["trl"] = after("trl")
    ours_median, trl_median = statistics.median(ours_times), statistics.median(trl_times)
    trl_engine = "vLLM" if settings.trl_use_vllm else "transformers"
    return "\n".join([
        f"GRPO, {settings.model}, {settings.num_prompts} prompts x G={settings.group_size}, "
        f"{settings.max_new_tokens} new tokens, median of {settings.steps} steps after {settings.warmup} warm-up, "
        f"{platform.machine()} with {_cores()} cores", "",
        "| trainer | seconds per step (median) | all steps | |", "|---|---|---|---|",
        f"| ours (`grpo`, engine {engine_used}) | {ours_median:.1f} | {_list(ours_times)} | {notes['ours']} |",
        f"| TRL `GRPOTrainer` ({trl_engine} generation) | {trl_median:.1f} | {_list(trl_times)} | {notes['trl']} |",
        "", f"ratio ours / TRL: **{ours_median / trl_median:.2f}**"]), ours_median / trl_median


def _list(times: list[float]) -> str:
    return ", ".join(f"{t:.1f}" for t in times)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
