"""Wall time of a function, as every benchmark measures it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call.

    The warm-up keeps compilation and first-touch costs out of the timings; ``fn`` must block
    until its work is done (``block_until_ready`` for JAX).
    """
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
