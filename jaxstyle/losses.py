"""Perceptual losses of Gatys et al. (2015) and Johnson et al. (2016), as pure functions.

Features are NHWC arrays (any leading batch axes); every loss reduces over the spatial and
channel axes and keeps the leading axes, so callers decide how to combine images in a batch.
For features ``F`` of one image reshaped to ``(H*W, C)``:

* ``gram(F) = F^T F / (C*H*W)``
* ``content_loss = mean((F(x) - F(c))^2)``
* ``style_loss = mean((G(x) - G(s))^2)`` (mean over the C x C entries)
* ``tv_loss``: mean of squared differences between horizontally and vertically adjacent pixels

The Gram normalisation by ``C*H*W`` is the one of the report we reimplement (Li & Zhao); it makes
the style term independent of image size, so style weights carry over between sizes. Gatys et
al. normalise the summed squared error by ``4 N^2 M^2`` instead, which changes the weight scale
but not the minimiser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp


def gram(features: jax.Array) -> jax.Array:
    """Gram matrix ``F^T F / (C*H*W)`` of NHWC features.

    Args:
        features: ``(..., H, W, C)``.

    Returns:
        ``(..., C, C)``.
    """
    *lead, h, w, c = features.shape
    f = features.reshape(*lead, h * w, c)
    g = jnp.einsum("...pc,...pd->...cd", f, f, precision=jax.lax.Precision.HIGHEST)
    return g / (c * h * w)


def content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
    """``mean((F(x) - F(c))^2)`` over the last three (H, W, C) axes."""
    return jnp.mean((features - target) ** 2, axis=(-3, -2, -1))


def style_loss(gram_x: jax.Array, gram_target: jax.Array) -> jax.Array:
    """``mean((G(x) - G(s))^2)`` over the last two (C, C) axes."""
    return jnp.mean((gram_x - gram_target) ** 2, axis=(-2, -1))


def tv_loss(images: jax.Array) -> jax.Array:
    """Total variation: the mean of squared differences of all adjacent pixel pairs.

    ``(sum(dx^2) + sum(dy^2)) / (n_dx + n_dy)`` over ``(..., H, W, C)`` images in [0, 1], where
    ``dx``/``dy`` are horizontal/vertical neighbour differences and ``n_*`` their counts.
    """
    dx = images[..., :, 1:, :] - images[..., :, :-1, :]
    dy = images[..., 1:, :, :] - images[..., :-1, :, :]
    total = jnp.sum(dx**2, axis=(-3, -2, -1)) + jnp.sum(dy**2, axis=(-3, -2, -1))
    return total / _pairs(images.shape)


def _pairs(shape: Sequence[int]) -> int:
    h, w, c = shape[-3:]
    return (h * (w - 1) + (h - 1) * w) * c


def style_targets(style_features: Sequence[Mapping[str, jax.Array]]) -> dict[str, jax.Array]:
    """Stacks the Gram matrices of K style images: ``{layer: (K, C, C)}``."""
    layers = style_features[0].keys()
    return {name: jnp.stack([gram(f[name])[0] for f in style_features]) for name in layers}


def gatys_loss(
    features: Mapping[str, jax.Array],
    images: jax.Array,
    content_targets: Mapping[str, jax.Array],
    style_grams: Mapping[str, jax.Array],
    *,
    content_weight: float,
    style_weight: float,
    tv_weight: float,
    style_layer_weights: Mapping[str, float],
    style_blend_weights: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The Gatys objective for one image (no batch axis on the result).

    ``total = content_weight * content + style_weight * style + tv_weight * tv`` with
    ``content = sum_l content_loss`` over content layers and
    ``style = sum_k b_k sum_l w_l style_loss(G_l(x), G_l(s_k))``.

    Args:
        features: ``{layer: (1, H, W, C)}`` features of the image being optimised.
        images: ``(1, H, W, 3)`` the image itself (for the TV term).
        content_targets: ``{layer: (1, H, W, C)}``.
        style_grams: ``{layer: (K, C, C)}``, see :func:`style_targets`.
        content_weight, style_weight, tv_weight: the term weights.
        style_layer_weights: ``w_l`` per style layer.
        style_blend_weights: ``(K,)`` blend weights ``b_k``.

    Returns:
        ``(total, {"content", "style", "tv", "total"})`` as scalars.
    """
    content = sum(content_loss(features[n], t)[0] for n, t in content_targets.items())
    style = 0.0
    for name, targets in style_grams.items():
        per_style = style_loss(gram(features[name])[0][None], targets)  # (K,)
        style = style + style_layer_weights[name] * jnp.sum(style_blend_weights * per_style)
    tv = tv_loss(images)[0]
    total = content_weight * content + style_weight * style + tv_weight * tv
    return total, {"content": content, "style": style, "tv": tv, "total": total}
