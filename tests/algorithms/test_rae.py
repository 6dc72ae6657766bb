"""RAE: per-role running baselines, their advantages, and their survival across save/resume."""
import pytest
import torch
from tensordict import TensorDict

import algorithms
from algorithms.config import TrainConfig
from algorithms.trainer import Trainer


def batch(roles, groups, rewards, branch=None):
    rows = len(roles)
    return TensorDict({
        ("tokens", "full"): torch.zeros(rows, 3, dtype=torch.long),
        ("masks", "all_assistant_mask"): torch.tensor([[False, True, True]] * rows),
        "role": torch.tensor(roles), "group": torch.tensor(groups),
        "branch": torch.tensor(branch or [False] * rows), "reward": torch.tensor(rewards),
    }, batch_size=[rows])


@pytest.fixture
def rae():
    return algorithms.make("rae", torch.nn.Linear(1, 1), baseline_decay=0.5)


def test_baselines_are_per_role_and_updated_once_per_group(rae):
    # Two episodes (groups 0 and 1); role 0 wins both, role 1 loses both. Rows repeat per move.
    data = rae.compute_advantages(batch([0, 0, 1, 0, 1], [0, 0, 0, 1, 1], [1.0, 1.0, -1.0, 1.0, -1.0]))
    assert rae.baselines == {0: pytest.approx(0.75), 1: pytest.approx(-0.75)}
    advantage = data.get("advantage")[:, 0, 0]
    assert advantage.tolist() == pytest.approx([0.25, 0.25, -0.25, 0.25, -0.25])
    assert data.get("row_weight").tolist() == pytest.approx([1.0] * 5)


def test_baselines_carry_over_between_batches(rae):
    rae.compute_advantages(batch([0, 1], [0, 0], [1.0, -1.0]))
    data = rae.compute_advantages(batch([0, 1], [0, 0], [0.0, 0.0]))
    assert rae.baselines == {0: pytest.approx(0.25), 1: pytest.approx(-0.25)}
    assert data.get("advantage")[:, 0, 0].tolist() == pytest.approx([-0.25, 0.25])


def test_algorithm_state_round_trips(rae):
    rae.compute_advantages(batch([0, 1], [0, 0], [1.0, 0.0]))
    other = algorithms.make("rae", torch.nn.Linear(1, 1))
    other.load_algorithm_state(rae.algorithm_state())
    assert other.baselines == rae.baselines


def test_other_algorithms_keep_no_extra_state():
    assert algorithms.make("lsp-zero", torch.nn.Linear(1, 1)).algorithm_state() == {}


def config(tiny_path, output, iterations):
    return TrainConfig(model=tiny_path, engine="hf", game="TicTacToe-v0", algorithm="rae", num_queries=2,
                       lora_rank=0, min_p=0.0, autocast=False, eval_suite=None,
                       group_size=2, batch_size=1, grad_accumulation=2, max_new_tokens=4, iterations=iterations,
                       lr=1e-3, output=str(output), save_every=1, algorithm_args={"baseline_decay": 0.5})


def test_rae_baselines_survive_save_and_resume(tiny_path, tmp_path):
    straight = Trainer(config(tiny_path, tmp_path / "a", 3), judges={})
    straight.train(progress=False)
    straight.close()

    first = Trainer(config(tiny_path, tmp_path / "b", 2), judges={})
    run_dir = first.train(progress=False)
    saved = dict(first.update.loss.baselines)
    first.close()
    assert saved and all(value != 0 for value in saved.values())
    resumed = Trainer.resume(run_dir, judges={}, iterations=3)
    assert resumed.update.loss.baselines == saved
    resumed.train(progress=False)
    resumed.close()
    assert resumed.update.loss.baselines == pytest.approx(straight.update.loss.baselines)
