"""Ordered, bounded parallel map: decode planes ahead of the writer.

The decoders (libpng via imagecodecs, libtiff-free tifffile paths) release
the GIL, so threads scale over the cores without copying pixels between
processes.  Only ``window`` results are in flight at once, which is what
keeps memory flat however large the experiment is.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: Upper bound on decoded bytes waiting for their consumer.
PREFETCH_BYTES = 128 * 1024 * 1024


def prefetch_window(workers: int, item_bytes: int) -> int:
    """How many results to compute ahead: enough to keep ``workers`` busy,
    few enough that at most :data:`PREFETCH_BYTES` wait in memory."""
    return min(workers * 8, max(workers + 1, PREFETCH_BYTES // max(item_bytes, 1)))


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, window: int, batch: int = 1
) -> Generator[R, None, None]:
    """Yield ``fn(item)`` for each item, in order, computing up to ``window`` ahead.

    With ``batch`` > 1 each task runs ``fn`` over that many consecutive items
    (the last task may hold fewer), so that the consumer is woken, and a
    future made, once per batch rather than once per item.

    An exception from ``fn`` is raised when its result is reached (after the
    results of the items before it); leaving the generator early (error,
    Ctrl-C, ``close()``) cancels the work not yet started and waits for the rest.
    """
    batch = max(1, batch)
    window = max(1, -(-window // batch))
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    pending: deque[Future[tuple[list[R], BaseException | None]]] = deque()

    def run(group: list[T]) -> tuple[list[R], BaseException | None]:
        done: list[R] = []
        try:
            for item in group:
                done.append(fn(item))
        except BaseException as exc:  # raised to the consumer after ``done``
            return done, exc
        return done, None

    it = iter(items)
    groups = iter(lambda: list(itertools.islice(it, batch)), [])
    try:
        for group in groups:
            pending.append(pool.submit(run, group))
            if len(pending) >= window:
                yield from _results(pending.popleft())
        while pending:
            yield from _results(pending.popleft())
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _results(fut: Future[tuple[list[R], BaseException | None]]) -> Iterator[R]:
    done, exc = fut.result()
    yield from done
    if exc is not None:
        raise exc


class InOrder:
    """Let parallel jobs 0, 1, 2, ... each pass one step in job order.

    ``wait(i)`` returns once every job before ``i`` has called ``done``;
    ``done(i)`` may be called more than once, and must be called (in a
    ``finally``) by every job that was started, or later jobs wait forever.
    Jobs started in index order (a ``ThreadPoolExecutor`` does) never wait
    for a job that was cancelled.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done: set[int] = set()
        self._next = 0

    def wait(self, i: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._next >= i)

    def done(self, i: int) -> None:
        with self._cond:
            self._done.add(i)
            while self._next in self._done:
                self._next += 1
            self._cond.notify_all()
