"""recipes/paper.yaml with tiny models in the same shapes, and the trainer's paper settings: one optimizer
step over micro-batches, zero-sum, and lsp without a quality judge refused before any model loads."""
import copy
from pathlib import Path

import pytest
import torch

import algorithms
from agents.judges import FunctionJudge, RewardModelJudge, SelfJudge
from agents.models import tiny_model
from algorithms.config import TrainConfig
from algorithms.trainer import Trainer
from algorithms.update import optimizer_step

PAPER = Path(__file__).parents[2] / "recipes" / "paper.yaml"


@pytest.fixture(scope="module")
def reward_model_path(tmp_path_factory):
    """A tiny random sequence-classification reward model, for `judge: reward-model:PATH`."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-reward-model")
    _, tokenizer = tiny_model()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_the_preset_holds_every_value_the_paper_states():
    config = TrainConfig.from_yaml(PAPER)
    assert config.model == "meta-llama/Llama-3.2-3B-Instruct" and config.lora_rank == 0
    assert (config.num_queries, config.batch_size, config.grad_accumulation) == (8, 4, 2)
    assert config.beta == 0.05 and config.lr == 3e-6
    assert config.algorithm == "lsp" and config.game == "LanguageSelfPlay-v0"
    assert config.algorithm_args["aggregation"] == "sequence_sum" and config.algorithm_args["kl_estimator"] == "k3"
    assert config.judge == "reward-model:Skywork/Skywork-Reward-V2-Llama-3.2-3B"
    assert config.quality_judge == "paper-rubric" and config.judge_mode == "generate"
    assert config.min_p == 0.0 and config.top_p == 1.0 and config.device == "cuda"


def test_the_preset_trains_an_iteration_with_tiny_models(tiny_path, reward_model_path, tmp_path):
    config = TrainConfig.from_yaml(PAPER, model=tiny_path, judge=f"reward-model:{reward_model_path}", device="cpu",
                                   engine="hf", autocast=False, eval_suite=None, max_new_tokens=6,
                                   judge_max_new_tokens=6, output=str(tmp_path))
    trainer = Trainer(config)
    try:
        assert isinstance(trainer.rollout.parts.judges["judge"], RewardModelJudge)
        quality = trainer.rollout.parts.judges["quality_judge"]
        assert isinstance(quality, SelfJudge) and quality.mode == "generate" and "Sum:" in quality.prompt
        assert trainer.update.loss.config.aggregation == "sequence_sum" and trainer.update.optimizer.param_groups[0]["lr"] == 3e-6
        assert trainer.rollout.parts.reference_model is not trainer.update.model  # full fine-tuning: a frozen copy
        metrics, _ = trainer.iteration(1)
    finally:
        trainer.close()
    # A random model writes no "Score: N": every answer's verdict is counted as unparsed, none silently scored.
    assert metrics["quality_judge/parse_failures"] == 8 * 4
    assert {"penalty/challenger", "penalty/solver", "loss/kl", "loss/objective"} <= set(metrics)


@pytest.mark.parametrize("aggregation", ["sequence_sum", "prompt_mean", "token_mean"])
def test_batch_4_with_accumulation_2_is_the_update_of_batch_8(aggregation, eight_groups):
    """The trainer's own optimizer step (SGD, lr 1), beta 0.05: 4 groups x 2 micro-batches == 8 groups x 1."""
    model, batch = eight_groups

    def step(batch_size):
        trained = copy.deepcopy(model)
        loss = algorithms.make("lsp-zero", trained, beta=0.05, aggregation=aggregation)
        loss.compute_advantages(batch)
        losses = optimizer_step(trained, loss, torch.optim.SGD(trained.parameters(), lr=1.0), batch.clone(),
                                groups_per_micro_batch=batch_size, max_grad_norm=1e9)
        return torch.cat([p.detach().flatten() for p in trained.parameters()]), losses

    (split, split_losses), (whole, whole_losses) = step(4), step(8)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert not torch.equal(whole, before)
    torch.testing.assert_close(split - before, whole - before, atol=1e-7, rtol=1e-4)
    assert split_losses["loss/kl"] == pytest.approx(whole_losses["loss/kl"], rel=1e-5)


def test_lsp_zero_can_keep_the_game_zero_sum(tiny_path, tmp_path):
    config = TrainConfig(model=tiny_path, engine="hf", game="LanguageSelfPlay-v0", algorithm="lsp-zero",
                         algorithm_args={"zero_sum": True}, num_queries=2, max_new_tokens=4, lora_rank=0,
                         eval_suite=None, output=str(tmp_path), autocast=False)
    trainer = Trainer(config, judges={"judge": FunctionJudge(lambda query, answer: 0.0)})
    try:
        assert trainer.rollout.parts.make_env().zero_sum
    finally:
        trainer.close()


def test_zero_sum_is_an_lsp_zero_setting_only(tmp_path):
    with pytest.raises(TypeError, match="zero_sum"):
        Trainer(TrainConfig(model=str(tmp_path / "no-model"), algorithm="lsp", algorithm_args={"zero_sum": True}))


def test_lsp_without_a_quality_judge_fails_before_any_model_loads(tmp_path):
    with pytest.raises(ValueError, match="quality_judge is 'none'"):
        Trainer(TrainConfig(model=str(tmp_path / "no-model"), algorithm="lsp", quality_judge="none"))
