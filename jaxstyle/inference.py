"""Applying a trained transformation network to images: batched, one program per size bucket."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.nets.transformer_net import NetConfig, TransformerNet


def load_any(model: str | Path) -> tuple[Any, NetConfig, dict[str, Any]]:
    """Parameters, architecture and metadata from a training workdir or a model file."""
    from jaxstyle import models, train

    path = Path(model)
    if path.is_dir():
        return train.restore_params(path)
    return models.load_model(path)


def _pad_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - image.shape[0], w - image.shape[1]
    # Reflection needs the pad to be smaller than the side; fall back to edge replication.
    mode = "reflect" if ph < image.shape[0] and pw < image.shape[1] else "edge"
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)


def apply_images(
    params: Any,
    config: NetConfig,
    images: list[np.ndarray],
    *,
    batch_size: int = 8,
    bucket: int = 64,
    dtype: Any = jnp.float32,
    on_done: Callable[[int, np.ndarray], None] | None = None,
) -> list[np.ndarray]:
    """Stylises HWC [0, 1] images of any sizes.

    Images are padded (reflection) up to a multiple of ``bucket`` pixels and run in fixed-size
    batches, so a folder of photos compiles one program per bucket, not one per image size.
    Padding slightly changes instance-norm statistics; ``bucket=4`` pads only what the
    network's two stride-2 stages require.

    Args:
        on_done: called as ``on_done(index, output)`` as each image finishes.

    Returns:
        Outputs in input order, each the size of its input.
    """
    bucket = max(4, int(bucket))
    fn = jax.jit(lambda p, x: jnp.clip(TransformerNet(config, dtype).apply({"params": p}, x), 0, 1))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        key = (math.ceil(h / bucket) * bucket, math.ceil(w / bucket) * bucket)
        groups.setdefault(key, []).append(i)
    out: list[np.ndarray | None] = [None] * len(images)
    for (h, w), idx in groups.items():
        n = min(batch_size, len(idx))
        for start in range(0, len(idx), n):
            chunk = idx[start : start + n]
            batch = [_pad_to(images[i], h, w) for i in chunk]
            batch += [batch[-1]] * (n - len(batch))  # fixed batch size: one program per bucket
            y = np.asarray(fn(params, jnp.asarray(np.stack(batch).astype(np.float32))))
            for j, i in enumerate(chunk):
                ih, iw = images[i].shape[:2]
                out[i] = y[j, :ih, :iw]
                if on_done is not None:
                    on_done(i, out[i])
    return out
