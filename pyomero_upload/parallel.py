"""Ordered, bounded parallel map: decode planes ahead of the writer.

The decoders (libpng via imagecodecs, libtiff-free tifffile paths) release
the GIL, so threads scale over the cores without copying pixels between
processes.  Only ``window`` results are in flight at once, which is what
keeps memory flat however large the experiment is.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
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
    fn: Callable[[T], R], items: Iterable[T], workers: int, window: int
) -> Generator[R, None, None]:
    """Yield ``fn(item)`` for each item, in order, computing up to ``window`` ahead.

    An exception from ``fn`` is raised when its result is reached; leaving
    the generator early (error, Ctrl-C, ``close()``) cancels the work not
    yet started and waits for the rest.
    """
    window = max(1, window)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    pending: deque[Future[R]] = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
