"""Johnson et al. (2016)'s image transformation network, in Flax.

9x9 conv 32 -> 3x3 stride-2 conv 64 -> 3x3 stride-2 conv 128 -> five residual blocks of 128 ->
two x2 upsampling stages (64, 32) -> 9x9 conv to 3, with reflection padding throughout.

Departures from the paper, each for a documented reason:

* Instance normalisation (Ulyanov et al. 2016) instead of batch normalisation: it gives visibly
  better stylisation and makes the network's output independent of the other images in a batch.
* Nearest-neighbour upsampling followed by a convolution instead of fractionally-strided
  convolutions, which leave checkerboard artefacts (Odena et al. 2016). ``upsample="transpose"``
  keeps the paper's version.
* Reflection padding instead of the paper's 40-pixel border padding plus valid convolutions
  (as in pytorch/examples ``fast_neural_style``): the same receptive field with no cropping.

On CPU the convolutions run in the forms of :mod:`jaxstyle.nets.conv` (Winograd, space-to-depth,
per-phase upsampling), which compute the same functions several times faster than XLA:CPU's
convolution on these shapes.

Multi-style networks (Dumoulin, Shlens & Kudlur 2017, "A Learned Representation for Artistic
Style"): with ``num_styles`` S > 1 every instance norm is *conditional*: its scale and bias are
(S, C) tables, one (gamma, beta) row per style, and the network takes a style vector ``style`` of
S weights per image; the row used is the weighted sum of the rows (a one-hot vector picks a
style, other weights interpolate between styles). Everything else is shared by all styles.

Module names follow pytorch/examples ``fast_neural_style`` (conv1, in1, ..., res1..res5,
deconv1, in4, deconv2, in5, deconv3) so its published models convert with a name table.
Images in and out are NHWC RGB in [0, 1]; ``io_scale`` maps them to the scale a network was
trained on (255 for converted pytorch/examples models).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.nets import conv


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """Architecture of a transformation network (hashable; a static jit argument)."""

    channels: tuple[int, int, int] = (32, 64, 128)
    num_res: int = 5
    upsample: str = "nearest"  # "nearest" (+conv) or "transpose" (the paper's)
    io_scale: float = 1.0  # input * io_scale -> network -> output / io_scale
    output: str = "sigmoid"  # "sigmoid": output in (0, 1) by construction; "linear": clipped
    num_styles: int = 1  # > 1: conditional instance norm, one (gamma, beta) row per style

    def to_meta(self) -> dict[str, str]:
        meta = {
            "channels": ",".join(map(str, self.channels)),
            "num_res": str(self.num_res),
            "upsample": self.upsample,
            "io_scale": repr(self.io_scale),
            "output": self.output,
        }
        if self.num_styles > 1:  # single-style files keep their format
            meta["num_styles"] = str(self.num_styles)
        return meta

    def __post_init__(self):
        if len(self.channels) != 3 or min(self.channels) < 1 or self.num_res < 0:
            raise ValueError(f"bad architecture: channels {self.channels}, {self.num_res} blocks")
        if self.upsample not in ("nearest", "transpose"):
            raise ValueError(f"unknown upsample {self.upsample!r} (nearest or transpose)")
        if self.output not in ("sigmoid", "linear"):
            raise ValueError(f"unknown output {self.output!r} (sigmoid or linear)")
        if not self.io_scale > 0:
            raise ValueError(f"io_scale must be positive, got {self.io_scale}")
        if self.num_styles < 1:
            raise ValueError(f"num_styles must be >= 1, got {self.num_styles}")

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> NetConfig:
        return cls(
            channels=tuple(int(c) for c in meta["channels"].split(",")),
            num_res=int(meta["num_res"]),
            upsample=meta["upsample"],
            io_scale=float(meta["io_scale"]),
            output=meta["output"],
            num_styles=int(meta.get("num_styles", "1")),
        )


#: The paper's network.
FULL = NetConfig()
#: A small variant for tests: same structure, few channels, one residual block.
TINY = NetConfig(channels=(8, 16, 16), num_res=1)
PRESETS = {"full": FULL, "tiny": TINY}


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


# ---------------------------------------------------------------------------------------------
# Images padded into a larger canvas (size buckets): ``valid`` is an (N, 2) int array of each
# image's own height and width at the current resolution. Every layer then computes, inside
# that region, exactly what it computes on the image alone: the canvas beyond it is refilled
# before each padded convolution with what the padding of the image alone would show there,
# and instance-norm statistics are taken over the region only.


def _source_index(length: int, valid: jax.Array, mode: str) -> jax.Array:
    """(N, length): for each canvas row, the row of the valid region that belongs there."""
    r = jnp.arange(length)[None, :]
    v = valid[:, None]
    if mode == "edge":
        return jnp.minimum(r, v - 1)
    period = jnp.maximum(2 * (v - 1), 1)  # reflection without repeating the edge
    m = jnp.mod(r, period)
    return jnp.where(v > 1, jnp.where(m < v, m, period - m), 0)


def refill(x: jax.Array, valid: jax.Array, mode: str) -> jax.Array:
    """The canvas ``x`` with everything beyond each image's ``valid`` region replaced by its
    ``reflect``-ion, ``edge`` replication, or ``zero``-s."""
    if mode == "zero":
        return x * region_mask(x, valid).astype(x.dtype)
    ih = _source_index(x.shape[1], valid[:, 0], mode)
    iw = _source_index(x.shape[2], valid[:, 1], mode)
    x = jnp.take_along_axis(x, ih[:, :, None, None], axis=1)
    return jnp.take_along_axis(x, iw[:, None, :, None], axis=2)


def region_mask(x: jax.Array, valid: jax.Array) -> jax.Array:
    """(N, H, W, 1) booleans: inside each image's valid region."""
    rows = jnp.arange(x.shape[1])[None, :] < valid[:, :1]
    cols = jnp.arange(x.shape[2])[None, :] < valid[:, 1:]
    return (rows[:, :, None] & cols[:, None, :])[..., None]


class Conv(nn.Module):
    """A 'VALID' convolution with ``nn.Conv``'s parameters (names, shapes, initialisers).

    It runs :func:`jaxstyle.nets.conv.conv2d` (the fastest formulation measured for the shape on
    CPU), or :func:`jaxstyle.nets.conv.upsample_conv3x3` with ``upsample=True``: nearest x2
    upsampling, reflection padding of 1 and a 3x3 convolution, in one.
    """

    features: int
    kernel: int
    stride: int = 1
    upsample: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        if self.upsample:
            y = conv.upsample_conv3x3(x, kernel)
        else:
            y = conv.conv2d(x, kernel, self.stride)
        return y + bias


class ConvLayer(nn.Module):
    """Reflection padding + convolution (pytorch/examples ``ConvLayer``)."""

    features: int
    kernel: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        if valid is not None:
            x = refill(x, valid, "reflect")
        x = reflect_pad(x, self.kernel // 2)
        return Conv(self.features, self.kernel, self.stride, dtype=self.dtype, name="conv2d")(x)


class InstanceNorm(nn.Module):
    """Per-image, per-channel normalisation over H and W with a learned scale and bias.

    With ``num_styles`` > 1 it is conditional instance norm: scale and bias are (S, C) tables
    and ``style`` (N, S) weighs their rows for each image.

    Statistics are computed in float32 whatever the activation dtype (bf16 variances lose too
    much precision).
    """

    epsilon: float = 1e-5
    num_styles: int = 1

    @nn.compact
    def __call__(
        self, x: jax.Array, valid: jax.Array | None = None, style: jax.Array | None = None
    ) -> jax.Array:
        c = x.shape[-1]
        rows = () if self.num_styles == 1 else (self.num_styles,)
        scale = self.param("scale", nn.initializers.ones_init(), (*rows, c))
        bias = self.param("bias", nn.initializers.zeros_init(), (*rows, c))
        if rows:  # the style's (gamma, beta), per image: (N, 1, 1, C)
            w = style.astype(jnp.float32)
            scale = (w @ scale)[:, None, None, :]
            bias = (w @ bias)[:, None, None, :]
        x32 = x.astype(jnp.float32)
        if valid is None:
            mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
            var = jnp.mean((x32 - mean) ** 2, axis=(1, 2), keepdims=True)
        else:  # the statistics of each image's own region
            mask = region_mask(x32, valid).astype(jnp.float32)
            count = (valid[:, 0] * valid[:, 1]).astype(jnp.float32)[:, None, None, None]
            mean = jnp.sum(x32 * mask, axis=(1, 2), keepdims=True) / count
            var = jnp.sum(((x32 - mean) * mask) ** 2, axis=(1, 2), keepdims=True) / count
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(x.dtype)


class ResidualBlock(nn.Module):
    features: int
    dtype: Any = jnp.float32
    num_styles: int = 1

    @nn.compact
    def __call__(
        self, x: jax.Array, valid: jax.Array | None = None, style: jax.Array | None = None
    ) -> jax.Array:
        conv1 = ConvLayer(self.features, 3, dtype=self.dtype, name="conv1")
        conv2 = ConvLayer(self.features, 3, dtype=self.dtype, name="conv2")
        s = self.num_styles
        y = nn.relu(InstanceNorm(num_styles=s, name="in1")(conv1(x, valid), valid, style))
        y = InstanceNorm(num_styles=s, name="in2")(conv2(y, valid), valid, style)
        return x + y


class UpsampleConvLayer(nn.Module):
    """x2 upsampling then a 3x3 convolution (or the paper's stride-1/2 transposed conv)."""

    features: int
    mode: str = "nearest"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        if valid is not None:
            # Beyond the image: zeros for the transposed conv ('SAME' zero padding); for
            # nearest x2 + reflection padding, the reflected upsampled image is the low-res
            # image's edge row repeated.
            x = refill(x, valid, "zero" if self.mode == "transpose" else "edge")
        if self.mode == "transpose":
            return nn.ConvTranspose(
                self.features,
                (3, 3),
                strides=(2, 2),
                padding="SAME",
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name="conv2d",
            )(x)
        return Conv(self.features, 3, upsample=True, dtype=self.dtype, name="conv2d")(x)


class TransformerNet(nn.Module):
    """Johnson et al.'s network on [0, 1] images with H, W divisible by 4.

    The output is in (0, 1) for ``output="sigmoid"``; for ``"linear"`` it is unbounded until
    :func:`stylize` clips it.
    """

    config: NetConfig = FULL
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, valid: jax.Array | None = None, style: jax.Array | None = None
    ) -> jax.Array:
        """Args:
        x: NHWC images in [0, 1], H and W divisible by 4.
        valid: optional (N, 2) int heights and widths (each divisible by 4) of the images
            inside the canvas ``x``; the output inside each region is then the network's output
            on that image alone (the rest of the canvas is don't-care).
        style: (N, num_styles) or (num_styles,) weights of the styles' rows, for multi-style
            networks only (see :func:`style_vector`).
        """
        cfg, dt = self.config, self.dtype
        c1, c2, c3 = cfg.channels
        v1, v2, v4 = (None, None, None) if valid is None else (valid, valid // 2, valid // 4)
        s = cfg.num_styles
        if s > 1:
            if style is None:
                raise ValueError(f"a network of {s} styles needs a style vector")
            style = jnp.broadcast_to(jnp.asarray(style, jnp.float32), (x.shape[0], s))
        elif style is not None:
            raise ValueError("a single-style network takes no style vector")

        def norm(name, y, v):
            return nn.relu(InstanceNorm(num_styles=s, name=name)(y, v, style))

        y = (x * cfg.io_scale).astype(dt)
        y = norm("in1", ConvLayer(c1, 9, 1, dt, name="conv1")(y, v1), v1)
        y = norm("in2", ConvLayer(c2, 3, 2, dt, name="conv2")(y, v1), v2)
        y = norm("in3", ConvLayer(c3, 3, 2, dt, name="conv3")(y, v2), v4)
        for i in range(cfg.num_res):
            y = ResidualBlock(c3, dt, s, name=f"res{i + 1}")(y, v4, style)
        y = norm("in4", UpsampleConvLayer(c2, cfg.upsample, dt, name="deconv1")(y, v4), v2)
        y = norm("in5", UpsampleConvLayer(c1, cfg.upsample, dt, name="deconv2")(y, v2), v1)
        y = ConvLayer(3, 9, 1, dt, name="deconv3")(y, v1).astype(jnp.float32)
        if cfg.output == "sigmoid":
            return jax.nn.sigmoid(y)
        return y / cfg.io_scale


def init_params(config: NetConfig, key: jax.Array, size: int = 32) -> dict:
    """Fresh parameters (flax's default initialisers)."""
    x = jnp.zeros((1, size, size, 3), jnp.float32)
    style = style_vector(config.num_styles, index=0) if config.num_styles > 1 else None
    return TransformerNet(config).init(key, x, None, style)["params"]


def style_vector(num_styles: int, index: int | None = None, mix: Any = None) -> np.ndarray | None:
    """The style weights a multi-style network takes: one-hot for ``index``, or ``mix``
    normalised to sum to 1; ``None`` for a single-style network.

    Raises:
        ValueError: an index out of range, a mix of the wrong length, negative, non-finite or
            all zero, or both (or, for several styles, neither) given.
    """
    if num_styles == 1:
        if index not in (None, 0) or mix is not None:
            raise ValueError("a single-style network has no style to choose or mix")
        return None
    if (index is None) == (mix is None):
        raise ValueError(f"a network of {num_styles} styles needs a style index or a mix")
    if index is not None:
        if not 0 <= index < num_styles:
            raise ValueError(f"style index {index} is out of range 0..{num_styles - 1}")
        return np.eye(num_styles, dtype=np.float32)[index]
    w = np.asarray(mix, np.float64).reshape(-1)
    if w.size != num_styles:
        raise ValueError(f"a mix of {w.size} weights for a network of {num_styles} styles")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"mix weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return (w / w.sum()).astype(np.float32)


def param_count(params: Any) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


def stylize(
    params: Any,
    images: jax.Array,
    config: NetConfig,
    dtype: Any = jnp.float32,
    style: Any = None,
) -> jax.Array:
    """Applies the network to NHWC [0, 1] images of any size, returning [0, 1] images.

    Sizes not divisible by 4 are reflection-padded up to the next multiple and cropped back.
    ``style``: a multi-style network's style weights (:func:`style_vector`).
    """
    n, h, w, _ = images.shape
    ph, pw = -h % 4, -w % 4
    x = images
    if ph or pw:
        x = jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
    y = TransformerNet(config, dtype).apply({"params": params}, x, None, style)
    return jnp.clip(y[:, :h, :w, :], 0.0, 1.0)
