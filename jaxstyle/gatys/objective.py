"""The Gatys loss of one image, and the loss weights it takes as an argument."""

from __future__ import annotations

import jax
import numpy as np

from jaxstyle import losses
from jaxstyle.configs import GatysConfig
from jaxstyle.gatys import regions
from jaxstyle.nets.vgg import VGGNet


def objective(
    x: jax.Array,
    net: VGGNet,
    content_t: dict[str, jax.Array],
    style_g: dict[str, jax.Array],
    weights: dict[str, jax.Array],
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The Gatys loss of one image; see :func:`jaxstyle.losses.gatys_loss`.

    Args:
        x: the image, (H, W, 3) in [0, 1].
        net: the loss network.
        content_t: content features by layer, each (1, h, w, c), and the per-pixel inputs
            given as ``aux`` to :func:`jaxstyle.gatys.stylize` by name; with
            :data:`regions.STYLE_MASKS` ((h, w, S)) each style's Gram matrix is taken over
            its mask's region (:func:`regions.masked_style_loss`).
        style_g: style Gram matrices by layer, each (S, c, c) for S style images.
        weights: the loss weights of :func:`loss_weights`.
        content_layers, style_layers: the layers the loss uses.

    Returns:
        ``(total, {"total", "content", "style", "tv": scalar})``.
    """
    layers = tuple(dict.fromkeys(content_layers + style_layers))
    feats = net.features(x[None], layers)
    if regions.STYLE_MASKS in content_t:  # each style over its own region (--style-masks)
        return _masked_loss(x, feats, content_t, style_g, weights, content_layers, style_layers)
    return losses.gatys_loss(
        feats,
        x[None],
        {n: content_t[n] for n in content_layers},
        {n: style_g[n] for n in style_layers},
        content_weight=weights["content"],
        style_weight=weights["style"],
        tv_weight=weights["tv"],
        style_layer_weights={n: weights["layers"][i] for i, n in enumerate(style_layers)},
        style_blend_weights=weights["blend"],
    )


def _masked_loss(x, feats, content_t, style_g, weights, content_layers, style_layers):
    """:func:`objective` with style masks: the content and TV terms as
    :func:`jaxstyle.losses.gatys_loss`, the style term :func:`regions.masked_style_loss` (each
    style against its own region; blend weights do not apply)."""
    content = sum(losses.content_loss(feats[n], content_t[n])[0] for n in content_layers)
    style = regions.masked_style_loss(
        {n: feats[n] for n in style_layers},
        content_t[regions.STYLE_MASKS],
        {n: style_g[n] for n in style_layers},
        {n: weights["layers"][i] for i, n in enumerate(style_layers)},
    )
    tv = losses.tv_loss(x[None])[0]
    total = weights["content"] * content + weights["style"] * style + weights["tv"] * tv
    return total, {"content": content, "style": style, "tv": tv, "total": total}


def loss_weights(cfg: GatysConfig, n_styles: int) -> dict[str, jax.Array]:
    """The loss weights of ``cfg`` as arrays: an argument of the programs, not part of them.

    Changing a weight (a sweep) therefore reuses the compiled programs.

    Raises:
        ValueError: ``cfg.style_blend_weights`` has not one value per style image.
    """
    layers = cfg.style_layer_weights or (1.0,) * len(cfg.style_layers)
    blend = np.asarray(cfg.style_blend_weights or (1.0,) * n_styles, np.float32)
    if len(blend) != n_styles:
        raise ValueError(
            f"--style-blend-weights has {len(blend)} values for {n_styles} style images"
        )
    # (device_put: jnp.asarray and jnp.float32 compile a small program each on JAX 0.10.)
    return jax.device_put(
        {
            "content": np.float32(cfg.content_weight),
            "style": np.float32(cfg.style_weight),
            "tv": np.float32(cfg.tv_weight),
            "layers": np.asarray(layers, np.float32),
            "blend": blend / blend.sum(),
        }
    )
