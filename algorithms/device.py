"""Where tensors go, and what only a device knows: synchronising timers, peak device memory, the optimizer."""
from __future__ import annotations

import torch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA), so that a timer measures it; nothing on a CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def device_peak_gib(device: torch.device | str) -> float | None:
    """The device's peak allocated memory (GiB) since the last call, then reset; None on a CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def make_optimizer(parameters: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over `parameters`: the fused kernel (one pass over every tensor, several times faster than one
    tensor at a time) where every parameter is a plain floating-point tensor on a CPU or GPU, else torch's
    default implementation (FSDP2's sharded parameters are DTensors)."""
    from torch.distributed.tensor import DTensor

    fused = all(not isinstance(p, DTensor) and p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
                for p in parameters)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)
