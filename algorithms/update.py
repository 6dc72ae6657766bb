"""One optimizer step on a batch: gradient accumulation over micro-batches of groups, clipping, the step.

The same function runs in one process and in each of N trainer processes (`algorithms.distributed`, FSDP2):
process `rank` of `world_size` takes every `world_size`-th group. Each micro-batch is run as forward and
backward passes of at most `rows_per_pass` rows of similar length (what the activations kept for the backward
pass cost in memory scales with it), and each pass's loss is weighted by its share of the whole batch: every
loss term is a mean over rows with weights set for the whole batch, so the passes, and the processes, add up
to the one-process gradient exactly.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from tensordict import TensorDict, TensorDictBase

from agents.logprobs import token_log_probs
from agents.lora import base_weights
from algorithms.base import ATTENTION_MASK, GROUP_KEY, REF_LOG_PROBS, RESPONSE_MASK, TOKENS

LOSS_TERMS = ("objective", "kl", "kl_penalty", "sampler_gap", "clip_fraction")


def optimizer_step(model: torch.nn.Module, loss: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: TensorDict,
                   groups_per_micro_batch: int, max_grad_norm: float, autocast: bool = False, rank: int = 0,
                   world_size: int = 1, rows_per_pass: int | None = None, group=None) -> dict[str, float]:
    """Accumulate the gradient of `loss` over this process's groups of `batch`, clip, step; returns the losses
    (`loss/<term>`, over the whole batch) and the gradient norm."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    totals = torch.zeros(len(LOSS_TERMS), dtype=torch.float64, device=device)  # on the device: NCCL reduces it
    for rows in training_passes(batch, groups_per_micro_batch, rows_per_pass, rank, world_size):
        totals += _accumulate(loss, batch[rows].to(device), len(rows) / len(batch), world_size, autocast)
    if world_size > 1:
        from algorithms.distributed import reduce_replicated_grads

        torch.distributed.all_reduce(totals, group=group)
        reduce_replicated_grads(model, group=group)
    trainable = [p for p in model.parameters() if p.requires_grad]
    grad_norm = (clip_gradients(trainable, max_grad_norm) if world_size > 1
                 else float(torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)))
    optimizer.step()
    model.eval()
    return dict(zip((f"loss/{term}" for term in LOSS_TERMS), totals.tolist())) | {"loss/grad_norm": grad_norm}


@torch.no_grad()
def reference_pass(reference_model: torch.nn.Module, batch: TensorDict, config, sampling=None) -> None:
    """Write the reference model's log-probs of the sampled tokens into `batch`, under the run's sampling
    settings (`sampling`), so that the KL compares like with like and is exactly 0 while the policy equals the
    reference. It runs in the step's passes (`training_passes`, from the `TrainConfig` `config`); each pass's
    rows go to the model's device, and the batch stays where it is."""
    device = next(reference_model.parameters()).device
    tokens, attention, response = batch.get(TOKENS), batch.get(ATTENTION_MASK), batch.get(RESPONSE_MASK)
    reference = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    with base_weights(reference_model), bf16_autocast(device, config.autocast):
        for rows in training_passes(batch, config.micro_batches()[0], config.rows_per_pass):
            log_probs = token_log_probs(reference_model.eval(), tokens[rows].to(device), attention[rows].to(device),
                                        response[rows].to(device), sampling, packed=config.packing)
            reference[rows] = log_probs.to(reference.device)
    batch.set(REF_LOG_PROBS, reference)


def training_passes(batch: TensorDict, groups_per_micro_batch: int, rows_per_pass: int | None = None, rank: int = 0,
                    world_size: int = 1) -> list[torch.Tensor]:
    """The rows of each forward and backward pass of process `rank`'s share of the step: its groups (every
    `world_size`-th) in micro-batches of `groups_per_micro_batch`, each split into passes of at most
    `rows_per_pass` rows (None: the whole micro-batch), longest first. The reference pass uses the same passes,
    so that each row is computed with the same padding, and the KL is exactly 0 while the policy is the
    reference."""
    groups = batch.get(GROUP_KEY).unique()
    if len(groups) % world_size:
        raise ValueError(f"{len(groups)} groups cannot be split evenly over {world_size} trainer processes")
    lengths = batch.get(ATTENTION_MASK).sum(-1)
    passes = []
    for chunk in groups[rank::world_size].split(groups_per_micro_batch):
        rows = torch.isin(batch.get(GROUP_KEY), chunk).nonzero().squeeze(-1)
        rows = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
        passes += rows.split(rows_per_pass or len(rows))
    return passes


def _accumulate(loss: torch.nn.Module, rows: TensorDict, share: float, world_size: int, autocast: bool
                ) -> torch.Tensor:
    """Backpropagate the loss of `rows` (on the model's device) weighted by their `share` of the batch; returns
    its terms (`LOSS_TERMS`) times `share`, on that device (read once per step, not once per pass)."""
    device = rows.get(ATTENTION_MASK).device
    with bf16_autocast(device, autocast):
        output = loss(rows)
    terms = output if isinstance(output, TensorDictBase) else output.to_tensordict()
    # TorchRL's convention: the loss is the sum of every "loss_*" term; the others are for logging.
    total = sum(value for key, value in terms.items() if isinstance(key, str) and key.startswith("loss_"))
    (total * share * world_size).backward()  # the processes' gradients are averaged: this makes it a sum
    logged = {"objective": "loss_objective", "kl": "kl_to_ref", "kl_penalty": "loss_kl_to_ref",
              "sampler_gap": "kl_approx", "clip_fraction": "clip_fraction"}
    return torch.stack([torch.as_tensor(terms.get(logged[name], 0.0), device=device).detach().float().reshape(())
                        for name in LOSS_TERMS]).double() * share


def bf16_autocast(device: torch.device, enabled: bool):
    """Autocast to bfloat16 on `device` if `enabled`, else nothing."""
    return torch.autocast(device.type, torch.bfloat16) if enabled else nullcontext()


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> float:
    """`torch.nn.utils.clip_grad_norm_` for a mix of plain and FSDP2-sharded (DTensor) gradients, which it does
    not take together: scale them so that their global L2 norm is at most `max_norm`; returns the norm before."""
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = []
    for grad in grads:
        norm = torch.linalg.vector_norm(grad.detach(), dtype=torch.float32)
        squares.append((norm.full_tensor() if hasattr(norm, "full_tensor") else norm).double() ** 2)
    total = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    scale = min(1.0, max_norm / (total + 1e-6))
    if scale < 1.0:
        for grad in grads:
            grad.mul_(scale)
    return total
