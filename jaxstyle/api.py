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
    from jaxstyle.gatys import tiles
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
    if cfg.style_masks:
        _check_style_masks(cfg, len(styles))
    largest: dict[tuple[int, int], int] = {}  # same-shape contents run together
    for _, shape in contents:
        hw = size_for_long_side(shape, max(cfg.resolved_scales()))
        largest[hw] = largest.get(hw, 0) + hw[0] * hw[1]
    hw, pixels = max(largest.items(), key=lambda kv: kv[1])
    budget = tiles.budget(cfg)
    where = "--max-memory" if cfg.max_memory else "this machine can give"
    tiling = tiles.plan(cfg, hw, pixels // (hw[0] * hw[1]))
    if tiling is not None:  # tiled: the network's memory follows the window, not the image
        cpu = backend.on_cpu()  # (off CPU the window is on the device, the image on the host)
        host = tiles.host_bytes(pixels) + (tiles.PROCESS_BYTES if cpu else 0)
        host_budget = budget if cpu else int(backend.MEMORY_SHARE * imlib.physical_memory())
        if host > host_budget:
            raise ValueError(
                f"--size {max(cfg.resolved_scales())}: even in tiles, the process and the whole "
                f"image's copies in host memory need about {host / 2**30:.1f} GiB "
                f"({tiles.HOST_BYTES_PER_PIXEL} bytes a pixel), over the "
                f"{host_budget / 2**30:.1f} GiB {where}; use a smaller --size"
            )
        image_px = pixels if cpu else 0  # what shares the budget with the window
        need_bytes = tiles.window_bytes(tiling, cfg, image_px)
        if need_bytes > budget:
            fits = tiles.auto_tile(cfg, image_px)
            side = fits + 2 * cfg.tile_halo
            ok = tiles.tiled_bytes(side * side, image_px, cfg) <= budget
            hint = (
                f"use --tile {fits} or smaller"
                if ok and fits < tiling.tile
                else ("use a smaller --size or --tile-halo")
            )
            raise ValueError(
                f"--tile {tiling.tile}: a window of {tiling.window[1]}x{tiling.window[0]} px "
                f"(the tile and its --tile-halo {tiling.halo}) and the image's copies need "
                f"about {need_bytes / 2**30:.1f} GiB, over the {budget / 2**30:.1f} GiB "
                f"{where}; {hint}"
            )
        return
    need_bytes = backend.gatys_bytes(pixels, cfg.history_size)
    if need_bytes > budget:
        raise ValueError(
            f"--size {max(cfg.resolved_scales())}: needs about {need_bytes / 2**30:.1f} GiB "
            f"({backend.GATYS_BYTES_PER_PIXEL:,} bytes a pixel for VGG forward and backward, plus "
            f"the L-BFGS history), over the {budget / 2**30:.1f} GiB {where}; use a smaller "
            f"--size, fewer images of one shape, or tiles (--tile)"
        )


def _check_style_masks(cfg: GatysConfig, n_styles: int) -> None:
    """One readable mask image per style image (headers only)."""
    if len(cfg.style_masks) != n_styles:
        raise ValueError(
            f"--style-masks: {len(cfg.style_masks)} masks for {n_styles} style images (one "
            f"mask per style image)"
        )
    for path in cfg.style_masks:
        try:
            imlib.image_shape(path)
        except imlib.ImageError as e:
            raise imlib.ImageError(f"--style-masks: {e}") from None


def load_style_masks(paths: Sequence[str], shape: Sequence[int]) -> np.ndarray:
    """The style masks as one (H, W, S) float32 array in [0, 1] at a content image's size:
    each file's luminance (a colour or RGBA file is converted as any image is: composited
    over white), resized to ``shape``.

    Raises:
        jaxstyle.images.ImageError: an unreadable file.
        ValueError: a mask that is black everywhere (its style would have no region).
    """
    masks = []
    for path in paths:
        try:
            rgb = imlib.load_image(path, max(int(shape[0]), int(shape[1])))
        except imlib.ImageError as e:
            raise imlib.ImageError(f"--style-masks: {e}") from None
        gray = imlib.rgb_to_yiq(imlib.resize(rgb, int(shape[0]), int(shape[1])))[..., 0]
        gray = np.clip(gray, 0.0, 1.0).astype(np.float32)
        if float(gray.max()) <= 0.0:
            raise ValueError(f"--style-masks: {path} is black everywhere; its style has no region")
        masks.append(gray)
    return np.stack(masks, axis=-1)


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

    aux = None
    if cfg.style_masks:  # before the weights are loaded: a bad mask fails first
        aux = [{"style_masks": load_style_masks(cfg.style_masks, c.shape[:2])} for c in contents]
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
        aux=aux,
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
    "tile": "tile",
    "max_memory": "max_memory",
    "mask": "mask",
    "mask_style_index": "mask_style_index",
    "mask_style": "mask_style",
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
    # Tiling (jaxstyle.tiling): per image, its plan, or None to run it whole.
    plans: tuple[Any, ...] = ()
    tile: int | None = None
    max_memory: int = 0
    alphas: tuple[np.ndarray | None, ...] = ()  # arrays' alpha (files: ImageFile.alpha)
    mask: np.ndarray | None = None  # HW in [0, 1]: 1 stylised, 0 the other image
    mask_style_index: int | None = None
    mask_styles: list[np.ndarray | ImageFile] = dataclasses.field(default_factory=list)


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


def _memory_plans(
    kind: str,
    config: Any,
    items: Sequence[tuple[str, tuple[int, int]]],
    batch_size: int,
    bucket: int,
    tile: int | None,
    max_memory: int,
    names: Mapping[str, str],
) -> tuple[tuple[Any, ...], int]:
    """Which images run whole and which tiled (and how), and the batch size of the whole ones.

    ``tile`` ``None``: an image runs whole when one image of its padded size fits
    ``max_memory``, else tiled (:func:`jaxstyle.tiling.plan`); whole images run in batches of
    up to ``batch_size`` that fit. ``0``: never tiled (an image over the limit is refused).
    ``N``: every image tiled with N-pixel tiles.
    """
    from jaxstyle import backend, tiling

    def padded(shape):
        h, w = shape
        return math.ceil(h / bucket) * bucket * math.ceil(w / bucket) * bucket

    # Johnson's measured figure; AdaIN's (VGG19 down and up) is about twice it.
    per_image = backend.JOHNSON_BYTES_PER_PIXEL
    if kind == "adain":
        per_image = tiling.BYTES_PER_WINDOW_PIXEL["adain"]
    plans = []
    for name, shape in items:
        need = padded(shape) * per_image
        if tile == 0 and need > max_memory:
            h, w = shape
            raise ValueError(
                f"{name}: {w}x{h} in batches of 1 needs about {need / 2**30:.1f} GiB, over the "
                f"{max_memory / 2**30:.1f} GiB memory limit; use {names['smaller']}, a larger "
                f"{names['max_memory']} or tiling ({names['tile']} N)"
            )
        if tile == 0 or (tile is None and need <= max_memory):
            plans.append(None)
            continue
        try:
            plans.append(tiling.plan(kind, config, shape, max_memory, tile, batch_size))
        except ValueError as e:
            raise ValueError(
                f"{name}: {e}; use {names['smaller']} or {names['max_memory']}"
            ) from None
    whole = [padded(s) for (_, s), p in zip(items, plans, strict=True) if p is None]
    batch = min(batch_size, max(1, max_memory // (max(whole, default=1) * per_image)))
    return tuple(plans), batch


def _check_tile(kind: str, config: Any, tile: Any, max_memory: Any, names) -> tuple[Any, int]:
    """``tile`` and ``max_memory`` checked; the limit in bytes (default on CPU: the smaller
    of :data:`jaxstyle.tiling.DEFAULT_MAX_MEMORY` and what the machine can give; on a GPU or
    TPU: :func:`jaxstyle.backend.memory_budget`, its own memory)."""
    from jaxstyle import backend, tiling

    if tile is not None:
        if isinstance(tile, bool) or not isinstance(tile, int):
            raise TypeError(f"{names['tile']}: expected an int, got {tile!r}")
        smallest = tiling.min_tile(kind, config)
        if tile < 0 or 0 < tile < smallest:
            raise ValueError(
                f"{names['tile']} {tile}: tiles must be at least {smallest} px for this network "
                f"(its receptive field), or 0 for no tiling"
            )
    if max_memory is None:  # a laptop's share on CPU; an accelerator's own budget
        if not backend.on_cpu():
            return tile, backend.memory_budget()
        return tile, min(tiling.DEFAULT_MAX_MEMORY, backend.memory_budget())
    try:
        return tile, tiling.parse_bytes(max_memory)
    except ValueError as e:
        raise ValueError(f"{names['max_memory']}: {e}") from None


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
    tile: int | None = None,
    max_memory: int | str | None = None,
    mask: Any = None,
    mask_style_index: int | None = None,
    mask_style: ImageLike | None = None,
    config: Any = None,
    names: Mapping[str, str] = KEYWORD_NAMES,
) -> ApplyRequest:
    """Checks a feed-forward call before the model is loaded: which options fit ``kind``, their
    ranges, every image (arrays converted, files by their headers), AdaIN's minimum sizes and
    the memory budget. ``jaxstyle apply`` calls it with its flags' names (``names``, keyed
    as :data:`KEYWORD_NAMES`) so that its messages name flags.

    Arguments as :meth:`Model.__call__`, plus the model's ``kind``, ``model`` (its name in
    messages) and ``config`` (its architecture, which sets the tiles' context; ``None``:
    the full network's, which :meth:`Model.check` revises once the model is loaded).

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
    if kind != "adain" and config is None:
        from jaxstyle.nets.transformer_net import FULL as config
    tile, limit = _check_tile(kind, config, tile, max_memory, names)
    other = _check_mask_options(kind, model, mask, mask_style_index, mask_style, names)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        form, raw = "array", list(images)
    elif isinstance(images, list | tuple):
        form, raw = "list", list(images)
    else:
        form, raw = "one", [images]
    alphas = []  # an RGBA array runs composited over white; its alpha goes back on the output
    for k, x in enumerate(raw):
        a = None
        if isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[-1] == 4:
            rgba = to_image(x[..., :3], f"image {k}" if form != "one" else "image")
            opacity = to_image(np.repeat(x[..., 3:], 3, -1), "alpha")[..., 0]
            x, a = imlib.split_alpha(np.concatenate([rgba, opacity[..., None]], -1))
        raw[k] = x
        alphas.append(a)
    items = [_open(x, f"image {i}" if form != "one" else "image") for i, x in enumerate(raw)]
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
        # AdaIN runs each image alone, unpadded (bucket 1); styles are encoded whole.
        _memory_plans(kind, None, style_shapes, 1, 1, 0, limit, names)
        plans, batch = _memory_plans(kind, None, shapes, 1, 1, tile, limit, names)
    else:
        plans, batch = _memory_plans(
            kind, config, shapes, batch_size, max(4, bucket), tile, limit, names
        )
    mask_styles = []
    if other is not None:
        mask_styles = [_open(other, names["mask_style"])]
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
        batch_size=batch,
        bucket=bucket,
        plans=plans,
        tile=tile,
        max_memory=limit,
        alphas=tuple(alphas),
        mask=None if mask is None else _load_mask(mask, names["mask"]),
        mask_style_index=mask_style_index,
        mask_styles=mask_styles,
    )


def _load_mask(mask: Any, name: str) -> np.ndarray:
    from jaxstyle.inference import load_mask

    return load_mask(mask, name)


def _check_mask_options(kind, model, mask, index, style, names) -> Any:
    """The mask's options against the model's kind; the AdaIN style the 0-region gets."""
    if mask is None:
        for key, value in (("mask_style_index", index), ("mask_style", style)):
            if value is not None:
                raise ValueError(f"{names[key]} goes with {names['mask']}")
        return None
    if index is not None:
        if kind != "multistyle":
            raise ValueError(
                f"{names['mask_style_index']} is for multi-style networks; {model} is a {kind} "
                f"model"
            )
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"{names['mask_style_index']}: expected an int, got {index!r}")
    if style is not None and kind != "adain":
        raise ValueError(f"{names['mask_style']} is for AdaIN models; {model} is a {kind} model")
    return style


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
        tile: int | None = None,
        max_memory: int | str | None = None,
        mask: ImageLike | None = None,
        mask_style_index: int | None = None,
        mask_style: ImageLike | None = None,
        progress: bool = False,
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
            tile: ``None`` (default): an image too large for ``max_memory`` whole runs in
                tiles (:mod:`jaxstyle.tiling`; the same output, whole-image statistics);
                ``0``: never tiled (too large is an error); ``N``: tiles of N pixels (at least
                the network's receptive field, :func:`jaxstyle.tiling.min_tile`).
            max_memory: the memory an image's run may plan to use: bytes, or a string such as
                ``"2GiB"`` or ``"800MiB"`` (default: 2 GiB, less on a smaller machine).
            mask: an HW array (``uint8``, or float in [0, 1]) or a grayscale image file,
                resized to each image: the output is ``mask * stylised + (1 - mask) * other``,
                the other being the content (composited over white), unless one of:
            mask_style_index: (``multistyle``) the network's output in this style;
            mask_style: (``adain``) the output with this style image (an array or a path;
                the same alpha, style size and colour option).

        An image with transparency (an H x W x 4 array, or a file with alpha) runs composited
        over white and its output has the same alpha as a fourth channel.
            progress: a progress bar on stderr while an image runs in tiles.
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
            tile=tile,
            max_memory=max_memory,
            mask=mask,
            mask_style_index=mask_style_index,
            mask_style=mask_style,
            config=self.config,
        )
        return self.run(request, on_done=on_done, progress=progress)

    def check(self, request: ApplyRequest) -> np.ndarray | None:
        """What only the loaded model can tell about a request from :func:`check_apply`: a
        multi-style network's style index or mix against its rows.

        Returns:
            The style weights of a multi-style network
            (:func:`~jaxstyle.nets.transformer_net.style_vector`); ``None`` for other kinds.

        Raises:
            ValueError: an index out of range or a mix of the wrong length (the message lists
                the network's styles), a request checked for another kind of model, or tiles
                that do not fit this network (checked for the full network's receptive field
                when the request was made without its architecture).
        """
        from jaxstyle import models
        from jaxstyle.nets.transformer_net import style_vector

        if request.kind != self.kind:
            raise ValueError(f"a request for a {request.kind} model given to a {self.kind} model")
        self._plans(request)
        if self.kind != "multistyle":
            return None
        try:
            if request.mask_style_index is not None:
                style_vector(self.config.num_styles, request.mask_style_index)
            return style_vector(self.config.num_styles, request.style_index, request.style_mix)
        except ValueError as e:
            names = models.style_names(self.metadata)
            listing = ", ".join(f"{i} {n}" for i, n in enumerate(names))
            raise ValueError(f"{e}; {self.name} has styles {listing}") from None

    def _plans(self, request: ApplyRequest) -> tuple[Any, ...]:
        """The request's tiling plans, redone for this network's receptive field where the
        request was checked without it (for the full network's)."""
        from jaxstyle import tiling

        plans = list(request.plans)
        for k, p in enumerate(plans):
            if p is None:
                continue
            geo = tiling.geometry(self.kind, self.config, p.geometry.tile)
            if geo.halo != p.geometry.halo:
                item = request.images[k]
                name, shape = _named_shape(item, f"image {k}")
                try:
                    plans[k] = tiling.plan(
                        self.kind, self.config, shape, request.max_memory, request.tile, p.batch
                    )
                except ValueError as e:
                    raise ValueError(f"{name}: {e}") from None
        return tuple(plans)

    def run(
        self,
        request: ApplyRequest,
        *,
        on_done: Callable[[int, np.ndarray], None] | None = None,
        progress: bool = False,
    ) -> np.ndarray | list[np.ndarray] | None:
        """Runs a request from :func:`check_apply` (what :meth:`__call__` does after checking);
        ``jaxstyle apply`` checks before it loads the model, then calls :meth:`check` and
        this. Images run whole in batches, or tiled one at a time (as planned); a mask blends
        each output with the other image; an input's alpha comes back as a fourth channel.
        ``progress``: a progress bar on stderr while an image runs in tiles."""
        from jaxstyle.nets.transformer_net import style_vector

        style = self.check(request)
        plans = self._plans(request)
        if not request.images:
            return [] if request.form == "list" else np.zeros((0, 0, 0, 3), np.float32)
        styles = [self._style(s, request.style_size) for s in request.styles]
        out: list[np.ndarray | None] = [None] * len(request.images)

        def finish(i: int, y: np.ndarray, other: np.ndarray | None = None) -> None:
            item = request.images[i]
            if request.mask is not None:
                if other is None:  # the content itself
                    other = item.load() if isinstance(item, ImageFile) else item
                y = _blend(y, other, request.mask)
            alpha = request.alphas[i] if request.alphas else None
            if isinstance(item, ImageFile) and item.alpha:
                alpha = item.load_alpha()
            y = imlib.with_alpha(y, alpha)
            if on_done is None:
                out[i] = y
            else:
                on_done(i, y)

        everyone = list(range(len(request.images)))
        if request.mask_style_index is None and not request.mask_styles:
            self._apply(request, plans, everyone, style, styles, None, finish, progress)
        else:  # image by image: the other style's output, then the output blended over it
            if request.mask_styles:
                o_style, o_styles = None, [self._style(request.mask_styles[0], request.style_size)]
            else:
                o_style, o_styles = (
                    style_vector(self.config.num_styles, request.mask_style_index),
                    [],
                )
            for i in everyone:
                others: dict[int, np.ndarray] = {}
                self._apply(
                    request, plans, [i], o_style, o_styles, (), others.__setitem__, progress
                )
                self._apply(
                    request,
                    plans,
                    [i],
                    style,
                    styles,
                    None,
                    lambda k, y, others=others: finish(k, y, others.pop(k)),
                    progress,
                )
        if on_done is not None:
            return None
        if request.form == "one":
            return out[0]
        return np.stack(out) if request.form == "array" else out

    def _style(self, s: np.ndarray | ImageFile, style_size: int | None) -> np.ndarray:
        from jaxstyle import inference

        if isinstance(s, ImageFile):
            return inference.load_style(s.path, style_size)
        return _style_at(s, style_size)

    def _apply(self, request, plans, indices, style, styles, weights, done, progress) -> None:
        """Stylises ``request.images[indices]``: whole ones batched, tiled ones one by one;
        ``done(index, output)`` as each finishes. ``weights``: AdaIN's style weights
        (``()`` for equal ones; ``None`` for the request's)."""
        from jaxstyle import inference, tiling
        from jaxstyle.nets import adain

        weights = request.style_weights if weights is None else (weights or None)
        whole = [i for i in indices if plans[i] is None]
        tiled = [i for i in indices if plans[i] is not None]
        images = request.images
        if whole and self.kind == "adain":
            inference.apply_adain(
                self.params,
                [images[i] for i in whole],
                styles,
                alpha=request.alpha,
                style_weights=weights,
                preserve_colors=request.preserve_colors,
                on_done=lambda j, y: done(whole[j], y),
            )
        elif whole:
            inference.apply_images(
                self.params,
                self.config,
                [images[i] for i in whole],
                batch_size=request.batch_size,
                bucket=request.bucket,
                style=style,
                preserve_colors=request.preserve_colors,
                on_done=lambda j, y: done(whole[j], y),
            )
        for i in tiled:
            content = images[i].load() if isinstance(images[i], ImageFile) else images[i]
            if self.kind == "adain":
                own = styles
                if request.preserve_colors == "histogram":  # as apply_adain: styles recoloured
                    own = [imlib.match_color(s, content) for s in styles]
                mean, std = adain.weighted_stats(self.params, own, weights)
                y = tiling.apply_adain(
                    self.params, content, mean, std, request.alpha, plans[i], progress=progress
                )
                if request.preserve_colors == "luminance":
                    y = inference.keep_colors(y, content, "luminance")
            else:
                y = tiling.apply_johnson(
                    self.params, self.config, content, plans[i], style=style, progress=progress
                )
                y = inference.keep_colors(y, content, request.preserve_colors)
            done(i, y)


def _blend(y: np.ndarray, other: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from jaxstyle.inference import blend

    return blend(y, other, mask)


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
