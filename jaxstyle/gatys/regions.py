"""Gram matrices over weighted regions: style masks and tiles.

A region is a per-position weight map ``m`` over a layer's grid. Its Gram matrix is the
weighted mean of the per-position outer products, in the normalisation of
:func:`jaxstyle.losses.gram` (``F^T F / (C*H*W)``, a mean over positions divided by ``C``)::

    G_m = sum_p m_p F_p F_p^T / (C * sum_p m_p)

so a map of ones gives exactly :func:`jaxstyle.losses.gram`, and the style term stays
independent of the region's size as it is of the image's. (``(F*m)^T (F*m)`` would weight by
``m^2``; with 0/1 masks the two agree, and a soft boundary is a weighted mean with ``m``.)

* Style masks (``stylize --style-masks``): one map per style image; style ``s``'s Gram over its
  region is compared with that style's own target only, and its term is weighted by the
  region's share of the layer's positions, so the style gradient each pixel receives has the
  scale of a one-style run (and a mask of ones gives the usual loss).
* Tiles (:mod:`jaxstyle.gatys.tiles`): the numerator ``sum_p m_p F_p F_p^T`` of the whole image
  is a sum over tiles, so a tile's Gram contribution is added to the rest of the image's.

Weight maps are resized to each layer's grid inside the traced function (shapes are static):
``jax.image.resize`` with linear interpolation and antialiasing, an area-like average when it
shrinks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

#: The aux entry (``gatys.stylize(aux=)``) holding the style masks: (H, W, S) in [0, 1].
STYLE_MASKS = "style_masks"


def at_grid(weights: jax.Array, grid: Sequence[int]) -> jax.Array:
    """An (h, w, R) weight map resized to a layer's (h_l, w_l) grid: (h_l, w_l, R)."""
    h, w = int(grid[0]), int(grid[1])
    if weights.shape[:2] == (h, w):
        return weights
    return jax.image.resize(weights, (h, w, weights.shape[-1]), "linear")


def gram_numerators(features: jax.Array, weights: jax.Array) -> jax.Array:
    """``sum_p m_{p,r} F_p F_p^T`` for each region ``r``.

    Args:
        features: (1, h, w, C) one image's features at a layer.
        weights: (h, w, R) weight maps on that layer's grid.

    Returns:
        (R, C, C).
    """
    f = features[0]
    return jnp.einsum("hwr,hwc,hwd->rcd", weights, f, f, precision=jax.lax.Precision.HIGHEST)


def style_distance(grams: jax.Array, targets: jax.Array, pairs: jax.Array) -> jax.Array:
    """``sum_{r,s} pairs[r, s] * mean((G_r - T_s)^2)`` over the C x C entries.

    Args:
        grams: (R, C, C) the image's Gram matrices, one per region.
        targets: (S, C, C) the style images' Gram matrices.
        pairs: (R, S) how much region ``r`` is compared with style ``s``: one region and the
            blend weights (no masks), or a diagonal of region shares (masks).
    """
    d = jnp.mean((grams[:, None] - targets[None]) ** 2, axis=(-2, -1))  # (R, S)
    return jnp.sum(pairs * d)


def masked_style_loss(
    features: Mapping[str, jax.Array],
    masks: jax.Array,
    style_grams: Mapping[str, jax.Array],
    layer_weights: Mapping[str, jax.Array],
) -> jax.Array:
    """The style term with one region per style image (``--style-masks``).

    ``sum_l w_l sum_s a_{l,s} mean((G_{m_s}(F_l) - G_l(s))^2)`` with ``m_s`` the mask of style
    ``s`` resized to layer ``l``'s grid and ``a_{l,s} = mean(m_s)`` its share of the grid.

    Args:
        features: ``{layer: (1, h, w, C)}``.
        masks: (H, W, S) one mask per style image, at the image's size.
        style_grams: ``{layer: (S, C, C)}``.
        layer_weights: ``w_l`` per layer.
    """
    total = 0.0
    for name, targets in style_grams.items():
        f = features[name]
        m = at_grid(masks, f.shape[1:3])
        area = jnp.sum(m, axis=(0, 1))  # (S,)
        # A region empty at this layer (share 0) contributes nothing rather than 0/0.
        grams = gram_numerators(f, m) / (f.shape[-1] * jnp.maximum(area, 1e-6))[:, None, None]
        share = area / (m.shape[0] * m.shape[1])
        total = total + layer_weights[name] * style_distance(grams, targets, jnp.diag(share))
    return total
