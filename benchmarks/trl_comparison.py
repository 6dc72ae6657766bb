"""Time per GRPO training step: our `grpo` against TRL's `GRPOTrainer`, each in a fresh process.

    pip install -e '.[bench]'                       # TRL is a benchmark-only dependency
    python -m benchmarks.trl_comparison --steps 3 --warmup 1

Both train every weight of the same model on the same prompts (the bundled
sample), with the same G, number of prompts per step, token limit, sampling
(temperature 1, no truncation), learning rate, KL coefficient and reward: a
cheap programmatic reward (answer length, capped), so that the step time is the
framework's own (generation, reference log-probs, loss, optimizer, weight
sync). Each side makes one optimizer step per `num_prompts` x `group_size`
completions, with two gradient-accumulation micro-batches, at its own
defaults for this CPU: ours bfloat16 autocast where it is fast (AMX), with float32 weights and vLLM
sampling in bfloat16; TRL's `bf16=True` with gradient checkpointing, and
again without it (`trl_variants`). Each side runs in its own process
(`benchmarks.fresh_process`), which also reports its peak memory and shows
that no vLLM engine was loaded next to TRL. Prints a Markdown table with the
median seconds per step of each, and the ratio ours / TRL's for each variant.
"""
from __future__ import annotations

import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field

from jsonargparse import auto_cli

from agents.agent import PromptAgent
from agents.judges import FunctionJudge
from agents.models import DEFAULT_MODEL
from algorithms.config import SAMPLE_PROMPTS, TrainConfig
from benchmarks.fresh_process import run_fresh


@dataclass
class TRLVariant:
    """TRL settings that change its speed on CPU (TRL's own defaults: both on)."""

    bf16: bool = True
    gradient_checkpointing: bool = True

    @property
    def label(self) -> str:
        precision = "bf16" if self.bf16 else "float32"
        return f"{precision}, gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}"


@dataclass
class Settings:
    steps: int = 3
    """Measured optimizer steps (after the warm-up)."""
    warmup: int = 1
    """Steps run first and not counted."""
    model: str = DEFAULT_MODEL
    engine: str = "vllm"
    """Our policy engine (hf, vllm, auto)."""
    autocast: bool | None = None
    """Our side in bfloat16 autocast with float32 weights, sampling in bfloat16 on vLLM; unset: `lsp train`'s default
    (on where bf16 is fast)."""
    trl_variants: list[TRLVariant] = field(default_factory=lambda: [TRLVariant(), TRLVariant(True, False)])
    """TRL runs once per variant; the first is TRL's defaults."""
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


def ours(settings: Settings) -> dict:
    """Seconds per optimizer step of our trainer with the `grpo` algorithm (`times`), the median of each phase
    (`phases`), the engine it used and whether it ran under bf16 autocast."""
    from algorithms.trainer import Trainer

    config = TrainConfig(model=settings.model, engine=settings.engine, algorithm="grpo", prompts=SAMPLE_PROMPTS,
                         game="LanguageSelfPlay-v0", lora_rank=0, min_p=0.0, autocast=settings.autocast,
                         eval_suite=None,
                         num_queries=settings.num_prompts, group_size=settings.group_size,
                         batch_size=settings.num_prompts // 2, grad_accumulation=2, lr=settings.lr,
                         beta=settings.beta, max_new_tokens=settings.max_new_tokens,
                         temperature=settings.temperature, iterations=settings.warmup + settings.steps,
                         seed=settings.seed, output=tempfile.mkdtemp(prefix="lsp-trl-bench-"), save_every=10**6)
    judge = FunctionJudge(lambda query, answer: length_reward(answer), name="length")
    trainer = Trainer(config, judges={"judge": judge})
    times, records = [], []
    try:
        for step in range(1, config.iterations + 1):
            start = time.perf_counter()
            metrics, _ = trainer.iteration(step)
            times.append(time.perf_counter() - start)
            records.append(metrics)
    finally:
        trainer.close()
    phases = {key.split("/")[1]: statistics.median(r[key] for r in records[settings.warmup:])
              for key in records[0] if key.startswith("time/") and key != "time/iteration"}
    return {"times": times[settings.warmup:], "phases": phases, "engine": trainer.rollout.parts.policy.name,
            "autocast": config.autocast}


def trl(arguments: tuple[Settings, TRLVariant]) -> dict:
    """Seconds per optimizer step of TRL's `GRPOTrainer` on the same model, prompts and sizes (`times`)."""
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

    settings, variant = arguments
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
                      report_to="none", disable_tqdm=True, bf16=variant.bf16,
                      gradient_checkpointing=variant.gradient_checkpointing)
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    return {"times": timer.times[settings.warmup:]}


def run(settings: Settings) -> str:
    return compare(settings)[0]


def compare(settings: Settings) -> tuple[str, float, dict]:
    """The report, the ratio of our median step time to that of TRL's first variant (its defaults), and each
    side's result (`benchmarks.fresh_process.run_fresh`: step times, peak memory, ...)."""
    import importlib.util

    if importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None:
        raise ValueError("this benchmark needs TRL and datasets: pip install -e '.[bench]'")
    results = {"ours": run_fresh("benchmarks.trl_comparison:ours", settings)}
    for variant in settings.trl_variants:
        results[variant.label] = run_fresh("benchmarks.trl_comparison:trl", (settings, variant))
    medians = {name: statistics.median(result["times"]) for name, result in results.items()}
    trl_engine = "vLLM" if settings.trl_use_vllm else "transformers"
    lines = [f"GRPO, {settings.model}, every weight trained, {settings.num_prompts} prompts x G={settings.group_size}, "
             f"{settings.max_new_tokens} new tokens, median of {settings.steps} steps after {settings.warmup} "
             f"warm-up, each side in a fresh process, {platform.machine()} with {_cores()} cores", "",
             "| trainer | seconds per step (median) | all steps | ours / this | peak RSS (GiB) | torch threads | "
             "vLLM loaded |", "|---|---|---|---|---|---|---|"]
    precision = "bf16 autocast" if results["ours"]["autocast"] else "float32"
    ours_name = f"ours (`grpo`, engine {results['ours']['engine']}, {precision})"
    for name, result in results.items():
        label = ours_name if name == "ours" else f"TRL `GRPOTrainer` ({trl_engine} generation, {name})"
        ratio = "" if name == "ours" else f"{medians['ours'] / medians[name]:.2f}"
        peak = "n/a" if result.get("peak_rss_gib") is None else f"{result['peak_rss_gib']:.1f}"
        lines.append(f"| {label} | {medians[name]:.1f} | {_list(result['times'])} | {ratio} | {peak} | "
                     f"{result['torch_threads']} | {'yes' if result['vllm_imported'] else 'no'} |")
    phases = results["ours"]["phases"]
    lines += ["", "ours, per phase (s, median): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items() if v)]
    first = settings.trl_variants[0].label
    ratio = medians["ours"] / medians[first]
    lines += ["", f"ratio ours / TRL ({first}, TRL's defaults): **{ratio:.2f}**"]
    return "\n".join(lines), ratio, results


def _list(times: list[float]) -> str:
    return ", ".join(f"{t:.1f}" for t in times)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    print(run(auto_cli(Settings)))
