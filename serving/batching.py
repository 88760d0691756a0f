"""Server-side dynamic batching for the embedded backend: requests of equal tensor shapes are joined into
one forward pass, up to a batch size or a queue delay, behind a bounded queue.

A full queue answers RESOURCE_EXHAUSTED at once instead of growing; a request whose deadline passes while
it waits is answered DEADLINE_EXCEEDED and never run; `close` stops accepting and lets queued work finish.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import grpc
import numpy as np

from serving.backends.base import ServingError

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
ObserveFn = Callable[[int, list[float]], None]  # (batch size, queue seconds of each request)


@dataclass(frozen=True)
class BatchingOptions:
    """Knobs of one model's batcher (defaults follow the exported config.pbtxt)."""

    max_batch_size: int = 8
    max_queue_delay_s: float = 0.002
    max_queue_size: int = 64
    workers: int = 1  # model instances running batches concurrently

    def validate(self) -> None:
        """ValueError naming the first bad knob."""
        if self.max_batch_size < 1 or self.max_queue_size < 1 or self.workers < 1:
            raise ValueError("max batch size, max queue size and workers must be >= 1")
        if self.max_queue_delay_s < 0:
            raise ValueError("max queue delay must be >= 0")


@dataclass
class _Request:
    inputs: dict[str, np.ndarray]
    rows: int
    key: tuple
    deadline: float | None
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Joins concurrent requests for one model into batches and runs them on worker threads."""

    def __init__(
        self, name: str, run: RunFn, options: BatchingOptions = BatchingOptions(), observe: ObserveFn | None = None
    ) -> None:
        options.validate()
        self.name, self._run, self.options, self._observe = name, run, options, observe
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"batcher-{name}-{i}", daemon=True) for i in range(options.workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, inputs: dict[str, np.ndarray], deadline: float | None = None) -> Future:
        """Queue batched inputs (same leading dimension); the future holds the outputs of these rows."""
        rows = {len(a) for a in inputs.values()}
        if len(rows) != 1:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "inputs disagree on the batch size")
        n = rows.pop()
        if not 1 <= n <= self.options.max_batch_size:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch size {n} is outside 1..{self.options.max_batch_size} for model {self.name!r}",
            )
        key = tuple(sorted((k, a.dtype.str, a.shape[1:]) for k, a in inputs.items()))
        request = _Request(inputs, n, key, deadline)
        with self._cond:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
            if len(self._queue) >= self.options.max_queue_size:
                raise ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"model {self.name!r}: queue is full ({self.options.max_queue_size} requests waiting)",
                )
            self._queue.append(request)
            self._cond.notify()
        return request.future

    def queued(self) -> int:
        """Requests waiting now."""
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting requests, finish the queued ones, join the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    def _take_batch(self) -> list[_Request] | None:
        """Block for the next batch: the oldest request plus same-shaped ones, within the queue delay."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            until = time.monotonic() + self.options.max_queue_delay_s
            while rows < self.options.max_batch_size:
                for request in list(self._queue):
                    if request.key == batch[0].key and rows + request.rows <= self.options.max_batch_size:
                        self._queue.remove(request)
                        batch.append(request)
                        rows += request.rows
                left = until - time.monotonic()
                if rows >= self.options.max_batch_size or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            return batch

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            now = time.monotonic()
            live = []
            for request in batch:
                if not request.future.set_running_or_notify_cancel():
                    continue  # the caller gave up
                if request.deadline is not None and now >= request.deadline:
                    request.future.set_exception(
                        ServingError(
                            grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while the request was queued; not run"
                        )
                    )
                    continue
                live.append(request)
            if not live:
                continue
            if self._observe is not None:
                self._observe(sum(r.rows for r in live), [now - r.enqueued for r in live])
            try:
                joined = {
                    k: np.concatenate([r.inputs[k] for r in live]) if len(live) > 1 else live[0].inputs[k]
                    for k in live[0].inputs
                }
                outputs = self._run(joined)
            except Exception as e:  # answered to every request of the batch
                for request in live:
                    request.future.set_exception(e)
                continue
            start = 0
            for request in live:
                request.future.set_result({k: v[start : start + request.rows] for k, v in outputs.items()})
                start += request.rows
