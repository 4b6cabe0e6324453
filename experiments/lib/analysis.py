"""Small measures of loss curves, shared by several scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def stop_improving(losses: Sequence[float], tol: float) -> int:
    """The first iteration (1-based) after which the best loss improves by less than ``tol``.

    That is the smallest ``t`` with ``min(losses) >= (1 - tol) * min(losses[:t])``: from
    iteration ``t`` on, the run gains less than a fraction ``tol`` of its loss. Non-finite
    losses count as no improvement.
    """
    vals = np.asarray(losses, np.float64)
    vals = np.where(np.isfinite(vals), vals, np.inf)
    best = np.minimum.accumulate(vals)
    final = best[-1]
    return int(np.argmax(final >= (1 - tol) * best)) + 1


def curve(records: Sequence[dict[str, Any]], key: str, image: int = 0):
    """``(iterations, values)`` of one image's per-iteration records of a ``gatys`` log."""
    rs = [r for r in records if r["image"] == image]
    return [r["iteration"] for r in rs], [r[key] for r in rs]


def trend(values: Sequence[float], rel: float = 1e-3) -> str:
    """``"rises"``/``"falls"`` (monotone, last differs from first by more than ``rel``), else
    ``"flat"`` (within ``rel``) or ``"mixed"``."""
    v = [float(x) for x in values]
    if len(v) < 2 or abs(v[-1] - v[0]) <= rel * max(abs(v[0]), abs(v[-1]), 1e-30):
        return "flat"
    pairs = list(zip(v, v[1:], strict=False))
    if all(b >= a for a, b in pairs):
        return "rises"
    if all(b <= a for a, b in pairs):
        return "falls"
    return "mixed"
