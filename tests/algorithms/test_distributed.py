"""FSDP2 over two gloo processes takes the same optimizer step as one process on the same batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from algorithms import distributed

WORKER = Path(__file__).with_name("distributed_step.py")
ROOT = Path(__file__).parents[2]


@pytest.mark.distributed
@pytest.mark.parametrize("lora_rank", [0, 4])
def test_two_sharded_processes_take_the_one_process_step(tmp_path, lora_rank, eight_groups):
    inputs, output = tmp_path / "inputs.pt", tmp_path / "weights.pt"
    torch.save(eight_groups, inputs)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(WORKER), str(inputs), str(output), str(lora_rank)],
                            capture_output=True, text=True, timeout=600, env=environment, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = torch.load(output, weights_only=True)
    before, sharded, alone = saved["before"], saved["sharded"], saved["alone"]
    changed = [name for name in alone if not torch.equal(alone[name], before[name])]
    assert changed and (not lora_rank or all("lora_" in name for name in changed))
    for name, value in alone.items():
        torch.testing.assert_close(sharded[name] - before[name], value - before[name], atol=1e-6, rtol=1e-4, msg=name)
    sharded_losses, alone_losses = saved["losses"]
    assert sharded_losses == pytest.approx(alone_losses, rel=1e-5, abs=1e-7)  # the gradient norm included


def test_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: chosen[-1])
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert distributed.local_device() == torch.device("cuda", 2) and chosen == [2]
    assert distributed.backend() == "cpu:gloo,cuda:nccl"  # CPU tensors over gloo, CUDA ones over NCCL
