"""recipes/paper.yaml with tiny models in the same shapes, and the trainer's paper settings: one optimizer
step over micro-batches, zero-sum, and lsp without a quality judge refused before any model loads."""
import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import algorithms
from agents.judges import FunctionJudge, RewardModelJudge, SelfJudge
from agents.logprobs import token_log_probs
from agents.models import tiny_model
from agents.policy import Completion
from algorithms.base import ATTENTION_MASK, REF_LOG_PROBS, RESPONSE_MASK, TOKENS
from algorithms.batch import make_batch, rollout_rows
from algorithms.collector import Episode, Rollout, Turn
from algorithms.config import TrainConfig
from algorithms.trainer import Trainer

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
        assert isinstance(trainer.judges["judge"], RewardModelJudge)
        quality = trainer.judges["quality_judge"]
        assert isinstance(quality, SelfJudge) and quality.mode == "generate" and "Sum:" in quality.prompt
        assert trainer.loss.config.aggregation == "sequence_sum" and trainer.optimizer.param_groups[0]["lr"] == 3e-6
        assert trainer.reference_model is not trainer.model  # full fine-tuning: a frozen copy
        metrics, _ = trainer.iteration(1)
    finally:
        trainer.close()
    # A random model writes no "Score: N": every answer's verdict is counted as unparsed, none silently scored.
    assert metrics["quality_judge/parse_failures"] == 8 * 4
    assert {"penalty/challenger", "penalty/solver", "loss/kl", "loss/objective"} <= set(metrics)


def rollout(groups: int) -> Rollout:
    """`groups` queries x 3 answers of unequal lengths, with varied rewards."""
    episodes = []
    for i in range(groups):
        query = Turn("challenger", "p", "q", Completion("q", [1, 2, 3], [10 + i] * (2 + i % 3), [-1.0] * (2 + i % 3)),
                     branch=False)
        for j in range(3):
            length = 1 + (i + j) % 4
            answer = Turn("solver", "q", "a", Completion("a", [1, 2, 3], [20 + j] * length, [-1.0] * length), True)
            reward = float((i * 7 + j * 3) % 5) / 4
            episodes.append(Episode(i, [query, answer], {"challenger": -reward, "solver": reward}, branched=True))
    return Rollout(episodes, {})


@pytest.mark.parametrize("aggregation", ["sequence_sum", "prompt_mean", "token_mean"])
def test_batch_4_with_accumulation_2_is_the_update_of_batch_8(aggregation):
    """The trainer's own optimizer step (SGD, lr 1), beta 0.05: 4 groups x 2 micro-batches == 8 groups x 1."""
    model, tokenizer = tiny_model(seed=0)
    batch = make_batch(rollout_rows(rollout(8)), ["challenger", "solver"], tokenizer.pad_token_id)
    with torch.no_grad():
        batch.set(REF_LOG_PROBS, token_log_probs(tiny_model(seed=1)[0], batch.get(TOKENS), batch.get(ATTENTION_MASK),
                                                 batch.get(RESPONSE_MASK)))

    def step(batch_size):
        trainer = Trainer.__new__(Trainer)
        trainer.model = copy.deepcopy(model)
        trainer.config = SimpleNamespace(micro_batches=lambda: (batch_size, None), max_grad_norm=1e9, autocast=False)
        trainer.loss = algorithms.make("lsp-zero", trainer.model, beta=0.05, aggregation=aggregation)
        trainer.loss.compute_advantages(batch)
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=1.0)
        losses = trainer._optimizer_step(batch.clone())
        return torch.cat([p.detach().flatten() for p in trainer.model.parameters()]), losses

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
        assert trainer._make_env().zero_sum
    finally:
        trainer.close()


def test_zero_sum_is_an_lsp_zero_setting_only(tmp_path):
    with pytest.raises(TypeError, match="zero_sum"):
        Trainer(TrainConfig(model=str(tmp_path / "no-model"), algorithm="lsp", algorithm_args={"zero_sum": True}))


def test_lsp_without_a_quality_judge_fails_before_any_model_loads(tmp_path):
    with pytest.raises(ValueError, match="quality_judge is 'none'"):
        Trainer(TrainConfig(model=str(tmp_path / "no-model"), algorithm="lsp", quality_judge="none"))
