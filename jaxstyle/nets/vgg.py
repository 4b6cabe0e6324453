"""VGG16/VGG19 convolutional feature extractors (Simonyan & Zisserman 2014) in Flax.

Only the 13 (VGG16) or 16 (VGG19) 3x3 convolutions are kept: style transfer never uses the
classifier. Layer names follow the style-transfer papers for both networks: ``conv{b}_{i}``,
``relu{b}_{i}`` and ``pool{b}``, with blocks ``b`` = 1..5.

Images at this module's boundary are float32 NHWC RGB in [0, 1]. The input convention of the
weights (recorded in their metadata) is applied inside :func:`vgg_features`:

* ``caffe``: BGR channel order, 0-255 scale, mean [103.939, 116.779, 123.68] (BGR) subtracted
  (the original Caffe/Keras VGG weights);
* ``torchvision``: RGB, ImageNet mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225];
* ``normalised``: an affine map of RGB in [0, 1] that is part of the weights: the parameters
  hold an ``input`` 1x1 convolution 3->3 (``{"kernel": (1, 1, 3, 3), "bias": (3,)}``) applied
  before conv1_1. This is the first layer of ``vgg_normalised.pth`` (the VGG19 encoder of the
  PyTorch AdaIN port), which folds Caffe's BGR order, 0-255 scale and mean into one layer; its
  convolutions are Gatys et al.'s *normalised* VGG19 (each filter rescaled to mean activation 1
  over ImageNet), so its activations are on another scale than Caffe's (see README, Weights).

The trunk here always uses zero padding and floor-mode pooling, whatever network the weights
came from (the AdaIN port's own network pads by reflection and pools in ceil mode: with the same
weights the two differ only in the border pixels of each activation map, and, for sides that
are not multiples of 2 at a pooling, in the last row/column that ceil mode keeps).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxstyle.nets import conv

#: Convolutions per block for each architecture.
ARCHS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
#: Output channels of every convolution in a block.
CHANNELS = (64, 128, 256, 512, 512)
CONVENTIONS = ("caffe", "torchvision", "normalised")
#: The parameter entry holding the input affine map of the ``normalised`` convention.
INPUT = "input"
INPUT_SHAPES = {"kernel": (1, 1, 3, 3), "bias": (3,)}
POOLINGS = ("max", "avg")

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)

Params = dict[str, dict[str, jax.Array]]


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown network {arch!r}; choose one of {', '.join(ARCHS)}")


def conv_names(arch: str) -> list[str]:
    """Names of the convolutions of ``arch`` in forward order (``conv1_1``, ``conv1_2``, ...)."""
    _check_arch(arch)
    return [f"conv{b}_{i}" for b, n in enumerate(ARCHS[arch], 1) for i in range(1, n + 1)]


def layer_names(arch: str) -> list[str]:
    """Every named layer output of ``arch`` in forward order: conv, relu, ..., pool per block."""
    names = []
    for b, n in enumerate(ARCHS[arch], 1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


def param_shapes(arch: str, convention: str | None = None) -> dict[str, dict[str, tuple[int, ...]]]:
    """Expected parameter shapes: ``{conv: {"kernel": (3, 3, Cin, Cout), "bias": (Cout,)}}``.

    With ``convention="normalised"`` the input map :data:`INPUT` comes first.
    """
    _check_arch(arch)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    if convention == "normalised":
        shapes[INPUT] = dict(INPUT_SHAPES)
    cin = 3
    for b, n in enumerate(ARCHS[arch], 1):
        cout = CHANNELS[b - 1]
        for i in range(1, n + 1):
            shapes[f"conv{b}_{i}"] = {"kernel": (3, 3, cin, cout), "bias": (cout,)}
            cin = cout
    return shapes


def parse_layers(spec: str | Iterable[str], arch: str = "vgg19") -> tuple[str, ...]:
    """Parses ``"relu1_1,relu2_1"`` (or a list) into a tuple of valid layer names.

    Raises:
        ValueError: naming the unknown layer and the valid ones.
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    valid = layer_names(arch)
    for n in names:
        if n not in valid:
            pattern = re.compile(r"^(conv|relu)\d_\d$|^pool\d$")
            hint = "" if pattern.match(n) else " (names look like conv4_2, relu1_1, pool3)"
            raise ValueError(f"unknown {arch} layer {n!r}{hint}; valid layers: {', '.join(valid)}")
    if not names:
        raise ValueError("no layers given")
    return tuple(names)


def pool2x2(x: jax.Array, kind: str) -> jax.Array:
    """2x2 max or average pooling with stride 2, dropping an odd last row/column (floor mode).

    Written as a reshape and a reduction instead of ``reduce_window``: the gradient of a
    reduction is elementwise, while XLA's ``select_and_scatter`` for ``max_pool`` is several
    times slower on CPU. Ties in max pooling share the gradient instead of routing it to one
    element; with real-valued activations ties have measure zero apart from all-zero windows.
    """
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))


class Conv3x3(nn.Module):
    """A 3x3 convolution with flax's default initialisers and parameter names."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return conv.conv3x3_same(x, kernel) + bias


class VGG(nn.Module):
    """The convolutional trunk of VGG; returns the requested named activations.

    Attributes:
        arch: ``"vgg16"`` or ``"vgg19"``.
        pooling: ``"max"`` (the trained network) or ``"avg"`` (Gatys et al.'s suggestion for
            smoother gradients; the weights are unchanged).
    """

    arch: str = "vgg16"
    pooling: str = "max"

    @nn.compact
    def __call__(self, x: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
        wanted = set(layers)
        order = layer_names(self.arch)
        last = max(order.index(n) for n in wanted)
        out = {}
        for name in order[: last + 1]:
            if name.startswith("conv"):
                cout = CHANNELS[int(name[4]) - 1]
                x = Conv3x3(cout, name=name)(x)
            elif name.startswith("relu"):
                x = jax.nn.relu(x)
            else:
                x = pool2x2(x, self.pooling)
            if name in wanted:
                out[name] = x
        return out


def preprocess(images: jax.Array, convention: str, affine: Any = None) -> jax.Array:
    """Maps float NHWC RGB in [0, 1] to the network's input convention.

    Args:
        images: float NHWC RGB in [0, 1].
        convention: one of :data:`CONVENTIONS`.
        affine: for ``normalised`` only, the weights' ``{"kernel": (1, 1, 3, 3), "bias": (3,)}``.
    """
    if convention == "normalised":
        if affine is None:
            raise ValueError(f"the normalised convention needs the weights' {INPUT!r} 1x1 conv")
        kernel = jnp.asarray(affine["kernel"], images.dtype)[0, 0]
        y = jnp.einsum("nhwc,cd->nhwd", images, kernel, precision=jax.lax.Precision.HIGHEST)
        return y + jnp.asarray(affine["bias"], images.dtype)
    if convention == "caffe":
        bgr = images[..., ::-1] * 255.0
        return bgr - jnp.asarray(CAFFE_MEAN_BGR, images.dtype)
    if convention == "torchvision":
        mean = jnp.asarray(TORCHVISION_MEAN, images.dtype)
        return (images - mean) / jnp.asarray(TORCHVISION_STD, images.dtype)
    raise ValueError(f"unknown input convention {convention!r}; expected one of {CONVENTIONS}")


def vgg_features(
    params: Params,
    images: jax.Array,
    layers: Sequence[str],
    *,
    arch: str = "vgg16",
    pooling: str = "max",
    convention: str = "caffe",
) -> dict[str, jax.Array]:
    """Activations of ``layers`` for ``images``, computing only up to the deepest one.

    Args:
        params: ``{conv_name: {"kernel": HWIO, "bias": (C,)}}``, plus :data:`INPUT` for the
            ``normalised`` convention.
        images: float NHWC RGB in [0, 1]; H and W of at least 32 keep every pool non-empty.
        layers: layer names (``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``).
        arch, pooling, convention: see :class:`VGG` and :func:`preprocess`.

    Returns:
        ``{layer_name: NHWC array}`` for every requested layer.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected NHWC RGB images, got shape {images.shape}")
    x = preprocess(images, convention, params.get(INPUT))
    convs = {k: v for k, v in params.items() if k != INPUT}
    return VGG(arch=arch, pooling=pooling).apply({"params": convs}, x, tuple(layers))


def init_params(arch: str, key: jax.Array | None = None) -> Params:
    """Random parameters from the architecture's own initialiser (for tests and converters)."""
    key = jax.random.PRNGKey(0) if key is None else key
    dummy = jnp.zeros((1, 32, 32, 3), jnp.float32)
    variables = VGG(arch=arch).init(key, dummy, (layer_names(arch)[-1],))
    return jax.tree_util.tree_map(lambda a: a, dict(variables["params"]))


@struct.dataclass
class VGGNet:
    """A VGG trunk with its weights; a pytree whose leaves are the parameters.

    :func:`jaxstyle.weights.load_vgg` builds one from cached or given weights files.

    Because the parameters are leaves, passing a ``VGGNet`` into a jitted function passes
    them as arguments: they are never baked into the compiled program as constants.
    """

    params: Any
    arch: str = struct.field(pytree_node=False, default="vgg16")
    pooling: str = struct.field(pytree_node=False, default="max")
    convention: str = struct.field(pytree_node=False, default="caffe")

    def features(self, images: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
        """See :func:`vgg_features`."""
        return vgg_features(
            self.params,
            images,
            tuple(layers),
            arch=self.arch,
            pooling=self.pooling,
            convention=self.convention,
        )

    def with_pooling(self, pooling: str) -> VGGNet:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose max or avg")
        return self.replace(pooling=pooling)


def min_side(layers: Sequence[str], arch: str = "vgg16") -> int:
    """Smallest image side whose deepest requested layer still has at least one pixel.

    Each 2x2 pooling up to that layer halves the side (dropping an odd pixel); below this an
    activation map is empty and every loss on it is NaN.
    """
    order = layer_names(arch)
    deepest = max(order.index(n) for n in layers)
    return 2 ** sum(1 for n in order[: deepest + 1] if n.startswith("pool"))
