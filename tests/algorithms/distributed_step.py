"""Run by test_distributed.py under `torchrun --nproc_per_node N`: one optimizer step on the batch and model that
rank 0 reads from INPUTS, sharded with FSDP2 over N gloo processes; rank 0 also takes the one-process step, and
saves both results to OUTPUT."""
import copy
import sys

import torch

import algorithms
from agents.lora import add_lora
from algorithms import distributed
from algorithms.update import optimizer_step


def trained(model, batch, rank: int = 0, world_size: int = 1) -> dict:
    loss = algorithms.make("lsp-zero", model, beta=0.05, aggregation="prompt_mean")
    loss.compute_advantages(batch)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)  # sees any gradient scale
    return optimizer_step(model, loss, optimizer, batch, groups_per_micro_batch=2, max_grad_norm=1.0, rank=rank,
                          world_size=world_size)


def main(inputs: str, output: str, lora_rank: int) -> None:
    rank, world_size = distributed.init()
    model, batch = torch.load(inputs, weights_only=False) if rank == 0 else (None, None)
    model, batch = distributed.broadcast(model), distributed.broadcast(batch)  # the one batch every process trains on
    if lora_rank:
        torch.manual_seed(1)
        model = add_lora(model, lora_rank, 2 * lora_rank, ["q_proj", "v_proj", "down_proj"], "tiny")
    before = {name: value.detach().clone() for name, value in model.state_dict().items()}
    alone = copy.deepcopy(model) if rank == 0 else None
    sharded_losses = trained(distributed.shard(model), batch.clone(), rank, world_size)
    weights = distributed.full_state_dict(model)
    if rank == 0:
        alone_losses = trained(alone, batch.clone())
        torch.save({"before": before, "sharded": weights, "alone": alone.state_dict(),
                    "losses": (sharded_losses, alone_losses)}, output)
    torch.distributed.barrier()  # no process leaves while another still uses the group
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
