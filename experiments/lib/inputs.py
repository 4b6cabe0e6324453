"""What a run reads: its content and style images, and the VGG network."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from experiments.lib import paths
from experiments.lib.cli import fail


def image_dir(args: argparse.Namespace, kind: str) -> Path:
    """The folder of ``kind`` (content/style) images: ``--KIND-dir``, else the default.

    Ends the script with an ``error:`` line naming the flag to pass when neither exists, so a
    machine without ``../shared/images`` learns at once what to give.
    """
    given = getattr(args, f"{kind}_dir", None)
    folder = Path(given) if given else paths.default_image_dir(kind)
    if not folder.is_dir():
        if given:
            fail(f"--{kind}-dir {given}: not a folder")
        fail(f"no {kind} images: pass --{kind}-dir DIR (the default {folder} does not exist)")
    return folder


def find_image(args: argparse.Namespace, kind: str, name: str) -> Path:
    """An image file given as a path, or by name (with or without suffix) in its folder."""
    if Path(name).suffix and Path(name).is_file():
        return Path(name)
    folder = image_dir(args, kind)
    found = paths.lookup(folder, name)
    if found is None:
        fail(f"no {kind} image {name!r} in {folder} (pass --{kind} NAME or a path)")
    return found


def load(path: str | Path, long_side: int) -> np.ndarray:
    """The image at ``path`` (HWC RGB in [0, 1]) with its long side ``long_side`` pixels."""
    from jaxstyle import images as imlib

    return imlib.resize_long_side(imlib.load_image(path), long_side)


def load_net(args: argparse.Namespace, pooling: str = "max", arch: str | None = None):
    """The VGG network of ``--net`` (or ``arch``) and ``--weights`` (default: the cache)."""
    from jaxstyle.weights import load_vgg

    arch = arch or getattr(args, "net", "vgg16")
    return load_vgg(arch, pooling=pooling, weights=args.weights, progress=False)


def enable_compile_cache() -> None:
    """Turns on JAX's persistent compilation cache (under ``$JAXSTYLE_HOME/xla-cache``).

    A sweep calls ``gatys.stylize`` or the trainer several times with the same shapes; with
    the persistent cache the second and later calls load their programs from disk instead of
    compiling them again.
    """
    from jaxstyle.cli import enable_compile_cache as enable

    enable()
