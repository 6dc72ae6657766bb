"""`TrainConfig`: settings that must agree are derived, and what cannot work is refused."""
from pathlib import Path

import pytest

from algorithms.config import TrainConfig


@pytest.mark.parametrize("settings, micro_batches", [
    ({}, (4, 2)),  # the paper's batch 4 x accumulation 2 for N = 8
    ({"num_queries": 2}, (2, 1)),
    ({"num_queries": 6}, (3, 2)),
    ({"num_queries": 5}, (1, 5)),
    ({"num_queries": 8, "grad_accumulation": 4}, (2, 4)),
    ({"num_queries": 8, "batch_size": 8}, (8, 1)),
])
def test_micro_batches_follow_num_queries(settings, micro_batches):
    config = TrainConfig(**settings)
    assert config.micro_batches() == micro_batches


def test_derived_micro_batches_follow_a_later_num_queries():
    from dataclasses import replace

    assert replace(TrainConfig(), num_queries=2).micro_batches() == (2, 1)


def test_micro_batches_that_do_not_make_one_step_are_refused():
    with pytest.raises(ValueError, match=r"batch_size \* grad_accumulation \(4\) must equal num_queries \(5\)"):
        TrainConfig(num_queries=5, batch_size=2)


@pytest.mark.parametrize("settings, dtype", [
    ({"autocast": True}, "bfloat16"),  # sampling in bfloat16 under autocast
    ({"autocast": False}, "float32"),
    ({"autocast": False, "dtype": "bfloat16"}, "bfloat16"),
    ({"engine_dtype": "float32"}, "float32"),
])
def test_engine_dtype_follows_autocast_unless_given(settings, dtype):
    assert TrainConfig(**settings).engine_dtype_name() == dtype


def test_autocast_defaults_to_on_where_bf16_is_fast():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("needs /proc/cpuinfo to know the CPU's flags independently of torch")
    on_this_cpu = TrainConfig()
    assert on_this_cpu.autocast is (" amx_bf16" in cpuinfo.read_text())
    assert on_this_cpu.engine_dtype_name() == ("bfloat16" if on_this_cpu.autocast else "float32")
    assert TrainConfig(device="cuda").autocast is True
    assert TrainConfig(autocast=False, device="cuda").autocast is False


@pytest.mark.parametrize("settings, message", [
    ({"engine_dtype": "float16"}, "engine_dtype must be float32 or bfloat16"),
    ({"judge_engine": "openai"}, "judge_engine must be hf or vllm"),
    ({"judge_engine": None}, "judge_engine must be hf or vllm"),
])
def test_engine_settings_that_cannot_work_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_cluster_settings_round_trip_through_yaml(tmp_path):
    from algorithms.config import ClusterConfig

    config = TrainConfig(cluster=ClusterConfig(address="auto", rollout_workers=2, trainer_processes=4))
    config.to_yaml(tmp_path / "run.yaml")
    assert TrainConfig.from_yaml(tmp_path / "run.yaml") == config
    assert TrainConfig().cluster.address is None  # one process unless asked


@pytest.mark.parametrize("cluster, message", [
    ({"address": "local", "rollout_workers": 3}, r"num_queries \(8\) must be a multiple of cluster.rollout_workers"),
    ({"address": "local", "trainer_processes": 3}, r"multiple of cluster.trainer_processes \(3\)"),
    ({"rollout_workers": 0}, "at least 1"),
])
def test_cluster_sizes_that_cannot_share_an_iteration_are_refused(cluster, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(cluster=cluster)


@pytest.mark.parametrize("given, expected", [
    (dict(), dict(beta=0.05, challenger_weight=1.0)),
    (dict(algorithm_args={"beta": 0.1}), dict(beta=0.1, challenger_weight=1.0)),
    (dict(beta=0.1, algorithm_args={"beta": 0.1}), dict(beta=0.1, challenger_weight=1.0)),
    (dict(challenger_weight=0.0), dict(beta=0.05, challenger_weight=0.0)),
    (dict(algorithm="grpo"), dict(beta=0.05, challenger_weight=0.0)),  # grpo's own default stays
    (dict(algorithm="grpo", challenger_weight=0.5), dict(beta=0.05, challenger_weight=0.5)),
])
def test_each_algorithm_setting_has_one_home_and_the_top_level_flags_are_aliases(given, expected):
    from algorithms.config import check_settings

    settings = check_settings(TrainConfig(**given))
    assert {name: getattr(settings, name) for name in expected} == expected


def test_an_alias_that_disagrees_with_algorithm_args_is_refused():
    from algorithms.config import check_settings

    with pytest.raises(ValueError, match="beta is given twice"):
        check_settings(TrainConfig(beta=0.2, algorithm_args={"beta": 0.1}))


def test_the_resolved_config_fills_every_default_the_run_decides():
    from algorithms.assembly import resolved_config

    lora = resolved_config(TrainConfig(lora_rank=16, num_queries=8))
    assert (lora.lr, lora.batch_size, lora.grad_accumulation, lora.autocast is not None) == (1e-4, 4, 2, True)
    assert lora.beta == lora.algorithm_args["beta"] == 0.05 and lora.algorithm_args["kl_estimator"] == "k3"
    assert resolved_config(TrainConfig(lora_rank=0, algorithm="grpo")).lr == 1e-6
    assert resolved_config(TrainConfig(lora_rank=0, algorithm="lsp")).lr == 3e-6
