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


def load_any(model: str | Path) -> tuple[str, Any, NetConfig | None, dict[str, Any]]:
    """Kind, parameters, architecture and metadata from a training workdir or a model file.

    See :func:`jaxstyle.models.load_model`; a workdir holds a ``johnson`` network.
    """
    from jaxstyle import models, train

    path = Path(model)
    if path.is_dir():
        return ("johnson", *train.restore_params(path))
    return models.load_model(path)


def _pad_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """``image`` on an ``h`` x ``w`` canvas: reflected up to a multiple of 4 (as
    :func:`~jaxstyle.nets.transformer_net.stylize` does for an image alone), then edge rows
    (whose values the network ignores: it refills them from the image's region)."""
    ih, iw = image.shape[:2]
    x = np.pad(image, ((0, -ih % 4), (0, -iw % 4), (0, 0)), mode="reflect")
    return np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1]), (0, 0)), mode="edge")


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

    Images are padded up to a multiple of ``bucket`` pixels and run in fixed-size batches, so a
    folder of photos compiles one program per bucket, not one per image size. The padding
    changes nothing: the network is told each image's region (``valid``), takes its
    instance-norm statistics there and refills the canvas beyond it before every convolution,
    so each output equals the network applied to that image alone (up to float rounding).

    Args:
        images: arrays, or :class:`~jaxstyle.images.ImageFile` s, which are decoded one batch
            at a time (their shapes come from the headers), so a folder never sits in memory.
        on_done: called as ``on_done(index, output)`` as each image finishes; outputs are then
            handed over and not kept (the returned list holds ``None``).

    Returns:
        Outputs in input order, each the size of its input (without ``on_done``).
    """
    bucket = max(4, int(bucket))
    net = TransformerNet(config, dtype)
    fn = jax.jit(lambda p, x, valid: jnp.clip(net.apply({"params": p}, x, valid), 0, 1))
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
            valid = [[-(-im.shape[0] // 4) * 4, -(-im.shape[1] // 4) * 4] for im in pixels]
            batch += [batch[-1]] * (n - len(batch))  # fixed batch size: one program per bucket
            valid += [valid[-1]] * (n - len(valid))
            x = jnp.asarray(np.stack(batch).astype(np.float32))
            y = np.asarray(fn(params, x, jnp.asarray(valid, jnp.int32)))
            for j, i in enumerate(chunk):
                ih, iw = pixels[j].shape[:2]
                if on_done is None:
                    out[i] = y[j, :ih, :iw]
                else:
                    on_done(i, y[j, :ih, :iw])
    return out


def load_style(path: str | Path, style_size: int | None) -> np.ndarray:
    """A style image as AdaIN encodes it: its long side resized to ``style_size`` (shrunk or
    enlarged; its own size when ``None``), float32 HWC RGB in [0, 1]."""
    from jaxstyle import images as imlib

    image = imlib.load_image(path, style_size)
    if style_size is not None and max(image.shape[:2]) != style_size:
        image = imlib.resize_long_side(image, style_size)
    return image


def apply_adain(
    params: Any,
    images: Sequence[np.ndarray | ImageFile],
    styles: Sequence[np.ndarray],
    *,
    alpha: float = 1.0,
    style_weights: Sequence[float] | None = None,
    on_done: Callable[[int, np.ndarray], None] | None = None,
) -> list[np.ndarray]:
    """Stylises HWC [0, 1] images with an AdaIN network (:mod:`jaxstyle.nets.adain`).

    Each style is encoded once. Each image runs alone (batch 1, no padding): AdaIN takes the
    whole image's feature statistics, which padding would change. One program is compiled per
    image size. Arguments and return value as :func:`apply_images`; ``styles`` are HWC arrays.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or bad ``style_weights``.
    """
    from jaxstyle.nets import adain

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mean, std = adain.weighted_stats(params, styles, style_weights)
    out: list[np.ndarray | None] = [None] * len(images)
    for i, img in enumerate(images):
        x = _pixels(img)[None].astype(np.float32)
        y = np.asarray(adain.stylize_with_stats(params, x, mean, std, jnp.float32(alpha)))[0]
        if on_done is None:
            out[i] = y
        else:
            on_done(i, y)
    return out
