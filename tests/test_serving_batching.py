"""Dynamic batcher: joins same-shaped requests up to the batch limit, keeps shapes apart, bounded queue,
deadlines drop queued work unrun, close finishes what is queued."""

import threading
import time

import grpc
import numpy as np
import pytest

from serving.backends.base import ServingError
from serving.batching import BatchingOptions, DynamicBatcher


class Recorder:
    """A run function that records batch sizes, can be held at a gate, and doubles its input."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, inputs):
        self.started.set()
        self.gate.wait(10)
        x = inputs["x"]
        self.batches.append(len(x))
        return {"y": x * 2}


def test_same_shapes_join_into_one_batch_and_rows_come_back_in_order():
    run = Recorder()
    run.gate.clear()
    b = DynamicBatcher("m", run, BatchingOptions(max_batch_size=4, max_queue_delay_s=0.5, max_queue_size=16))
    try:
        first = b.submit({"x": np.full((1, 2), 100.0)})
        assert run.started.wait(5)  # the first request runs alone; the next four queue behind it
        futures = [b.submit({"x": np.full((1, 2), float(i))}) for i in range(4)]
        run.gate.set()
        assert first.result(5)["y"][0, 0] == 200.0
        assert [f.result(5)["y"][0, 0] for f in futures] == [0.0, 2.0, 4.0, 6.0]
        assert run.batches == [1, 4]
    finally:
        b.close()


def test_different_shapes_are_never_joined():
    run = Recorder()
    run.gate.clear()
    b = DynamicBatcher("m", run, BatchingOptions(max_batch_size=8, max_queue_delay_s=0.05))
    try:
        b.submit({"x": np.zeros((1, 2))})
        assert run.started.wait(5)
        a = [b.submit({"x": np.zeros((1, 2))}) for _ in range(2)]
        c = [b.submit({"x": np.zeros((1, 3))}) for _ in range(3)]
        run.gate.set()
        assert all(f.result(5)["y"].shape == (1, 2) for f in a) and all(f.result(5)["y"].shape == (1, 3) for f in c)
        assert sorted(run.batches) == [1, 2, 3]
    finally:
        b.close()


def test_full_queue_answers_resource_exhausted_at_once():
    run = Recorder()
    run.gate.clear()
    b = DynamicBatcher("m", run, BatchingOptions(max_batch_size=1, max_queue_size=2))
    try:
        b.submit({"x": np.zeros((1, 1))})
        assert run.started.wait(5)
        b.submit({"x": np.zeros((1, 1))})
        b.submit({"x": np.zeros((1, 1))})
        with pytest.raises(ServingError) as e:
            b.submit({"x": np.zeros((1, 1))})
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in e.value.message
    finally:
        run.gate.set()
        b.close()


def test_a_request_whose_deadline_passes_in_the_queue_is_not_run():
    run = Recorder()
    run.gate.clear()
    b = DynamicBatcher("m", run, BatchingOptions(max_batch_size=1))
    try:
        b.submit({"x": np.zeros((1, 1))})
        assert run.started.wait(5)
        late = b.submit({"x": np.zeros((1, 1))}, deadline=time.monotonic() + 0.05)
        time.sleep(0.1)
        run.gate.set()
        with pytest.raises(ServingError) as e:
            late.result(5)
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert run.batches == [1]  # only the first request ran
    finally:
        b.close()


def test_oversized_batches_and_mismatched_rows_are_invalid():
    b = DynamicBatcher("m", Recorder(), BatchingOptions(max_batch_size=2))
    try:
        for inputs in ({"x": np.zeros((3, 1))}, {"x": np.zeros((1, 1)), "z": np.zeros((2, 1))}):
            with pytest.raises(ServingError) as e:
                b.submit(inputs)
            assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        b.close()


def test_close_finishes_queued_work_then_refuses_new_requests():
    run = Recorder()
    run.gate.clear()
    b = DynamicBatcher("m", run, BatchingOptions(max_batch_size=1))
    futures = [b.submit({"x": np.ones((1, 1))}) for _ in range(3)]
    assert run.started.wait(5)
    closer = threading.Thread(target=b.close)
    closer.start()
    time.sleep(0.05)
    with pytest.raises(ServingError) as e:
        b.submit({"x": np.ones((1, 1))})
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    run.gate.set()
    closer.join(5)
    assert [f.result(1)["y"][0, 0] for f in futures] == [2.0, 2.0, 2.0]


def test_a_failing_run_fails_every_request_of_its_batch_and_the_batcher_goes_on():
    calls = []

    def run(inputs):
        calls.append(len(inputs["x"]))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return {"y": inputs["x"]}

    b = DynamicBatcher("m", run, BatchingOptions(max_batch_size=1))
    try:
        with pytest.raises(RuntimeError):
            b.submit({"x": np.zeros((1, 1))}).result(5)
        assert b.submit({"x": np.ones((1, 1))}).result(5)["y"][0, 0] == 1.0
    finally:
        b.close()
