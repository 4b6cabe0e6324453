"""Every default of jaxstyle, defined once, as frozen (hashable) dataclasses.

The command-line flags are derived from these fields (``jaxstyle/cli.py``); each field's
``help`` metadata is its flag's help text.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any

GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: The smallest ``--tile`` (a tile smaller than the network's deepest pooling step is all seam).
MIN_TILE = 32


def switched_off(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment variable ``name`` turns a feature that is on by default off:
    ``0``, ``off``, ``false`` or ``no``, in any case, spaces around ignored."""
    return environ.get(name, "1").strip().lower() in ("0", "off", "false", "no")


def check_finite(cfg: Any) -> None:
    """Raises ValueError naming the flag of the first float setting that is NaN or infinite.

    Comparisons with NaN are always false, so a NaN weight slips past every range check: this
    runs before them.
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"--{f.name.replace('_', '-')}: {v} is not a finite number")


def _check_nonnegative(cfg: Any, names: Sequence[str]) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")


def _f(default, help: str, **kw):  # noqa: A002 - mirrors argparse's name
    return field(default=default, metadata={"help": help, **kw})


@dataclasses.dataclass(frozen=True)
class GatysConfig:
    """Settings of iterative style transfer (Gatys, Ecker & Bethge 2015)."""

    net: str = _f(
        "vgg16", "loss network: vgg16 or vgg19 (the paper's choice)", choices=("vgg16", "vgg19")
    )
    size: int = _f(512, "long side of the output in pixels")
    style_scale: float = _f(1.0, "style image long side as a multiple of the output's")
    scales: tuple[int, ...] = _f(
        (),
        "coarse-to-fine long sides, e.g. 256,512 (each initialised from the previous); "
        "default: --size only",
    )
    iterations: int = _f(500, "iterations per scale")
    optimizer: str = _f("lbfgs", "lbfgs (jaxopt L-BFGS) or adam (optax)", choices=("lbfgs", "adam"))
    lr: float = _f(0.02, "Adam learning rate, in [0,1] pixel units per step")
    content_weight: float = _f(1.0, "weight of the content term")
    # Chosen by the sweep in README ("How the default style weight was chosen").
    style_weight: float = _f(10.0, "weight of the style term")
    tv_weight: float = _f(0.0, "weight of the total-variation term (pixels in [0,1])")
    content_layers: tuple[str, ...] = _f(("relu4_2",), "comma-separated content layers")
    style_layers: tuple[str, ...] = _f(GATYS_STYLE_LAYERS, "comma-separated style layers")
    style_layer_weights: tuple[float, ...] = _f(
        (), "comma-separated weight per style layer (default 1 each)"
    )
    style_blend_weights: tuple[float, ...] = _f(
        (), "comma-separated weight per style image, normalised to sum 1 (default equal)"
    )
    pooling: str = _f("max", "max, or avg (Gatys' suggestion)", choices=("max", "avg"))
    init: str = _f("content", "content, noise, style, or an image PATH")
    seed: int = _f(0, "random seed (noise init)")
    preserve_colors: str = _f(
        "none",
        "none; luminance (keep the content's colours); histogram (recolour the style first)",
        choices=("none", "luminance", "histogram"),
    )
    save_every: int = _f(0, "save an intermediate image every N iterations (0: never)")
    linesearch: str = _f(
        "none",
        "L-BFGS line search: none (unit steps, one evaluation per iteration) or zoom",
        choices=("none", "zoom", "backtracking"),
    )
    history_size: int = _f(20, "L-BFGS history (pairs of past steps kept)")
    progress_every: int = _f(10, "iterations per compiled chunk between progress updates")
    loop: str = _f(
        "auto",
        "how a chunk of iterations runs: device (one while_loop program), host (a Python loop "
        "over one compiled step), or auto (the faster on this backend: host on CPU)",
        choices=("auto", "device", "host"),
    )
    tile: int = _f(
        0,
        "optimise scales larger than this many pixels a side in overlapping tiles of this "
        "side, each against the whole style image's Gram matrices (memory bounded by the "
        "tile); 0: only the scales over the memory budget, with tiles that fit it",
    )
    tile_halo: int = _f(
        64, "pixels of context around each tile that the network sees but the tile leaves as is"
    )
    tile_iterations: int = _f(
        10,
        "iterations per tile before the next tile (a sweep); the tile grid shifts by half "
        "a tile between sweeps",
    )
    max_memory: str = _f(
        "",
        "memory the run may plan to use, e.g. 8GiB or 6000 (MiB); scales whose estimate "
        "is over it run in tiles that fit (default: 70 percent of RAM, or of the accelerator's "
        "memory)",
    )
    style_masks: tuple[str, ...] = _f(
        (),
        "one grayscale mask image per style image (white: where that style goes); each "
        "style's Gram matrices are taken over its region only",
        nargs="+",
    )

    def resolved_scales(self) -> tuple[int, ...]:
        return tuple(self.scales) if self.scales else (self.size,)

    def validate(self) -> None:
        """Raises ValueError with a user-facing message for impossible settings."""
        from jaxstyle.nets.vgg import parse_layers

        check_finite(self)
        if self.size < 32 or any(s < 32 for s in self.resolved_scales()):
            raise ValueError("sizes must be at least 32 pixels")
        if self.iterations < 0:
            raise ValueError("--iterations must be >= 0")
        if self.style_scale <= 0:
            raise ValueError("--style-scale must be positive")
        for flag, layers in (("content", self.content_layers), ("style", self.style_layers)):
            try:
                parse_layers(layers, self.net)
            except ValueError as e:
                raise ValueError(f"--{flag}-layers: {e}") from None
        if self.style_layer_weights and len(self.style_layer_weights) != len(self.style_layers):
            raise ValueError(
                f"--style-layer-weights has {len(self.style_layer_weights)} values for "
                f"{len(self.style_layers)} style layers"
            )
        for flag, ws in (("layer", self.style_layer_weights), ("blend", self.style_blend_weights)):
            if any(w < 0 for w in ws) or (ws and sum(ws) <= 0):
                raise ValueError(f"--style-{flag}-weights must be non-negative with a positive sum")
        _check_nonnegative(self, ("content_weight", "style_weight", "tv_weight"))
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
        if self.save_every < 0:
            raise ValueError("--save-every must be >= 0")
        if self.progress_every < 1 or self.history_size < 1:
            raise ValueError("--progress-every and --history-size must be >= 1")
        if self.tile < 0 or 0 < self.tile < MIN_TILE:
            raise ValueError(
                f"--tile {self.tile}: must be 0 (automatic) or at least {MIN_TILE} pixels"
            )
        if self.max_memory:
            from jaxstyle.tiling import parse_bytes

            try:
                parse_bytes(self.max_memory)
            except ValueError as e:
                raise ValueError(f"--max-memory: {e}") from None
        if self.tile_halo < 0 or self.tile_iterations < 1:
            raise ValueError("--tile-halo must be >= 0 and --tile-iterations >= 1")
        if self.style_masks and self.style_blend_weights:
            raise ValueError(
                "--style-masks gives each style its own region; --style-blend-weights does not "
                "apply with them"
            )


JOHNSON_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of feed-forward training (Johnson, Alahi & Fei-Fei 2016).

    The report trained 10,000 iterations of batch 4 at 256 px with content weight 1 and style
    weight 1,000 under its own normalisation; the paper 40,000 iterations (two COCO epochs).
    """

    data: str = _f("folder:images", "training images: tfds:coco/2014 or folder:PATH")
    data_dir: str = _f("", "TFDS data dir (where coco/2014 was prepared)")
    net: str = _f(
        "full",
        "transformation network: full (the paper's) or tiny (tests)",
        choices=("full", "tiny"),
    )
    upsample: str = _f(
        "nearest",
        "nearest (+conv) or transpose (the paper's strided conv)",
        choices=("nearest", "transpose"),
    )
    image_size: int = _f(256, "training crop size")
    style_size: int = _f(512, "style image long side")
    batch_size: int = _f(4, "global batch size (divisible by the number of devices)")
    steps: int = _f(10000, "total training steps")
    lr: float = _f(1e-3, "Adam learning rate")
    content_weight: float = _f(1.0, "weight of the content term")
    # Chosen by experiments/johnson_style_proxy.py (README, "How the style weight was chosen").
    style_weight: float = _f(100.0, "weight of the style term")
    tv_weight: float = _f(0.0, "weight of the total-variation term")
    content_layers: tuple[str, ...] = _f(("relu2_2",), "comma-separated content layers")
    style_layers: tuple[str, ...] = _f(JOHNSON_STYLE_LAYERS, "comma-separated style layers")
    seed: int = _f(0, "data order, crops and initialisation")
    checkpoint_every: int = _f(500, "steps between checkpoints (also on Ctrl-C/SIGTERM)")
    preview_every: int = _f(200, "steps between preview images of fixed validation images")
    log_every: int = _f(10, "steps between metric records")
    dtype: str = _f(
        "float32",
        "transformer compute dtype: float32 or bfloat16 (GPU/TPU)",
        choices=("float32", "bfloat16"),
    )

    def validate(self) -> None:
        from jaxstyle.nets.vgg import parse_layers

        check_finite(self)
        if not (self.data.startswith("tfds:") or self.data.startswith("folder:")):
            raise ValueError(f"--data must be tfds:NAME or folder:PATH, got {self.data!r}")
        if self.image_size < 32 or self.image_size % 4:
            raise ValueError("--image-size must be a multiple of 4, at least 32")
        for name in ("batch_size", "steps", "checkpoint_every", "preview_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        for flag, layers in (("content", self.content_layers), ("style", self.style_layers)):
            try:
                parse_layers(layers, "vgg16")
            except ValueError as e:
                raise ValueError(f"--{flag}-layers: {e}") from None
        _check_nonnegative(self, ("content_weight", "style_weight", "tv_weight"))
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
        if self.style_size < 32:
            raise ValueError("--style-size must be at least 32")


# Flags derived from the fields.


def _list_of(kind: type, name: str):
    def parse(text: str):
        try:
            return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}: expected comma-separated {kind.__name__} values, got {text!r}"
            ) from None

    return parse


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Adds one ``--flag`` per field of the config dataclass ``cls`` to ``parser``.

    Args:
        parser: any argparse parser (the CLI's subcommands, an experiment script's).
        cls: a config dataclass; each field's ``help`` and ``choices`` metadata are used.
        skip: fields that get no flag.
        defaults: per-script default overrides, by field name (e.g. an experiment's smaller
            ``size``); every other default is the dataclass's own.
    """
    defaults = dict(defaults or {})
    unknown = set(defaults) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = defaults.get(f.name, f.default)
        kw: dict = {"default": default, "help": f.metadata.get("help", "")}
        if typing.get_origin(hint) is tuple:
            kw["type"] = _list_of(typing.get_args(hint)[0], flag)
            shown = ",".join(map(str, default)) if default else "-"
            kw["help"] += f" (default: {shown})"
        else:
            kw["type"] = hint
            kw["help"] += " (default: %(default)s)"
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if f.metadata.get("nargs"):  # space-separated values (file names), not comma-separated
            kw.update(nargs=f.metadata["nargs"], type=typing.get_args(hint)[0], metavar="FILE")
        parser.add_argument(flag, dest=f.name, **kw)


def config_from_args(cls: type, args: argparse.Namespace):
    """The config ``cls`` from the parsed flags that :func:`add_config_flags` added."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    # nargs flags give lists; the config is frozen and hashable
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def config_from_kwargs(cls: type, options: Mapping[str, Any], also: Sequence[str] = ()):
    """The config ``cls`` from Python keywords named as its fields, as a library call takes
    them (``jaxstyle.stylize(..., size=256, style_layers=["relu1_1"])``).

    Values are converted as the flags convert their text: a tuple field takes a sequence or a
    comma-separated string, a float field any real number; a field with ``choices`` refuses any
    other value. Ranges are left to the config's ``validate``.

    Args:
        cls: a config dataclass.
        options: keyword -> value; fields not given keep their defaults.
        also: the caller's own keywords, listed with the fields when one is unknown.

    Raises:
        TypeError: an unknown keyword (the message names it and lists the valid ones), or a
            value of the wrong type.
        ValueError: a value outside the field's choices.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(sorted([*fields, *also]))
        raise TypeError(f"unknown keyword(s) {', '.join(unknown)}; valid keywords: {valid}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in options.items():
        values[name] = _convert(name, hints[name], value)
        choices = fields[name].metadata.get("choices")
        if choices and values[name] not in choices:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return cls(**values)


def _convert(name: str, hint: Any, value: Any) -> Any:
    """``value`` as a field of type ``hint``; TypeError naming ``name`` when it is not one."""
    import numbers
    import os

    if typing.get_origin(hint) is tuple:
        kind = typing.get_args(hint)[0]
        if isinstance(value, str):
            try:
                return _list_of(kind, name)(value)
            except argparse.ArgumentTypeError as e:
                raise TypeError(str(e)) from None
        try:
            items = list(value)
        except TypeError:
            raise TypeError(f"{name}: expected a sequence, got {value!r}") from None
        return tuple(_convert(name, kind, v) for v in items)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected an int, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if hint is str and isinstance(value, os.PathLike):  # e.g. init=Path("start.png")
        return os.fspath(value)
    if not isinstance(value, hint):
        raise TypeError(f"{name}: expected a {hint.__name__}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class AdainTrainConfig:
    """Settings of AdaIN decoder training (Huang & Belongie 2017), as the PyTorch port's
    ``train.py`` (naoto0804/pytorch-AdaIN): Adam at lr 1e-4 decayed as ``lr / (1 + lr_decay *
    step)``, batch 8, 160,000 iterations, content weight 1, style weight 10, 256 px crops.
    """

    data: str = _f("tfds:coco/2014", "content images: tfds:NAME or folder:PATH")
    styles: str = _f("", "style images: folder:PATH (e.g. WikiArt paintings); required")
    data_dir: str = _f("", "TFDS data dir (where coco/2014 was prepared)")
    encoder: str = _f(
        "vgg16",
        "the frozen encoder: VGG16 (jaxstyle's weights) or VGG19 (--weights: any VGG19 file, "
        "vgg_normalised.pth as the port's) up to relu4_1",
        choices=("vgg16", "vgg19"),
    )
    image_size: int = _f(256, "training crop size (a multiple of 8)")
    # The paper resizes the short side to 512 keeping the aspect ratio; the port squashes every
    # image to 512x512. We follow the paper.
    load_size: int = _f(512, "short side images are resized to before the random crop")
    batch_size: int = _f(8, "global batch size (divisible by the number of devices)")
    steps: int = _f(160000, "total training steps (the port's max_iter)")
    lr: float = _f(1e-4, "Adam learning rate at step 0")
    lr_decay: float = _f(5e-5, "learning rate at step k: lr / (1 + lr_decay * k)")
    content_weight: float = _f(1.0, "weight of the content term (relu4_1 MSE to the target)")
    style_weight: float = _f(10.0, "weight of the style term (MSE of feature means and stds)")
    seed: int = _f(0, "data order, crops and the decoder's initialisation")
    checkpoint_every: int = _f(1000, "steps between checkpoints (also on Ctrl-C/SIGTERM)")
    preview_every: int = _f(1000, "steps between preview images of fixed content/style pairs")
    log_every: int = _f(10, "steps between metric records")

    def validate(self) -> None:
        check_finite(self)
        if not (self.data.startswith("tfds:") or self.data.startswith("folder:")):
            raise ValueError(f"--data must be tfds:NAME or folder:PATH, got {self.data!r}")
        if not self.styles:
            raise ValueError("--styles is required: a folder of style images, folder:PATH")
        if not (self.styles.startswith("folder:") or self.styles.startswith("tfds:")):
            raise ValueError(f"--styles must be folder:PATH (or tfds:NAME), got {self.styles!r}")
        if self.encoder not in ("vgg16", "vgg19"):
            raise ValueError(f"--encoder must be vgg16 or vgg19, got {self.encoder!r}")
        # A multiple of 8: the decoder's output is then the crop's size (three poolings).
        if self.image_size < 16 or self.image_size % 8:
            raise ValueError("--image-size must be a multiple of 8, at least 16")
        if self.load_size < self.image_size:
            raise ValueError(
                f"--load-size ({self.load_size}) must be >= --image-size ({self.image_size})"
            )
        for name in ("batch_size", "steps", "checkpoint_every", "preview_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        _check_nonnegative(self, ("content_weight", "style_weight", "lr_decay"))
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
