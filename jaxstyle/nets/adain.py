"""Arbitrary style transfer by adaptive instance normalisation (Huang & Belongie 2017).

The network is laid out as the widely used PyTorch port (naoto0804/pytorch-AdaIN), whose
``vgg_normalised.pth`` and ``decoder.pth`` :mod:`jaxstyle.weights.adain` converts:

* encoder: the ``nn.Sequential`` VGG19 up to relu4_1. A 1x1 convolution 3->3 takes RGB in
  [0, 1] (it folds the Caffe mean and channel order into the weights), then reflection-padded
  3x3 convolutions with ReLUs and 2x2 max pooling in ceil mode;
* AdaIN: the content features normalised per channel, then given the style's per-channel mean
  and standard deviation. The deviation is ``sqrt(unbiased variance + 1e-5)``, as the
  reference's ``calc_mean_std``;
* decoder: the mirror of the encoder, reflection padding and nearest x2 upsampling, ending in a
  linear 3x3 convolution (the output is clipped to [0, 1] here).

Parameters are ``{"vgg": {"0": {"kernel", "bias"}, "2": ...}, "decoder": {"1": ..., ...}}``,
named by the index of the convolution in the PyTorch ``nn.Sequential``; kernels HWIO.

Two encoders (:data:`ENCODERS`): ``vgg19``, the port's (what converted files hold), and
``vgg16``, the same layout built from VGG16 (conv1_1, 1_2, pool, 2_1, 2_2, pool, 3_1, 3_2, 3_3,
pool, 4_1 at the ``nn.Sequential`` indices 0 (the 1x1), 2, 5, 9, 12, 16, 19, 22, 26) with the
decoder that mirrors it: the vgg19 decoder with one 256-channel convolution fewer, its modules
numbered as the port numbers its own (pad, conv, ReLU; an upsampling module before 5, 15, 22):
convolutions at 1, 5, 8, 11, 15, 18, 22, 25. The two index sets differ, so which encoder a set
of parameters belongs to is read from its keys (:func:`encoder_of`).
:func:`encoder_from_vgg` builds either encoder from jaxstyle's VGG weights (the 1x1 convolution
folds their input convention), which :mod:`jaxstyle.train_adain` trains decoders for.

Sizes that are not multiples of 8: ceil-mode pooling rounds each level up, so the decoder's
output is up to 7 pixels larger than the input, with the image's own pixels at the top left
(ceil-mode windows start there). :func:`stylize` crops it to the content's size; the reference
saves the larger image as it is, whose top-left crop equals ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.nets import conv

#: (index in vgg_normalised's nn.Sequential, in, out channels, kernel size) up to relu4_1;
#: a max pooling precedes the convolutions at the indices in :data:`POOL_BEFORE`.
ENCODER = ((0, 3, 3, 1), (2, 3, 64, 3), (5, 64, 64, 3), (9, 64, 128, 3), (12, 128, 128, 3),
           (16, 128, 256, 3), (19, 256, 256, 3), (22, 256, 256, 3), (25, 256, 256, 3),
           (29, 256, 512, 3))  # fmt: skip
POOL_BEFORE = frozenset({9, 16, 29})
#: The rest of the full vgg_normalised.pth (relu4_2 .. relu5_4): present in the file, unused.
ENCODER_REST = (32, 35, 38, 42, 45, 48, 51)
#: (index in decoder.pth's nn.Sequential, in, out channels); all 3x3. A nearest x2 upsampling
#: precedes the convolutions at the indices in :data:`UPSAMPLE_BEFORE`; the last has no ReLU.
DECODER = ((1, 512, 256), (5, 256, 256), (8, 256, 256), (11, 256, 256), (14, 256, 128),
           (18, 128, 128), (21, 128, 64), (25, 64, 64), (28, 64, 3))  # fmt: skip
UPSAMPLE_BEFORE = frozenset({5, 18, 25})
#: The vgg16 encoder and its decoder (see the module docstring), in the same form.
ENCODER16 = ((0, 3, 3, 1), (2, 3, 64, 3), (5, 64, 64, 3), (9, 64, 128, 3), (12, 128, 128, 3),
             (16, 128, 256, 3), (19, 256, 256, 3), (22, 256, 256, 3),
             (26, 256, 512, 3))  # fmt: skip
POOL_BEFORE16 = frozenset({9, 16, 26})
DECODER16 = ((1, 512, 256), (5, 256, 256), (8, 256, 256), (11, 256, 128), (15, 128, 128),
             (18, 128, 64), (22, 64, 64), (25, 64, 3))  # fmt: skip
UPSAMPLE_BEFORE16 = frozenset({5, 15, 22})


class Arch(NamedTuple):
    """One encoder's layer tables and its decoder's."""

    encoder: tuple[tuple[int, int, int, int], ...]
    pool_before: frozenset[int]
    decoder: tuple[tuple[int, int, int], ...]
    upsample_before: frozenset[int]


ARCHS = {
    "vgg19": Arch(ENCODER, POOL_BEFORE, DECODER, UPSAMPLE_BEFORE),
    "vgg16": Arch(ENCODER16, POOL_BEFORE16, DECODER16, UPSAMPLE_BEFORE16),
}
ENCODERS = tuple(ARCHS)
#: The layers :func:`encode_features` returns, whose statistics the training loss matches.
FEATURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
EPS = 1e-5
#: The smallest side an image may have: each of the three ceil-mode poolings must leave at
#: least 2 pixels for the reflection padding (9 -> 5 -> 3 -> 2), and the variance at relu4_1
#: needs more than one pixel.
MIN_SIDE = 9


def _arch(encoder: str) -> Arch:
    if encoder not in ARCHS:
        raise ValueError(f"unknown AdaIN encoder {encoder!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[encoder]


def param_shapes(encoder: str = "vgg19") -> dict[str, dict[str, dict[str, tuple[int, ...]]]]:
    """``{"vgg"|"decoder": {index: {"kernel": HWIO, "bias": (out,)}}}`` of the network."""
    a = _arch(encoder)
    vgg = {str(i): {"kernel": (k, k, cin, cout), "bias": (cout,)} for i, cin, cout, k in a.encoder}
    dec = {str(i): {"kernel": (3, 3, cin, cout), "bias": (cout,)} for i, cin, cout in a.decoder}
    return {"vgg": vgg, "decoder": dec}


def encoder_of(part: dict, what: str = "vgg") -> str:
    """Which encoder the parameters ``part`` (``what`` = ``"vgg"`` or ``"decoder"``) belong to,
    from their keys alone (static under ``jax.jit``).

    Raises:
        ValueError: keys of neither encoder.
    """
    keys = set(part)
    for name in ARCHS:
        if {str(i) for i in param_shapes(name)[what]} <= keys:
            return name
    raise ValueError(f"AdaIN {what} parameters of no known encoder (keys {sorted(keys)[:12]})")


def init_params(seed: int = 0, encoder: str = "vgg19") -> dict:
    """Random parameters (He-scaled normal kernels, zero biases), for tests and benchmarks."""
    rng = np.random.default_rng(seed)  # numpy: drawing 7M numbers with jax compiles first
    out: dict = {}
    for part, layers in param_shapes(encoder).items():
        out[part] = {}
        for name, s in layers.items():
            std = np.sqrt(2.0 / np.prod(s["kernel"][:3]))
            kernel = (rng.standard_normal(s["kernel"]) * std).astype(np.float32)
            out[part][name] = {"kernel": kernel, "bias": np.zeros(s["bias"], np.float32)}
    return out


def _reflect(x: jax.Array) -> jax.Array:
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")


def _max_pool_ceil(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, ceil mode: an odd last row/column is a window of its own."""
    n, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    return x.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c).max(axis=(2, 4))


def _encode(vgg: dict, x: jax.Array, encoder: str | None, taps: bool) -> list[jax.Array]:
    """The relu4_1 features, preceded by relu1_1, relu2_1 and relu3_1 when ``taps``."""
    a = _arch(encoder or encoder_of(vgg))
    tap_at = {a.encoder[1][0], *a.pool_before}  # conv1_1 and the first conv of each block
    out = []
    for i, _, _, k in a.encoder:
        p = vgg[str(i)]
        if i in a.pool_before:
            x = _max_pool_ceil(x)
        if k == 1:  # the colour transform: no padding, no ReLU
            x = jnp.einsum("nhwc,co->nhwo", x, p["kernel"][0, 0]) + p["bias"]
            continue
        x = jax.nn.relu(conv.conv2d(_reflect(x), p["kernel"]) + p["bias"])
        if taps and i in tap_at:
            out.append(x)
    return out if taps else [x]


def encode(vgg: dict, x: jax.Array, encoder: str | None = None) -> jax.Array:
    """relu4_1 features of NHWC RGB images in [0, 1].

    ``encoder``: ``"vgg19"`` or ``"vgg16"``; ``None`` reads it from the keys of ``vgg``.
    """
    return _encode(vgg, x, encoder, taps=False)[0]


def encode_features(vgg: dict, x: jax.Array, encoder: str | None = None) -> dict[str, jax.Array]:
    """``{relu1_1, relu2_1, relu3_1, relu4_1: NHWC}`` of NHWC RGB images in [0, 1], one pass.

    ``encoder`` as :func:`encode`.
    """
    return dict(zip(FEATURE_LAYERS, _encode(vgg, x, encoder, taps=True), strict=True))


def decode(decoder: dict, t: jax.Array, encoder: str | None = None) -> jax.Array:
    """The decoder's (unclipped) output for relu4_1-shaped features ``t``; 8x their size.

    ``encoder``: whose mirror the decoder is; ``None`` reads it from the keys of ``decoder``.
    """
    a = _arch(encoder or encoder_of(decoder, "decoder"))
    last = a.decoder[-1][0]
    for i, _, _ in a.decoder:
        p = decoder[str(i)]
        if i in a.upsample_before:
            t = conv.upsample_conv3x3(t, p["kernel"]) + p["bias"]
        else:
            t = conv.conv2d(_reflect(t), p["kernel"]) + p["bias"]
        if i != last:
            t = jax.nn.relu(t)
    return t


def encoder_from_vgg(vgg_params: dict, arch: str, convention: str) -> dict:
    """The AdaIN encoder (``"vgg"`` parameters) of jaxstyle's VGG weights (:mod:`.vgg`).

    The 1x1 convolution folds the weights' input convention exactly (Caffe: ``BGR * 255 -
    mean``; torchvision: ``(RGB - mean) / std``; normalised: the weights' own ``input`` 1x1
    convolution, as ``vgg_normalised.pth`` has), so it takes RGB in [0, 1] and every relu
    feature equals :func:`jaxstyle.nets.vgg.vgg_features`' on the same image, except near the
    border: here padding is reflection (as the AdaIN port's), there zeros.

    Args:
        vgg_params: ``{"conv1_1": {"kernel", "bias"}, ...}`` up to conv4_1 at least.
        arch: ``"vgg16"`` or ``"vgg19"`` (the encoder built).
        convention: ``"caffe"``, ``"torchvision"`` or ``"normalised"``.
    """
    from jaxstyle.nets import vgg as vgg_lib

    a = _arch(arch)
    if convention == "caffe":  # out channel o (BGR) = 255 * in channel 2 - o - mean[o]
        kernel = np.fliplr(np.eye(3)) * 255.0
        bias = -np.asarray(vgg_lib.CAFFE_MEAN_BGR)
    elif convention == "torchvision":
        std = np.asarray(vgg_lib.TORCHVISION_STD)
        kernel, bias = np.diag(1.0 / std), -np.asarray(vgg_lib.TORCHVISION_MEAN) / std
    elif convention == "normalised":  # the weights' own input map (vgg_normalised.pth's)
        kernel, bias = np.asarray(vgg_params["input"]["kernel"])[0, 0], vgg_params["input"]["bias"]
    else:
        raise ValueError(f"unknown input convention {convention!r}")
    first = {"kernel": kernel[None, None], "bias": bias}
    out = {"0": {k: jnp.asarray(v, jnp.float32) for k, v in first.items()}}
    names = vgg_lib.conv_names(arch)
    for (i, *_), name in zip(a.encoder[1:], names, strict=False):
        out[str(i)] = {k: jnp.asarray(v, jnp.float32) for k, v in vgg_params[name].items()}
    return out


def mean_std(feat: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per image and channel: the mean and ``sqrt(unbiased variance + 1e-5)``, each (N,1,1,C)."""
    mean = feat.mean(axis=(1, 2), keepdims=True)
    var = feat.var(axis=(1, 2), keepdims=True, ddof=1)
    return mean, jnp.sqrt(var + EPS)


def adain(content_feat: jax.Array, style_feat: jax.Array) -> jax.Array:
    """Content features with the style features' per-channel mean and deviation."""
    c_mean, c_std = mean_std(content_feat)
    s_mean, s_std = mean_std(style_feat)
    return (content_feat - c_mean) / c_std * s_std + s_mean


def normalised_weights(style_weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Style weights scaled to sum to 1 (equal weights when ``None``).

    Raises:
        ValueError: a count that is not ``n``, a negative or non-finite weight, or all zero.
    """
    w = np.ones(n) if style_weights is None else np.asarray(style_weights, np.float64)
    if w.shape != (n,):
        raise ValueError(f"{w.size} style weights for {n} style images")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"style weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


@jax.jit  # one program per style size
def style_stats(params: dict, style: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The relu4_1 mean and deviation of one style image (HWC or 1HWC in [0, 1])."""
    return mean_std(encode(params["vgg"], style.reshape(1, *style.shape[-3:])))


@jax.jit  # one program per content size; alpha is traced, not compiled in
def stylize_with_stats(
    params: dict,
    content: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    alpha: float | jax.Array = 1.0,
) -> jax.Array:
    """:func:`stylize` from the styles' mixed statistics (:func:`weighted_stats`).

    Args:
        content: NHWC RGB in [0, 1].
        mean, std: (1, 1, 1, C), the weighted sums of the styles' statistics.
        alpha: strength in [0, 1].

    Returns:
        NHWC in [0, 1], the size of ``content``.

    The weighted sum of the styles' AdaIN targets is AdaIN with the weighted sums of their
    statistics: ``sum_i w_i (z * s_i + m_i) = z * sum_i w_i s_i + sum_i w_i m_i`` when the
    weights sum to 1. So any number of styles runs one program per content size.
    """
    f = encode(params["vgg"], content)
    c_mean, c_std = mean_std(f)
    t = (f - c_mean) / c_std * std + mean
    t = alpha * t + (1 - alpha) * f
    y = decode(params["decoder"], t)
    return jnp.clip(y[:, : content.shape[1], : content.shape[2]], 0.0, 1.0)


def stylize(
    params: dict,
    content: jax.Array,
    styles: Sequence[Any],
    alpha: float = 1.0,
    style_weights: Sequence[float] | None = None,
) -> jax.Array:
    """Stylises ``content`` with the style images, at strength ``alpha``.

    Each style image's AdaIN target ``t_i = AdaIN(f(c), f(s_i))`` is taken, the targets are
    interpolated with the normalised ``style_weights``, and the decoder is given
    ``alpha * t + (1 - alpha) * f(c)``.

    Args:
        params: see the module docstring.
        content: NHWC RGB in [0, 1]; each image gets its own statistics.
        styles: images (HWC or 1HWC in [0, 1]), each of its own size.
        alpha: strength in [0, 1].
        style_weights: one weight >= 0 per style; equal when ``None``.

    Returns:
        NHWC float32 in [0, 1], cropped to the content's size (see the module docstring).

    Raises:
        ValueError: ``alpha`` outside [0, 1], or bad ``style_weights``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mean, std = weighted_stats(params, styles, style_weights)
    content = jnp.asarray(content, jnp.float32)
    return stylize_with_stats(params, content, mean, std, jnp.float32(alpha))


def weighted_stats(
    params: dict, styles: Sequence[Any], style_weights: Sequence[float] | None = None
) -> tuple[jax.Array, jax.Array]:
    """The styles' relu4_1 means and deviations, each summed with the normalised weights:
    (1, 1, 1, C) each, as :func:`stylize_with_stats` takes them; one compile per style size.

    Raises:
        ValueError: bad ``style_weights``.
    """
    w = normalised_weights(style_weights, len(styles))
    stats = [style_stats(params, jnp.asarray(s, jnp.float32)) for s in styles]
    mean = sum(float(wi) * m for wi, (m, _) in zip(w, stats, strict=True))
    std = sum(float(wi) * s for wi, (_, s) in zip(w, stats, strict=True))
    return mean, std
