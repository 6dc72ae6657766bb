"""A micro-batching queue: many threads submit single requests, one worker
thread runs them as batches. Engines without their own continuous batching
(HF transformers, reward models) use it so concurrent episodes share calls."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Hashable, Sequence

BatchFn = Callable[[Hashable, Sequence[Any]], Sequence[Any]]
_STOP = object()


class MicroBatcher:
    """Collect requests for up to `max_wait_s` (or `max_batch_size` items),
    group them by key, and call `process(key, items)` once per group.

    `batches` counts the calls to `process`; tests and benchmarks read it.
    """

    def __init__(self, process: BatchFn, max_batch_size: int = 64, max_wait_s: float = 0.01, name: str = "batcher"):
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.batches = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any, key: Hashable = None, timeout: float | None = None) -> Any:
        """Queue one request and block until its result (or exception) is ready."""
        if not self._thread.is_alive():
            raise RuntimeError("the batching worker has been closed")
        future: Future = Future()
        self._queue.put((key, item, future))
        return future.result(timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def _collect(self, first) -> list:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                request = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if request is _STOP:
                self._queue.put(_STOP)
                break
            batch.append(request)
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            groups: dict[Hashable, list] = {}
            for key, item, future in self._collect(first):
                groups.setdefault(key, []).append((item, future))
            for key, requests in groups.items():
                self._process_group(key, requests)

    def _process_group(self, key: Hashable, requests: list) -> None:
        self.batches += 1
        try:
            results = self.process(key, [item for item, _ in requests])
            if len(results) != len(requests):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(requests)} requests")
        except BaseException as error:  # hand the failure to every waiting caller
            for _, future in requests:
                future.set_exception(error)
            return
        for (_, future), result in zip(requests, results):
            future.set_result(result)
