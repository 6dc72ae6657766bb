"""One optimizer step on a batch: gradient accumulation over micro-batches of groups, clipping, the step.

The same function runs in one process and in each of N trainer processes (`algorithms.distributed`, FSDP2):
process `rank` of `world_size` takes every `world_size`-th group. Each micro-batch's loss is weighted by its
share of the whole batch, so that together the processes' gradients are the one-process gradient.
"""
from __future__ import annotations

import torch
from tensordict import TensorDict

from algorithms.base import GROUP_KEY

LOSS_TERMS = ("objective", "kl", "kl_penalty", "sampler_gap", "clip_fraction")


def optimizer_step(model: torch.nn.Module, loss: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: TensorDict,
                   groups_per_micro_batch: int, max_grad_norm: float, autocast: bool = False, rank: int = 0,
                   world_size: int = 1) -> dict[str, float]:
    """Accumulate the gradient of `loss` over this process's groups of `batch`, clip, step; returns the losses
    (`loss/<term>`, over the whole batch) and the gradient norm."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    groups = batch.get(GROUP_KEY).unique()
    if len(groups) % world_size:
        raise ValueError(f"{len(groups)} groups cannot be split evenly over {world_size} trainer processes")
    device = next(model.parameters()).device.type
    totals = torch.zeros(len(LOSS_TERMS), dtype=torch.float64)
    for chunk in groups[rank::world_size].split(groups_per_micro_batch):
        rows = torch.isin(batch.get(GROUP_KEY), chunk)
        share = float(rows.sum()) / len(batch)
        with torch.autocast(device, torch.bfloat16, enabled=autocast):
            output = loss(batch[rows])
        penalty = getattr(output, "loss_kl_to_ref", None)
        total = output.loss_objective + (penalty if penalty is not None else 0.0)
        (total * share * world_size).backward()  # the processes' gradients are averaged: this makes it a sum
        terms = {"objective": output.loss_objective, "kl": getattr(output, "kl_to_ref", None), "kl_penalty": penalty,
                 "sampler_gap": output.kl_approx, "clip_fraction": output.clip_fraction}
        totals += torch.tensor([0.0 if terms[name] is None else float(torch.as_tensor(terms[name]).detach())
                                for name in LOSS_TERMS], dtype=torch.float64) * share
    if world_size > 1:
        from algorithms.distributed import reduce_replicated_grads

        torch.distributed.all_reduce(totals)
        reduce_replicated_grads(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    grad_norm = (clip_gradients(trainable, max_grad_norm) if world_size > 1
                 else float(torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)))
    optimizer.step()
    model.eval()
    return {f"loss/{term}": float(value) for term, value in zip(LOSS_TERMS, totals)} | {"loss/grad_norm": grad_norm}


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> float:
    """`torch.nn.utils.clip_grad_norm_` for a mix of plain and FSDP2-sharded (DTensor) gradients, which it does
    not take together: scale them so that their global L2 norm is at most `max_norm`; returns the norm before."""
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = torch.zeros((), dtype=torch.float64)
    for grad in grads:
        norm = torch.linalg.vector_norm(grad.detach(), dtype=torch.float32)
        squares += float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm) ** 2
    total = squares.sqrt()
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    if scale < 1.0:
        for grad in grads:
            grad.mul_(scale)
    return float(total)
