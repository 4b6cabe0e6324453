"""The Python API: :func:`stylize` and :func:`load_model`, what the CLI and notebooks call.

Images cross this boundary as arrays or as paths. An array is H x W x 3 RGB, ``uint8`` (0-255)
or float in [0, 1]; a path is any image file Pillow reads (decoded with the CLI's guards:
EXIF orientation, RGB conversion, the decompression-bomb limit). Results are float32 H x W x 3
in [0, 1].

Errors are exceptions, never ``SystemExit``: ``TypeError`` for an unknown keyword,
``ValueError`` for an impossible setting or an image too small or too large for the run,
:class:`jaxstyle.images.ImageError` for a bad image file, :class:`jaxstyle.models.ModelError`
for a bad model, :class:`jaxstyle.weights.WeightsError` for bad VGG weights. Everything that can
be checked is checked before weights are loaded or anything is compiled; the checks are the
CLI's own (``jaxstyle stylize`` and ``jaxstyle apply`` call the functions here).

Importing this module is cheap (no JAX); JAX is imported by the first call that needs it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxstyle import images as imlib
from jaxstyle.configs import GatysConfig, config_from_kwargs
from jaxstyle.images import ImageFile

#: An image as the API takes it: an H x W x 3 array, or a path to an image file.
ImageLike = np.ndarray | str | os.PathLike

__all__ = [
    "KEYWORD_NAMES",
    "ApplyRequest",
    "Model",
    "check_apply",
    "check_stylize",
    "load_model",
    "stylize",
    "stylize_images",
    "to_image",
]


# ---------------------------------------------------------------------------------------------
# Images at the boundary.


def to_image(image: Any, name: str = "image") -> np.ndarray:
    """An array image as float32 H x W x 3 in [0, 1].

    Args:
        image: H x W x 3 RGB, ``uint8`` or float in [0, 1].
        name: what the image is called in error messages.

    Raises:
        ValueError: another shape or dtype, float values outside [0, 1] or not finite, or a
            side under :data:`jaxstyle.images.MIN_SIDE` pixels.
    """
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected an H x W x 3 RGB array, got shape {a.shape}")
    if min(a.shape[:2]) < imlib.MIN_SIDE:
        raise ValueError(
            f"{name}: {a.shape[1]}x{a.shape[0]} is too small (each side at least "
            f"{imlib.MIN_SIDE} px)"
        )
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 or float values in [0, 1], got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: holds values that are not finite")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name}: float values must be in [0, 1], got [{lo:.4g}, {hi:.4g}] (pass uint8 for "
            f"0-255 values)"
        )
    return a


def _is_path(x: Any) -> bool:
    return isinstance(x, str | os.PathLike)


def _open(item: Any, name: str, long_side: int | None = None) -> np.ndarray | ImageFile:
    """An array checked and converted, or a path's header read (its pixels stay on disk)."""
    if isinstance(item, ImageFile):
        return item
    if _is_path(item):
        return ImageFile.open(item, long_side)
    return to_image(item, name)


def _named_shape(item: np.ndarray | ImageFile, name: str) -> tuple[str, tuple[int, int]]:
    if isinstance(item, ImageFile):
        return str(item.path), item.shape
    return name, item.shape[:2]


# ---------------------------------------------------------------------------------------------
# stylize.

#: The keywords of :func:`stylize` that are not :class:`GatysConfig` fields.
STYLIZE_KEYWORDS = ("weights", "callback", "callback_every", "progress")


def check_stylize(
    contents: Sequence[tuple[str, tuple[int, int]]],
    styles: Sequence[tuple[str, tuple[int, int]]],
    cfg: GatysConfig,
) -> None:
    """Everything about a Gatys run that can be known before it starts.

    The settings (:meth:`GatysConfig.validate`), the ``init`` image's header, one blend weight
    per style, every image large enough for the layers at every scale, and the run within the
    memory budget.

    Args:
        contents: ``(name, (height, width))`` of each content image (from its header alone).
        styles: the same for each style image.
        cfg: the settings.

    Raises:
        ValueError: a setting or size that cannot work (the message names the image).
        jaxstyle.images.ImageError: the ``init`` image is missing or unreadable.
    """
    from jaxstyle import backend
    from jaxstyle.images import size_for_long_side
    from jaxstyle.nets.vgg import min_side

    cfg.validate()
    if not contents or not styles:
        raise ValueError("need at least one content and one style image")
    if cfg.init not in ("content", "noise", "style"):
        try:  # fail before any work when the init image is bad
            imlib.image_shape(cfg.init)
        except imlib.ImageError as e:
            raise imlib.ImageError(f"--init: {e}") from None
    if cfg.style_blend_weights and len(cfg.style_blend_weights) != len(styles):
        raise ValueError(
            f"--style-blend-weights has {len(cfg.style_blend_weights)} values for "
            f"{len(styles)} style images"
        )
    need_c = min_side(cfg.content_layers + cfg.style_layers, cfg.net)
    need_s = min_side(cfg.style_layers, cfg.net)
    for scale in cfg.resolved_scales():
        style_long = max(16, round(scale * cfg.style_scale))
        for group, need, long in ((contents, need_c, scale), (styles, need_s, style_long)):
            for name, shape in group:
                h, w = size_for_long_side(shape, long)
                if min(h, w) < need:
                    raise ValueError(
                        f"{name}: at a long side of {long} px it is {w}x{h}; the layers used "
                        f"need each side to be at least {need} px (one pixel after every "
                        f"pooling); use a larger --size or a less elongated image"
                    )
    largest: dict[tuple[int, int], int] = {}  # same-shape contents run together
    for _, shape in contents:
        hw = size_for_long_side(shape, max(cfg.resolved_scales()))
        largest[hw] = largest.get(hw, 0) + hw[0] * hw[1]
    need_bytes = backend.gatys_bytes(max(largest.values()), cfg.history_size)
    budget = backend.memory_budget()
    if need_bytes > budget:
        raise ValueError(
            f"--size {max(cfg.resolved_scales())}: needs about {need_bytes / 2**30:.1f} GiB "
            f"({backend.GATYS_BYTES_PER_PIXEL:,} bytes a pixel for VGG forward and backward, plus "
            f"the L-BFGS history), over the {budget / 2**30:.1f} GiB this machine can give "
            f"({backend.MEMORY_SHARE:.0%} of its memory); use a smaller --size or fewer images "
            f"of one shape"
        )


def stylize_images(
    contents: Sequence[np.ndarray],
    styles: Sequence[np.ndarray],
    cfg: GatysConfig,
    *,
    weights: str | os.PathLike | None = None,
    progress: bool = False,
    on_save: Callable[[int, int, np.ndarray], None] | None = None,
    callback: Callable[[int, int, dict[str, float], np.ndarray], None] | None = None,
    callback_every: int = 1,
):
    """Loads the loss network and runs Gatys' method on checked, decoded images.

    What :func:`stylize` and ``jaxstyle stylize`` run after :func:`check_stylize`.

    Args:
        contents: float32 H x W x 3 images in [0, 1] (same-shape ones are optimised together).
        styles: the same for the style images.
        cfg: the settings.
        weights: a VGG weights file (``--weights``); ``None``: the cache, fetched on first use.
        progress: progress bars (fetching weights, iterations) on stderr.
        on_save: see :func:`jaxstyle.gatys.stylize`.
        callback: ``callback(content_index, iteration, losses, image)``; see
            :func:`jaxstyle.gatys.stylize`.
        callback_every: iterations between callbacks.

    Returns:
        The :class:`jaxstyle.gatys.GatysResult`.
    """
    from jaxstyle import gatys
    from jaxstyle.weights import load_vgg

    net = load_vgg(
        cfg.net, cfg.pooling, None if weights is None else os.fspath(weights), progress=progress
    )
    return gatys.stylize(
        list(contents),
        list(styles),
        net,
        cfg,
        progress=progress,
        on_save=on_save,
        callback=callback,
        callback_every=callback_every,
    )


def stylize(
    content: ImageLike,
    style: ImageLike | Sequence[ImageLike],
    *,
    weights: str | os.PathLike | None = None,
    callback: Callable[[int, dict[str, float], np.ndarray], None] | None = None,
    callback_every: int = 1,
    progress: bool = False,
    **options: Any,
) -> np.ndarray:
    """Gatys' iterative style transfer of one content image: ``jaxstyle stylize`` in Python.

    Args:
        content: an H x W x 3 array (``uint8``, or float in [0, 1]) or an image path.
        style: one style image (array or path) or a list of them (blended, see
            ``style_blend_weights``).
        weights: a VGG weights file (``--weights``); ``None``: the cache, fetched on first use.
        callback: called as ``callback(iteration, losses, image)`` every ``callback_every``
            iterations and after each scale's last one. ``iteration`` counts over all scales
            (iteration ``k`` of scale ``s`` is ``s * iterations + k``); ``losses`` is the
            log's record of that iteration: ``total`` (the weighted sum), the unweighted
            ``content``, ``style`` and ``tv`` terms, ``function_evaluations``, ``scale``;
            ``image`` is the result so far (the best iterate, post-processed as the output),
            float32 H x W x 3 at the current scale.
            Each call copies the image from the device and ends a chunk of iterations (with
            ``loop="device"``, one compiled loop per ``callback_every`` iterations instead of
            per ``progress_every``). On 2 CPU cores a call costs 1.8 ms at 128-512 px against
            0.95 s an iteration at 128 px; on a GPU, where iterations take milliseconds, each
            call adds a host round trip: raise ``callback_every`` there.
        callback_every: iterations between callbacks (>= 1).
        progress: progress bars on stderr (weights download, iterations).
        **options: every ``jaxstyle stylize`` flag, as a keyword with the flag's name in
            snake case and the same default: the fields of
            :class:`jaxstyle.configs.GatysConfig` (``size=512``, ``iterations=500``,
            ``style_weight=10.0``, ``style_layers=("relu1_1", ...)``, ``init="content"``, ...).
            List-valued options take a sequence or a comma-separated string.

    Returns:
        The stylised image, float32 H x W x 3 in [0, 1], ``size`` pixels on its long side.
        A run that ended badly (a final loss that is not finite, or restarts used up; the CLI
        exits 1) returns its best iterate and issues a ``RuntimeWarning`` saying why.

    Raises:
        TypeError: an unknown keyword (named, with the valid ones listed) or a wrong type.
        ValueError: an impossible setting, an image too small for the layers, a run over the
            memory budget, a bad array.
        jaxstyle.images.ImageError: a missing or unreadable image file.
        jaxstyle.weights.WeightsError: a missing or unreadable weights file.
    """
    cfg = config_from_kwargs(GatysConfig, options, also=STYLIZE_KEYWORDS)
    if isinstance(callback_every, bool) or not isinstance(callback_every, int):
        raise TypeError(f"callback_every: expected an int, got {callback_every!r}")
    if callback_every < 1:
        raise ValueError(f"callback_every must be >= 1, got {callback_every}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable, got {callback!r}")
    cfg.validate()
    many = isinstance(style, list | tuple)
    style_list = list(style) if many else [style]
    c_item = _open(content, "content")
    s_items = [_open(s, f"style {k}" if many else "style") for k, s in enumerate(style_list)]
    check_stylize(
        [_named_shape(c_item, "content")],
        [_named_shape(s, f"style {k}" if many else "style") for k, s in enumerate(s_items)],
        cfg,
    )
    top = max(cfg.resolved_scales())
    style_top = max(16, round(top * cfg.style_scale))

    def decode(item, long_side):  # files at the largest size used, as the CLI loads them
        return imlib.load_image(item.path, long_side) if isinstance(item, ImageFile) else item

    wrapped = None
    if callback is not None:

        def wrapped(_index: int, iteration: int, losses: dict, image: np.ndarray) -> None:
            callback(iteration, losses, image)

    result = stylize_images(
        [decode(c_item, top)],
        [decode(s, style_top) for s in s_items],
        cfg,
        weights=weights,
        progress=progress,
        callback=wrapped,
        callback_every=callback_every,
    )
    for reason in result.failed:
        warnings.warn(f"stylize: {reason}; returning the best iterate", RuntimeWarning, 2)
    return result.images[0]


# ---------------------------------------------------------------------------------------------
# Feed-forward models.

#: How :func:`check_apply` names each option in its messages: here, as the API's keywords
#: (``jaxstyle apply`` passes its flags' names; ``smaller`` is how to make an image smaller).
KEYWORD_NAMES: Mapping[str, str] = {
    "style_index": "style_index",
    "style_mix": "style_mix",
    "styles": "styles",
    "style_weights": "style_weights",
    "alpha": "alpha",
    "style_size": "style_size",
    "preserve_colors": "preserve_colors",
    "batch_size": "batch_size",
    "bucket": "bucket",
    "smaller": "smaller images",
}
_MULTISTYLE_OPTIONS = ("style_index", "style_mix")
_ADAIN_OPTIONS = ("styles", "style_weights", "alpha", "style_size")
#: AdaIN's defaults of the options that only it takes.
DEFAULT_ALPHA = 1.0
DEFAULT_STYLE_SIZE = 512


@dataclasses.dataclass(frozen=True)
class ApplyRequest:
    """A checked :meth:`Model.__call__`: the images opened (arrays converted, files known by
    their headers) and the options resolved; made by :func:`check_apply`, run by
    :meth:`Model.run`."""

    kind: str
    model: str  # the model's name in messages
    images: list[np.ndarray | ImageFile]
    form: str  # what to return: "one" image, a "list", or a stacked "array"
    style_index: int | None
    style_mix: tuple[float, ...] | None
    styles: list[np.ndarray | ImageFile]  # AdaIN; files are loaded at style_size
    style_weights: tuple[float, ...] | None
    alpha: float
    style_size: int | None  # None: each style image at its own size
    preserve_colors: str
    batch_size: int
    bucket: int


def _check_style_weights(weights: Sequence[float] | None, n: int, names: Mapping[str, str]):
    if weights is None:
        return None
    try:
        values = tuple(float(v) for v in weights)
    except (TypeError, ValueError):
        raise ValueError(f"{names['style_weights']}: not numbers: {weights!r}") from None
    flag = names["style_weights"]
    if len(values) != n:
        raise ValueError(f"{flag} has {len(values)} values for {n} style images")
    if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        shown = ",".join(f"{v:g}" for v in values)
        raise ValueError(f"{flag} must be finite, >= 0 and not all 0, got {shown}")
    return values


def _check_options(kind: str, model: str, opts: dict[str, Any], names: Mapping[str, str]):
    """The rules of which options fit which kind of model, and their ranges."""
    from jaxstyle.inference import PRESERVE_COLORS

    for key in ("batch_size", "bucket"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{names[key]}: expected an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{names[key]} must be >= 1, got {value}")
    if opts["preserve_colors"] not in PRESERVE_COLORS:
        raise ValueError(
            f"{names['preserve_colors']} must be one of {', '.join(PRESERVE_COLORS)}, got "
            f"{opts['preserve_colors']!r}"
        )
    if kind != "multistyle":
        for key in _MULTISTYLE_OPTIONS:
            if opts[key] is not None:
                raise ValueError(
                    f"{names[key]} is for multi-style networks; {model} is a {kind} model"
                )
    elif (opts["style_index"] is None) == (opts["style_mix"] is None):
        raise ValueError(
            f"{model} is a multi-style network: give {names['style_index']} or {names['style_mix']}"
        )
    if kind != "adain":
        for key in _ADAIN_OPTIONS:
            if opts[key] is not None:
                raise ValueError(f"{names[key]} is for AdaIN models; {model} is a {kind} network")
        return
    if not opts["styles"]:
        raise ValueError(f"{model} is an AdaIN model: give style images with {names['styles']}")
    alpha = opts["alpha"]
    if alpha is not None and not 0.0 <= alpha <= 1.0:  # NaN fails too
        raise ValueError(f"{names['alpha']} must be in [0, 1], got {alpha}")
    size = opts["style_size"]
    if size is not None and size < 0:
        raise ValueError(f"{names['style_size']} must be >= 0, got {size}")


def _check_memory(items: Sequence[tuple[str, tuple[int, int]]], batch_size, bucket, names):
    """The largest padded image times the batch size must fit the memory budget."""
    from jaxstyle import backend

    def padded(item):
        h, w = item[1]
        return math.ceil(h / bucket) * bucket * math.ceil(w / bucket) * bucket

    name, (h, w) = biggest = max(items, key=padded)
    batch = min(batch_size, len(items))
    need = padded(biggest) * batch * backend.JOHNSON_BYTES_PER_PIXEL
    budget = backend.memory_budget()
    if need > budget:
        raise ValueError(
            f"{name}: {w}x{h} in batches of {batch} needs about {need / 2**30:.1f} GiB, over the "
            f"{budget / 2**30:.1f} GiB this machine can give; use {names['smaller']} or "
            f"{names['batch_size']} 1"
        )


def check_apply(
    kind: str,
    model: str,
    images: Any,
    *,
    style_index: int | None = None,
    style_mix: Sequence[float] | None = None,
    styles: Sequence[ImageLike] | None = None,
    style_weights: Sequence[float] | None = None,
    alpha: float | None = None,
    style_size: int | None = None,
    preserve_colors: str = "none",
    batch_size: int = 8,
    bucket: int = 64,
    names: Mapping[str, str] = KEYWORD_NAMES,
) -> ApplyRequest:
    """Checks a feed-forward call before the model is loaded: which options fit ``kind``, their
    ranges, every image (arrays converted, files by their headers), AdaIN's minimum sizes and
    the memory budget. ``jaxstyle apply`` calls it with its flags' names (``names``, keyed
    as :data:`KEYWORD_NAMES`) so that its messages name flags.

    Arguments as :meth:`Model.__call__`, plus the model's ``kind`` and ``model`` (its name in
    messages).

    Raises:
        ValueError: an option that does not fit the kind, or is out of range; an image too
            small, or a batch over the memory budget.
        TypeError: an option of the wrong type.
        jaxstyle.images.ImageError: a missing or unreadable image file.
    """
    from jaxstyle.nets.adain import MIN_SIDE

    if _is_path(styles) or (isinstance(styles, np.ndarray) and styles.ndim != 4):
        styles = [styles]  # one style image
    elif isinstance(styles, np.ndarray):
        styles = list(styles)
    opts = dict(
        style_index=style_index,
        style_mix=style_mix,
        styles=styles,
        style_weights=style_weights,
        alpha=alpha,
        style_size=style_size,
        preserve_colors=preserve_colors,
        batch_size=batch_size,
        bucket=bucket,
    )
    _check_options(kind, model, opts, names)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        form, items = "array", [_open(x, f"image {i}") for i, x in enumerate(images)]
    elif isinstance(images, list | tuple):
        form, items = "list", [_open(x, f"image {i}") for i, x in enumerate(images)]
    else:
        form, items = "one", [_open(images, "image")]
    shapes = [
        _named_shape(x, f"image {i}" if form != "one" else "image") for i, x in enumerate(items)
    ]
    style_items: list[np.ndarray | ImageFile] = []
    size = None
    if kind == "adain":
        size = DEFAULT_STYLE_SIZE if style_size is None else style_size or None
        style_items = [_open(s, f"style {k}") for k, s in enumerate(styles)]
        style_shapes = [_named_shape(s, f"style {k}") for k, s in enumerate(style_items)]
        if size is not None:  # enlarged too: a file's header shape is not the loaded one
            style_shapes = [(n, imlib.size_for_long_side(s, size)) for n, s in style_shapes]
        for name, (h, w) in [*shapes, *style_shapes]:
            if min(h, w) < MIN_SIDE:
                raise ValueError(
                    f"{name}: {w}x{h} is too small for the AdaIN encoder (each side at least "
                    f"{MIN_SIDE} px)"
                )
        # AdaIN runs each image alone, unpadded (bucket 1); styles are encoded the same way.
        if shapes:
            _check_memory([*shapes, *style_shapes], 1, 1, names)
    elif shapes:
        _check_memory(shapes, batch_size, max(4, bucket), names)
    return ApplyRequest(
        kind=kind,
        model=model,
        images=items,
        form=form,
        style_index=style_index,
        style_mix=None if style_mix is None else tuple(style_mix),
        styles=style_items,
        style_weights=_check_style_weights(style_weights, len(style_items), names),
        alpha=DEFAULT_ALPHA if alpha is None else float(alpha),
        style_size=size,
        preserve_colors=preserve_colors,
        batch_size=batch_size,
        bucket=bucket,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A trained feed-forward network of any kind, from :func:`load_model`; call it on images.

    Attributes:
        kind: ``johnson`` (one style), ``multistyle`` (several, chosen or mixed per call) or
            ``adain`` (any style, given per call).
        params: the network's parameters (a pytree of arrays).
        config: the architecture (:class:`~jaxstyle.nets.transformer_net.NetConfig`);
            ``None`` for ``adain`` (a fixed layout).
        metadata: the model file's metadata (or the workdir's training record).
        name: the path it was loaded from, as given (it names the model in messages).
    """

    kind: str
    params: Any = dataclasses.field(repr=False)
    config: Any
    metadata: dict[str, Any] = dataclasses.field(repr=False)
    name: str = ""

    @property
    def style_names(self) -> list[str]:
        """The style of each row of a ``multistyle`` network (file names, row order, what
        ``style_index`` picks); a ``johnson`` network's one style; ``[]`` for ``adain``."""
        from jaxstyle import models

        if self.kind == "multistyle":
            return models.style_names(self.metadata)
        if self.kind == "johnson":
            style = self.metadata.get("style")
            return [Path(style).name] if style else []
        return []

    def __call__(
        self,
        images: Any,
        *,
        style_index: int | None = None,
        style_mix: Sequence[float] | None = None,
        styles: ImageLike | Sequence[ImageLike] | None = None,
        style_weights: Sequence[float] | None = None,
        alpha: float | None = None,
        style_size: int | None = None,
        preserve_colors: str = "none",
        batch_size: int = 8,
        bucket: int = 64,
        on_done: Callable[[int, np.ndarray], None] | None = None,
    ) -> np.ndarray | list[np.ndarray] | None:
        """Stylises one image or a batch; each output equals the network applied to that
        image alone, whatever the batching (see :func:`jaxstyle.inference.apply_images`).

        Args:
            images: one image (an H x W x 3 array, ``uint8`` or float in [0, 1], or a path):
                returns one H x W x 3 array. An N x H x W x 3 array: returns an N x H x W x 3
                array. A list (or tuple) of arrays and paths of any sizes: returns a list, each
                output the size of its input. Files are decoded one batch at a time.
            style_index: a ``multistyle`` network's style (0-based; see :attr:`style_names`).
            style_mix: a ``multistyle`` network's blend of its styles: one weight >= 0 per
                style, normalised to sum 1. Exactly one of the two is needed.
            styles: an ``adain`` model's style image(s), arrays or paths (required).
            style_weights: ``adain``: one weight >= 0 per style, normalised (default: equal).
            alpha: ``adain``: strength in [0, 1] (default 1.0).
            style_size: ``adain``: each style's long side is resized to this before encoding;
                0 keeps its own size (default 512).
            preserve_colors: ``none``, ``luminance`` or ``histogram``
                (:func:`jaxstyle.inference.keep_colors`; AdaIN recolours its styles instead).
            batch_size: images per batch (``johnson``/``multistyle``; AdaIN runs one at a time).
            bucket: sizes are padded up to a multiple of this, one compiled program per bucket;
                the padding changes no output.
            on_done: called as ``on_done(index, output)`` as each image finishes; outputs are
                then handed over, not kept, and the call returns ``None``.

        The AdaIN options default to ``None`` (meaning 1.0 and 512) so that passing one to a
        model of another kind is refused, as is ``style_index``/``style_mix`` to a model that
        is not ``multistyle``: a ``ValueError`` in one line, as ``jaxstyle apply`` says it.

        Raises:
            ValueError: an option that does not fit the model's kind or is out of range, a bad
                array, an image too small or a batch over the memory budget.
            jaxstyle.images.ImageError: a missing or unreadable image file.
        """
        request = check_apply(
            self.kind,
            self.name,
            images,
            style_index=style_index,
            style_mix=style_mix,
            styles=styles,
            style_weights=style_weights,
            alpha=alpha,
            style_size=style_size,
            preserve_colors=preserve_colors,
            batch_size=batch_size,
            bucket=bucket,
        )
        return self.run(request, on_done=on_done)

    def check(self, request: ApplyRequest) -> np.ndarray | None:
        """What only the loaded model can tell about a request from :func:`check_apply`: a
        multi-style network's style index or mix against its rows.

        Returns:
            The style weights of a multi-style network
            (:func:`~jaxstyle.nets.transformer_net.style_vector`); ``None`` for other kinds.

        Raises:
            ValueError: an index out of range or a mix of the wrong length (the message lists
                the network's styles), or a request checked for another kind of model.
        """
        from jaxstyle import models
        from jaxstyle.nets.transformer_net import style_vector

        if request.kind != self.kind:
            raise ValueError(f"a request for a {request.kind} model given to a {self.kind} model")
        if self.kind != "multistyle":
            return None
        try:
            return style_vector(self.config.num_styles, request.style_index, request.style_mix)
        except ValueError as e:
            names = models.style_names(self.metadata)
            listing = ", ".join(f"{i} {n}" for i, n in enumerate(names))
            raise ValueError(f"{e}; {self.name} has styles {listing}") from None

    def run(
        self, request: ApplyRequest, *, on_done: Callable[[int, np.ndarray], None] | None = None
    ) -> np.ndarray | list[np.ndarray] | None:
        """Runs a request from :func:`check_apply` (what :meth:`__call__` does after checking);
        ``jaxstyle apply`` checks before it loads the model, then calls :meth:`check` and
        this."""
        from jaxstyle import inference

        style = self.check(request)
        if not request.images:
            return [] if request.form == "list" else np.zeros((0, 0, 0, 3), np.float32)
        if self.kind == "adain":
            styles = [
                inference.load_style(s.path, request.style_size)
                if isinstance(s, ImageFile)
                else _style_at(s, request.style_size)
                for s in request.styles
            ]
            out = inference.apply_adain(
                self.params,
                request.images,
                styles,
                alpha=request.alpha,
                style_weights=request.style_weights,
                preserve_colors=request.preserve_colors,
                on_done=on_done,
            )
        else:
            out = inference.apply_images(
                self.params,
                self.config,
                request.images,
                batch_size=request.batch_size,
                bucket=request.bucket,
                style=style,
                preserve_colors=request.preserve_colors,
                on_done=on_done,
            )
        if on_done is not None:
            return None
        if request.form == "one":
            return out[0]
        return np.stack(out) if request.form == "array" else out


def _style_at(image: np.ndarray, style_size: int | None) -> np.ndarray:
    """An array style as :func:`jaxstyle.inference.load_style` gives a file's."""
    if style_size is not None and max(image.shape[:2]) != style_size:
        return imlib.resize_long_side(image, style_size)
    return image


def load_model(path: str | os.PathLike) -> Model:
    """A trained network from a model file (``jaxstyle export``, ``weights_convert adain``) or
    a training workdir (its latest checkpoint), of any kind.

    Every tensor is checked against the architecture its metadata records.

    Raises:
        jaxstyle.models.ModelError: a missing, foreign, truncated or inconsistent file, or a
            folder that is not a training workdir.
    """
    from jaxstyle import inference

    kind, params, config, meta = inference.load_any(path)
    return Model(kind=kind, params=params, config=config, metadata=dict(meta), name=str(path))
