"""Data-parallel training over several processes with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Each trainer process joins one process group (gloo on CPU, NCCL on GPU), shards the
model with `shard`, receives the same batch (`broadcast`) and runs
`algorithms.update.optimizer_step` with its rank: it takes every N-th group,
and FSDP2 combines the gradients, so the step equals the one-process step on the
whole batch. Rank 0 gathers the full weights (`full_state_dict`) for the
engines and for checkpoints, in the same format as a one-process run.

Processes are started by `torchrun --nproc_per_node N` or by Ray actors that set
the same environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard


def init(backend: str | None = None) -> tuple[int, int]:
    """Join the process group the environment describes; returns (rank, world_size)."""
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return dist.get_rank(), dist.get_world_size()


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """Shard a causal LM over the process group, in place. Every decoder layer is one FSDP2 unit and the decoder
    is the root; the input and output embeddings (often one tied matrix) stay whole on every process, because our
    log-prob code calls the decoder and the output layer apart (`agents.logprobs.token_log_probs`), and a matrix
    cannot belong to two units. FSDP2 averages the gradients over the processes (`reduce_replicated_grads` does the
    same for the embeddings), so each process scales its loss by the number of processes."""
    replicated = {model.get_input_embeddings().weight, model.get_output_embeddings().weight}
    for module in model.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module)
    fully_shard(model.get_decoder(), ignored_params=replicated)
    model.replicated_parameters = [p for p in replicated if p.requires_grad]
    return model


def reduce_replicated_grads(model: torch.nn.Module) -> None:
    """Average the gradients of the parameters `shard` kept whole over the processes, as FSDP2 does the others."""
    for parameter in getattr(model, "replicated_parameters", ()):
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(dist.get_world_size())


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
