"""Data-parallel training over several processes with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Each trainer process joins one process group (gloo on CPU, NCCL on GPU), shards the
model with `shard`, receives the same batch (`broadcast`) and runs
`algorithms.update.optimizer_step` with its rank: it takes every N-th group,
and FSDP2 combines the gradients, so the step equals the one-process step on the
whole batch. Rank 0 gathers the full weights (`full_state_dict`) for the
engines and for checkpoints, in the same format as a one-process run.

Processes are started by `torchrun --nproc_per_node N` (`init`), or as Ray actors
(`join_world`): then the world is the N trainer processes (ranks 0..N-1) and the
rollout workers after them, with two groups in it: the trainer group (FSDP2, the
step's all-reduces) and the weight group (trainer rank 0 and every rollout worker),
over which `send_weights` / `receive_weights` broadcast the trained parameters
(with LoRA the adapter alone) in one flat tensor. gloo carries CPU tensors and NCCL
CUDA ones, with the same code.
"""
from __future__ import annotations

import os
import zlib
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard


def backend() -> str:
    """gloo for CPU tensors, and NCCL for CUDA ones where there is a GPU."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def local_device() -> torch.device:
    """This process's device: its GPU (`LOCAL_RANK` among the node's visible ones), made current; else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cuda", torch.cuda.current_device())


def init() -> tuple[int, int]:
    """Join the process group the environment describes (torchrun's); returns (rank, world_size)."""
    if not dist.is_initialized():
        local_device()
        dist.init_process_group(backend())
    return dist.get_rank(), dist.get_world_size()


def join_world(address: str, port: int, rank: int, world_size: int, trainer_processes: int,
               timeout_s: float) -> tuple[Any, Any]:
    """Join the world of a Ray run as `rank` (trainer processes first, then rollout workers); returns (the
    trainer group, the weight group). Every process calls it; a collective that waits longer than `timeout_s`
    raises instead of hanging."""
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    local_device()
    timeout = timedelta(seconds=timeout_s)
    dist.init_process_group(backend(), rank=rank, world_size=world_size, timeout=timeout)
    trainers = dist.new_group(list(range(trainer_processes)), timeout=timeout)  # every rank makes both groups
    weights = dist.new_group([0, *range(trainer_processes, world_size)], timeout=timeout)
    return trainers, weights


def trained_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters the optimizer trains (with LoRA the adapter), in a fixed order."""
    return [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]


def _layout(named: list[tuple[str, Any]]) -> int:
    """A checksum of the names and shapes, so that both sides of a broadcast know they mean the same tensors."""
    text = ";".join(f"{name}:{tuple(value.shape)}" for name, value in named)
    return zlib.crc32(text.encode())


def send_weights(model: torch.nn.Module, group, rank: int) -> int:
    """Broadcast the trained parameters from trainer rank 0 over the weight `group`: every trainer process calls
    it (sharded parameters are gathered first); returns the bytes sent (0 on other ranks)."""
    named = [(name, p.full_tensor() if hasattr(p, "full_tensor") else p.detach()) for name, p in
             trained_parameters(model)]
    if rank:
        return 0
    flat = torch.cat([value.reshape(-1).float() for _, value in named]).to(_wire_device())
    dist.broadcast(torch.tensor([flat.numel(), _layout(named)], device=flat.device), 0, group=group)
    dist.broadcast(flat, 0, group=group)
    return flat.numel() * flat.element_size()


def receive_weights(model: torch.nn.Module, group) -> int:
    """Receive what `send_weights` broadcast into this process's copy of the trained parameters; returns the
    bytes received."""
    named = trained_parameters(model)
    device = _wire_device()
    header = torch.zeros(2, dtype=torch.int64, device=device)
    dist.broadcast(header, 0, group=group)
    expected = [sum(p.numel() for _, p in named), _layout(named)]
    if header.tolist() != expected:
        raise RuntimeError(f"the trainer's weights do not fit this rollout worker's model: {header.tolist()[0]} "
                           f"values, expected {expected[0]} (or other names and shapes)")
    flat = torch.empty(expected[0], dtype=torch.float32, device=device)
    dist.broadcast(flat, 0, group=group)
    with torch.no_grad():
        for (_, parameter), value in zip(named, flat.split([p.numel() for _, p in named])):
            parameter.copy_(value.view_as(parameter))
    return flat.numel() * flat.element_size()


def _wire_device() -> torch.device:
    """Where broadcast tensors live: the GPU for NCCL, else the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def shard(model: torch.nn.Module, group=None) -> torch.nn.Module:
    """Shard a causal LM over the process group, in place. Every decoder layer is one FSDP2 unit and the decoder
    is the root; the input and output embeddings (often one tied matrix) stay whole on every process, because our
    log-prob code calls the decoder and the output layer apart (`agents.logprobs.token_log_probs`), and a matrix
    cannot belong to two units. FSDP2 averages the gradients over the processes (`reduce_replicated_grads` does the
    same for the embeddings), so each process scales its loss by the number of processes."""
    from torch.distributed.device_mesh import DeviceMesh

    mesh = None if group is None else DeviceMesh.from_group(group, _wire_device().type)
    replicated = {model.get_input_embeddings().weight, model.get_output_embeddings().weight}
    for module in model.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module, mesh=mesh)
    fully_shard(model.get_decoder(), mesh=mesh, ignored_params=replicated)
    model.replicated_parameters = [p for p in replicated if p.requires_grad]
    return model


def reduce_replicated_grads(model: torch.nn.Module, group=None) -> None:
    """Average the gradients of the parameters `shard` kept whole over the processes of `group` (default: all),
    as FSDP2 does the others."""
    for parameter in getattr(model, "replicated_parameters", ()):
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, group=group)
            parameter.grad.div_(dist.get_world_size(group))


def broadcast(value: Any, source: int = 0) -> Any:
    """`value` as process `source` has it (a batch, a config), on every process."""
    holder = [value if dist.get_rank() == source else None]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights, on CPU, as a plain state dict: every process must call it, rank 0 gets them (the
    others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                broadcast_from_rank0=False))
