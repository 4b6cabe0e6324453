"""Applying a trained transformation network to images: batched, one program per size bucket."""

from __future__ import annotations

import functools
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

    See :func:`jaxstyle.models.load_model`; a workdir's kind is in its ``config.json``.
    """
    from jaxstyle import models

    path = Path(model)
    if not path.is_dir():
        return models.load_model(path)
    kind = models.workdir_kind(path)
    if kind == "adain":
        from jaxstyle import train_adain

        params, meta = train_adain.restore_params(path)
        return kind, params, None, meta
    from jaxstyle import train

    return (kind, *train.restore_params(path))


def _pad_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """``image`` on an ``h`` x ``w`` canvas: reflected up to a multiple of 4 (as
    :func:`~jaxstyle.nets.transformer_net.stylize` does for an image alone), then edge rows
    (whose values the network ignores: it refills them from the image's region)."""
    ih, iw = image.shape[:2]
    x = np.pad(image, ((0, -ih % 4), (0, -iw % 4), (0, 0)), mode="reflect")
    return np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1]), (0, 0)), mode="edge")


def _pixels(image: np.ndarray | ImageFile) -> np.ndarray:
    return image.load() if isinstance(image, ImageFile) else image


#: ``preserve_colors`` modes of the feed-forward models (``stylize`` has the same names).
PRESERVE_COLORS = ("none", "luminance", "histogram")


def _check_preserve(mode: str) -> None:
    if mode not in PRESERVE_COLORS:
        raise ValueError(f"preserve_colors must be one of {PRESERVE_COLORS}, got {mode!r}")


def keep_colors(output: np.ndarray, content: np.ndarray, mode: str) -> np.ndarray:
    """A feed-forward output with the content's colours (``mode`` as ``stylize``'s
    ``--preserve-colors``):

    * ``luminance``: the output's luminance with the content's chrominance (YIQ), as stylize;
    * ``histogram``: the output recoloured to the content's RGB mean and covariance. Stylize
      recolours the style image before optimising; a network's style is fixed in its weights,
      so its output is recoloured instead (AdaIN models recolour their style images, see
      :func:`apply_adain`);
    * ``none``: the output as it is.
    """
    from jaxstyle import images as imlib

    _check_preserve(mode)
    if mode == "luminance":
        return imlib.transfer_luminance(output, content)
    if mode == "histogram":
        return imlib.match_color(output, content)
    return output


@functools.cache
def _program(config: NetConfig, dtype: Any) -> Callable:
    """The jitted network of one architecture and dtype, made once per process.

    Every call of :func:`apply_images` with the same architecture then reuses the compiled
    programs (one per batch shape); a fresh ``jax.jit`` per call traced and compiled again each
    time (4.1 s a call for the tiny test network on 2 CPU cores, measured), which a video's
    batches or a server's requests would pay over and over.
    """
    net = TransformerNet(config, dtype)
    return jax.jit(lambda p, x, valid, s: jnp.clip(net.apply({"params": p}, x, valid, s), 0, 1))


def apply_images(
    params: Any,
    config: NetConfig,
    images: Sequence[np.ndarray | ImageFile],
    *,
    batch_size: int = 8,
    bucket: int = 64,
    dtype: Any = jnp.float32,
    style: np.ndarray | None = None,
    preserve_colors: str = "none",
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
        style: a multi-style network's style weights, the same for every image
            (:func:`~jaxstyle.nets.transformer_net.style_vector`); ``None`` for one style.
        preserve_colors: see :func:`keep_colors`.
        on_done: called as ``on_done(index, output)`` as each image finishes; outputs are then
            handed over and not kept (the returned list holds ``None``).

    Returns:
        Outputs in input order, each the size of its input (without ``on_done``).
    """
    _check_preserve(preserve_colors)
    bucket = max(4, int(bucket))
    fn = _program(config, dtype)
    style = None if style is None else jnp.asarray(style, jnp.float32)
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
            y = np.asarray(fn(params, x, jnp.asarray(valid, jnp.int32), style))
            for j, i in enumerate(chunk):
                ih, iw = pixels[j].shape[:2]
                image = keep_colors(y[j, :ih, :iw], pixels[j], preserve_colors)
                if on_done is None:
                    out[i] = image
                else:
                    on_done(i, image)
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
    preserve_colors: str = "none",
    on_done: Callable[[int, np.ndarray], None] | None = None,
) -> list[np.ndarray]:
    """Stylises HWC [0, 1] images with an AdaIN network (:mod:`jaxstyle.nets.adain`).

    Each style is encoded once; with ``preserve_colors="histogram"`` each style is instead
    recoloured to each content image's RGB mean and covariance and encoded per image (as the
    AdaIN reference's ``--preserve_color`` and stylize's histogram mode); ``"luminance"``
    post-processes as :func:`keep_colors`. Each image runs alone (batch 1, no padding): AdaIN
    takes the whole image's feature statistics, which padding would change. One program is
    compiled per image size. Arguments and return value as :func:`apply_images`; ``styles``
    are HWC arrays.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or bad ``style_weights``.
    """
    from jaxstyle import images as imlib
    from jaxstyle.nets import adain

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    _check_preserve(preserve_colors)
    recolour = preserve_colors == "histogram"
    if not recolour:
        mean, std = adain.weighted_stats(params, styles, style_weights)
    out: list[np.ndarray | None] = [None] * len(images)
    for i, img in enumerate(images):
        content = _pixels(img)
        if recolour:
            own = [imlib.match_color(s, content) for s in styles]
            mean, std = adain.weighted_stats(params, own, style_weights)
        x = content[None].astype(np.float32)
        y = np.asarray(adain.stylize_with_stats(params, x, mean, std, jnp.float32(alpha)))[0]
        if preserve_colors == "luminance":
            y = keep_colors(y, content, "luminance")
        if on_done is None:
            out[i] = y
        else:
            on_done(i, y)
    return out


def load_mask(mask: Any, name: str = "mask") -> np.ndarray:
    """A blending mask as float32 HW in [0, 1]: 1 where the stylised output shows, 0 where
    the other image (the content, or another style) does.

    Args:
        mask: an image file (grayscale: modes 1, L, I, I;16, F, or LA; an RGB/RGBA/palette
            file only if its pixels are gray), or an HW / HW1 array (``uint8`` 0-255, or
            float in [0, 1]).
        name: what the mask is called in messages (a file is named by its path).

    Raises:
        jaxstyle.images.ImageError: a file that cannot be read.
        ValueError: a colour image, or an array of another shape, type or range.
    """
    import os

    from PIL import Image

    from jaxstyle import images as imlib

    if isinstance(mask, str | os.PathLike):
        path = Path(mask)

        def read(img: Image.Image) -> np.ndarray:
            from PIL import ImageOps

            img = ImageOps.exif_transpose(img)
            if img.mode in ("1", "L", "LA", "La"):
                return np.asarray(img.convert("L"), np.float32) / 255.0
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                arr = np.asarray(img, dtype=np.float32)
                hi = 1.0 if img.mode == "F" else (65535.0 if arr.max(initial=0) > 255 else 255.0)
                return np.clip(arr / hi, 0.0, 1.0)
            rgb = np.asarray(img.convert("RGB"), np.int16)
            if np.abs(rgb - rgb[..., :1]).max(initial=0) > 2:
                return img.mode  # refused below, outside the decoder guard
            return rgb[..., 0].astype(np.float32) / 255.0

        try:
            out = imlib._guarded(path, read)
        except imlib.ImageError as e:
            raise imlib.ImageError(f"mask {e}") from None
        if isinstance(out, str):
            raise ValueError(
                f"mask {path}: a colour ({out}) image; a mask is grayscale (white = stylised, "
                f"black = the other image)"
            )
        return out
    a = np.asarray(mask)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected an H x W array, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
        raise ValueError(f"{name}: expected uint8, or finite float values in [0, 1]")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError(f"{name}: float values must be in [0, 1]")
    return a.astype(np.float32)


def blend(styled: np.ndarray, other: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask * styled + (1 - mask) * other``, the mask (HW) resized to the images (Lanczos,
    clipped to [0, 1])."""
    from jaxstyle import images as imlib

    h, w = styled.shape[:2]
    if mask.shape != (h, w):
        mask = imlib.resize(mask[..., None], h, w)[..., 0]
    m = mask[..., None]
    return (m * styled[..., :3] + (1.0 - m) * other[..., :3]).astype(np.float32)
