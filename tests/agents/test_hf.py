"""The "hf" engine, on a tiny random Llama in float32."""
import threading

import pytest
import torch

from agents import hf
from agents.hf import HFPolicy
from agents.logprobs import pad_rows, token_log_probs
from agents.models import tiny_model
from agents.policy import SamplingParams

GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)
SAMPLE = SamplingParams(max_new_tokens=8, temperature=1.0)
CHATS = [[{"role": "user", "content": f"Question {i}: " + "why? " * i}] for i in range(8)]


@pytest.fixture
def policy():
    policy = HFPolicy(*tiny_model(seed=0), max_wait_s=0.0)
    yield policy
    policy.close()


def run_together(fn, count):
    """Call `fn(i)` from `count` threads released at once; returns results or exceptions."""
    barrier, results = threading.Barrier(count), [None] * count

    def call(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_generate_n_completions(policy):
    completions = policy.generate(CHATS[1], n=3, params=SamplingParams(max_new_tokens=12, temperature=1.0))
    assert len(completions) == 3
    for completion in completions:
        assert completion.prompt_ids == policy.chat_prompt_ids(CHATS[1])
        assert 0 < len(completion.token_ids) == len(completion.logprobs) <= 12
        assert all(lp <= 0 for lp in completion.logprobs)
        assert completion.text == policy.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
    assert policy.stats == {"generate_batches": 1, "tokens_generated": sum(len(c.token_ids) for c in completions)}
    assert policy.generate(CHATS[1], n=0) == []


def test_stops_at_first_eos_and_keeps_it():
    model, tokenizer = tiny_model(seed=0)
    with_default_eos = HFPolicy(model, tokenizer, max_wait_s=0.0)
    [full] = with_default_eos.generate(CHATS[0], 1, GREEDY)
    with_default_eos.close()
    assert full.finish_reason == "length" and len(full.token_ids) == GREEDY.max_new_tokens
    stop_token = full.token_ids[3]
    cut = full.token_ids.index(stop_token) + 1
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop_token]
    policy = HFPolicy(model, tokenizer, max_wait_s=0.0)
    [stopped] = policy.generate(CHATS[0], 1, GREEDY)
    policy.close()
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[:cut]
    assert stopped.logprobs == pytest.approx(full.logprobs[:cut], abs=1e-5)


def test_score_matches_generation_logprobs(monkeypatch):
    monkeypatch.setattr(hf, "SCORE_BATCH_ROWS", 3)  # exercise the row chunks
    policy = HFPolicy(*tiny_model(seed=1), max_batch_size=2, max_wait_s=0.0)
    tempered = SamplingParams(max_new_tokens=10, temperature=0.7, top_p=0.9)
    completions = policy.generate(CHATS[2], n=4, params=tempered) + policy.generate(CHATS[5], 1, GREEDY)
    scores = policy.score([c.prompt_ids for c in completions], [c.token_ids for c in completions])
    assert len(scores) == len(completions)
    for completion, score in zip(completions[-1:], scores[-1:]):
        assert score == pytest.approx(completion.logprobs, abs=1e-4)  # greedy: the raw model's log-probs
    for completion, score in zip(completions[:-1], scores[:-1]):
        assert completion.logprobs != pytest.approx(score, abs=1e-4)  # sampled: the tempered, truncated ones
    assert policy.score([[1, 2]], [[]]) == [[]]
    policy.close()


def test_sampled_log_probs_are_those_of_the_sampling_distribution_without_keeping_every_step():
    model, tokenizer = tiny_model(seed=2)
    policy = HFPolicy(model, tokenizer, max_batch_size=3, max_wait_s=0.0)
    tempered = SamplingParams(max_new_tokens=12, temperature=0.8, min_p=0.05)
    completions = policy.generate(CHATS[3], n=3, params=tempered)
    policy.close()
    tokens, attention, response = pad_rows([c.prompt_ids for c in completions], [c.token_ids for c in completions])
    with torch.no_grad():
        expected = token_log_probs(model, tokens, attention, response, tempered)
    for row, completion in enumerate(completions):
        start = len(completion.prompt_ids)
        assert completion.logprobs == pytest.approx(expected[row, start:start + len(completion.token_ids)].tolist(),
                                                    abs=1e-4)
    assert not policy._generation_config(tempered).output_logits  # one step's logits kept, not all of them


def test_concurrent_requests_share_one_batch():
    model, tokenizer = tiny_model(seed=0)
    batched = HFPolicy(model, tokenizer, max_batch_size=len(CHATS), max_wait_s=5.0)
    alone = HFPolicy(model, tokenizer, max_wait_s=0.0)
    results = run_together(lambda i: batched.generate(CHATS[i], n=1 + i % 3, params=GREEDY), len(CHATS))
    assert batched.stats["generate_batches"] == 1
    for i, completions in enumerate(results):
        assert len(completions) == 1 + i % 3
        [single] = alone.generate(CHATS[i], 1, GREEDY)
        for completion in completions:
            assert completion.prompt_ids == single.prompt_ids
            assert completion.token_ids == single.token_ids
            assert completion.logprobs == pytest.approx(single.logprobs, abs=1e-4)
    batched.close()
    alone.close()


def test_generate_and_score_never_overlap_on_the_model(policy):
    active, overlaps = [0], []
    decoder = policy.model.get_decoder()

    def enter(module, args):
        active[0] += 1
        overlaps.append(active[0] > 1)

    def leave(module, args, output):
        active[0] -= 1

    decoder.register_forward_pre_hook(enter)
    decoder.register_forward_hook(leave)
    prompt = policy.chat_prompt_ids(CHATS[4])
    calls = [lambda: policy.generate(CHATS[4], 2, SAMPLE), lambda: policy.score([prompt] * 4, [[5] * 30] * 4)]
    results = run_together(lambda i: calls[i % 2](), 6)
    assert not any(isinstance(result, Exception) for result in results)
    assert overlaps and not any(overlaps)


def test_sampling_ignores_checkpoint_generation_defaults(policy):
    [greedy] = policy.generate(CHATS[0], 1, GREEDY)
    defaults = policy.model.generation_config
    defaults.top_k, defaults.repetition_penalty = 1, 50.0
    samples = policy.generate(CHATS[0], n=16, params=SAMPLE)
    assert len({tuple(c.token_ids) for c in samples}) > 1  # top_k=1 would make them identical
    with torch.no_grad():
        logits = policy.model(torch.tensor([samples[0].prompt_ids])).logits[0, -1]
    top_50 = set(logits.topk(50).indices.tolist())  # transformers' global default is top_k=50
    assert any(c.token_ids[0] not in top_50 for c in samples)
    assert policy.generate(CHATS[0], 1, GREEDY)[0].token_ids == greedy.token_ids
    assert policy.model.generation_config is defaults


def test_seed_makes_sampling_repeatable(policy):
    policy.seed(123)
    first = policy.generate(CHATS[0], 3, SAMPLE)
    policy.seed(123)
    second = policy.generate(CHATS[0], 3, SAMPLE)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]


def test_load_state_dict_changes_outputs(policy):
    [before] = policy.generate(CHATS[3], 1, GREEDY)
    original = {name: tensor.clone() for name, tensor in policy.model.state_dict().items()}
    policy.load_state_dict(policy.model.state_dict())  # its own tensors: nothing changes
    assert policy.generate(CHATS[3], 1, GREEDY)[0].logprobs == before.logprobs
    policy.load_state_dict({name: t + 0.1 * torch.randn_like(t) for name, t in original.items()})
    [after] = policy.generate(CHATS[3], 1, GREEDY)
    assert after.token_ids != before.token_ids or after.logprobs != pytest.approx(before.logprobs, abs=1e-3)
    policy.load_state_dict(original)
    assert policy.generate(CHATS[3], 1, GREEDY)[0].logprobs == before.logprobs
    with pytest.raises(RuntimeError, match="Missing key"):
        policy.load_state_dict({"model.norm.weight": original["model.norm.weight"]})


def test_eval_mode_during_calls_and_training_mode_restored(policy):
    seen = []
    policy.model.get_decoder().register_forward_pre_hook(lambda module, args: seen.append(module.training))
    policy.model.train()
    policy.generate(CHATS[0], 1, GREEDY)
    policy.score([[1, 2, 3]], [[4, 5]])
    assert policy.model.training
    assert seen and not any(seen)
    policy.model.eval()
    policy.generate(CHATS[0], 1, GREEDY)
    assert not policy.model.training


def test_batch_errors_reach_every_caller(monkeypatch):
    model, tokenizer = tiny_model(seed=0)
    policy = HFPolicy(model, tokenizer, max_batch_size=3, max_wait_s=5.0)

    def broken(*args, **kwargs):
        raise ValueError("generation failed")

    monkeypatch.setattr(model, "generate", broken)
    model.train()
    results = run_together(lambda i: policy.generate(CHATS[i], 1, GREEDY), 3)
    assert all(isinstance(result, ValueError) and "generation failed" in str(result) for result in results)
    assert policy.stats["generate_batches"] == 1 and model.training
    monkeypatch.undo()
    results = run_together(lambda i: policy.generate(CHATS[i], 1, GREEDY), 3)
    assert all(len(result) == 1 for result in results)  # still serving
    policy.close()


def test_shared_prefix_length_leaves_each_prompt_a_token_of_its_own():
    assert hf.shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert hf.shared_prefix_length([[7, 8, 9], [7, 8, 9]]) == 2
    assert hf.shared_prefix_length([[1, 2], [3, 4]]) == 0


def test_next_token_log_probs_with_a_shared_prefix_equal_a_full_pass(policy, monkeypatch):
    """A judge's prompts share their instructions; computing those once must not change the scores."""
    instructions = list(range(100, 140))
    prompts = [instructions + [200 + i] * (3 + 5 * i) for i in range(4)]
    candidates = (5, 17, 300)
    shared = policy._next_token_batch(candidates, prompts)
    alone = [policy._next_token_batch(candidates, [prompt])[0] for prompt in prompts]  # no prefix to share
    monkeypatch.setattr(hf, "MIN_SHARED_PREFIX", 10**6)
    full = policy._next_token_batch(candidates, prompts)
    assert hf.shared_prefix_length(prompts) == 40
    assert torch.allclose(torch.tensor(shared), torch.tensor(full), atol=1e-5)
    assert torch.allclose(torch.tensor(shared), torch.tensor(alone), atol=1e-5)
