"""Applying a trained transformation network to images: batched, one program per size bucket."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.images import ImageFile
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


def _pixels(image: np.ndarray | ImageFile) -> np.ndarray:
    return image.load() if isinstance(image, ImageFile) else image


def apply_images(
    params: Any,
    config: NetConfig,
    images: Sequence[np.ndarray | ImageFile],
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
        images: arrays, or :class:`~jaxstyle.images.ImageFile` s, which are decoded one batch
            at a time (their shapes come from the headers), so a folder never sits in memory.
        on_done: called as ``on_done(index, output)`` as each image finishes; outputs are then
            handed over and not kept (the returned list holds ``None``).

    Returns:
        Outputs in input order, each the size of its input (without ``on_done``).
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
            pixels = [_pixels(images[i]) for i in chunk]
            batch = [_pad_to(im, h, w) for im in pixels]
            batch += [batch[-1]] * (n - len(batch))  # fixed batch size: one program per bucket
            y = np.asarray(fn(params, jnp.asarray(np.stack(batch).astype(np.float32))))
            for j, i in enumerate(chunk):
                ih, iw = pixels[j].shape[:2]
                if on_done is None:
                    out[i] = y[j, :ih, :iw]
                else:
                    on_done(i, y[j, :ih, :iw])
    return out
