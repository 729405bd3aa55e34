"""The parallel helpers: ordered, bounded decoding and one step in job order."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pyomero_upload.parallel import InOrder, ordered_map


def test_ordered_map_keeps_order_and_window():
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow_square(x: int) -> int:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(random.uniform(0, 0.004))
        with lock:
            in_flight -= 1
        return x * x

    assert list(ordered_map(slow_square, range(60), workers=4, window=5)) == [
        x * x for x in range(60)]
    assert 1 <= peak <= 5


def test_ordered_map_raises_at_the_failing_item():
    def fail_at_3(x: int) -> int:
        if x == 3:
            raise ValueError("plane 3 is broken")
        return x

    got = []
    with pytest.raises(ValueError, match="plane 3"):
        for v in ordered_map(fail_at_3, range(10), workers=2, window=3):
            got.append(v)
    assert got == [0, 1, 2]


@pytest.mark.parametrize("batch", [2, 4, 7])
def test_ordered_map_in_batches_keeps_order_window_and_the_failing_item(batch):
    lock = threading.Lock()
    calls: list[int] = []

    def slow_square(x: int) -> int:
        with lock:
            calls.append(x)
        time.sleep(random.uniform(0, 0.002))
        if x == 13:
            raise ValueError("plane 13 is broken")
        return x * x

    got = []
    with pytest.raises(ValueError, match="plane 13"):
        for v in ordered_map(slow_square, range(50), workers=3, window=8, batch=batch):
            got.append(v)
    # every result before the failing item, in order, even those in its own batch
    assert got == [x * x for x in range(13)]
    # no item after the failing one in its batch was run (a batch runs in order)
    first_of_batch = 13 - 13 % batch
    assert not [x for x in calls if 13 < x < first_of_batch + batch]
    # at most window items (rounded up to whole batches) were submitted ahead
    assert len(calls) <= first_of_batch + batch + -(-8 // batch) * batch
    assert list(ordered_map(lambda x: x + 1, range(23), workers=2, window=6, batch=batch)) \
        == list(range(1, 24))


def test_in_order_passes_the_step_in_job_order_whatever_the_timing():
    turns, order = InOrder(), []
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.01) for _ in range(12)]

    def job(i: int) -> None:
        try:
            time.sleep(delays[i])  # preparation takes a different time per job
            if i == 5:
                raise RuntimeError("job 5 fails before its step")
            turns.wait(i)
            order.append(i)
        finally:
            turns.done(i)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(job, i) for i in range(12)]
    errors = [i for i, f in enumerate(futures) if f.exception()]
    assert errors == [5]
    # a failed job does not hold the others up, and the rest keep their order
    assert order == [i for i in range(12) if i != 5]
