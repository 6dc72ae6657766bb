"""The micro-batching queue."""
import threading

import pytest

from agents.batching import MicroBatcher


def run_concurrently(batcher, items, keys):
    barrier = threading.Barrier(len(items))
    results = [None] * len(items)

    def call(i):
        barrier.wait()
        try:
            results[i] = batcher.submit(items[i], key=keys[i])
        except Exception as error:  # collected for the assertions
            results[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(items))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return results


def test_concurrent_requests_are_batched_per_key():
    calls = []
    batcher = MicroBatcher(lambda key, items: calls.append((key, list(items))) or [f"{key}:{i}" for i in items],
                           max_wait_s=0.2)
    results = run_concurrently(batcher, [1, 2, 3, 4], ["a", "b", "a", "b"])
    assert results == ["a:1", "b:2", "a:3", "b:4"]
    assert sorted(len(items) for _, items in calls) == [2, 2] and batcher.batches == 2
    batcher.close()


def test_errors_reach_every_caller_and_the_worker_survives():
    def process(key, items):
        if key == "bad":
            raise RuntimeError("boom")
        return items

    batcher = MicroBatcher(process, max_wait_s=0.05)
    results = run_concurrently(batcher, [1, 2], ["bad", "bad"])
    assert all(isinstance(r, RuntimeError) for r in results)
    assert batcher.submit(5, key="good") == 5
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)
