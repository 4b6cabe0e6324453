"""jaxstyle's one on-disk format for VGG weights, and where the cache lives.

On disk, weights are a safetensors file holding only the convolution kernels (HWIO) and biases
of one VGG, keyed ``conv{b}_{i}.kernel`` / ``conv{b}_{i}.bias``, with string metadata:

* ``format``: ``jaxstyle-vgg/1``
* ``arch``: ``vgg16`` or ``vgg19``
* ``convention``: ``caffe``, ``torchvision`` or ``normalised`` (see
  :func:`jaxstyle.nets.vgg.preprocess`); a ``normalised`` file also holds the input map as
  ``input.kernel`` (1, 1, 3, 3) and ``input.bias`` (3,), so that it describes itself
* ``source``: where the weights came from; ``source_sha256``: the hash of that source.

The cache lives under ``$JAXSTYLE_HOME/weights`` (default ``~/.cache/jaxstyle``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from jaxstyle.fileio import atomic_path
from jaxstyle.nets.vgg import ARCHS, CONVENTIONS, param_shapes

FORMAT = "jaxstyle-vgg/1"


class WeightsError(Exception):
    """Weights that cannot be found, fetched, verified or read; the message says which and why."""


def home() -> Path:
    """The jaxstyle cache root: ``$JAXSTYLE_HOME`` or ``~/.cache/jaxstyle``."""
    return Path(os.environ.get("JAXSTYLE_HOME", "~/.cache/jaxstyle")).expanduser()


def cache_path(name: str) -> Path:
    """Where the cached weights of network ``name`` live."""
    return home() / "weights" / f"{name}.safetensors"


def source_dir() -> Path:
    """Where ``fetch(keep_source=True)`` keeps the original downloaded file (for parity tests)."""
    return home() / "sources"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save(path: str | Path, params: dict, meta: dict[str, str]) -> Path:
    """Writes VGG parameters in jaxstyle's format, atomically.

    Args:
        path: destination ``.safetensors``.
        params: ``{conv: {"kernel": HWIO, "bias": (C,)}}``.
        meta: must hold ``arch`` and ``convention``; ``source``/``source_sha256`` recommended.

    Returns:
        ``path``.
    """
    from safetensors.numpy import save_file

    arch = meta["arch"]
    if meta.get("convention") not in CONVENTIONS:
        raise WeightsError(f"{path}: unknown input convention {meta.get('convention')!r}")
    check_params(params, arch, str(path), meta["convention"])
    tensors = {}
    for conv in param_shapes(arch, meta["convention"]):
        tensors[f"{conv}.kernel"] = np.ascontiguousarray(params[conv]["kernel"], np.float32)
        tensors[f"{conv}.bias"] = np.ascontiguousarray(params[conv]["bias"], np.float32)
    # The writer stamps its own format last: a stale "format" in meta must not override it.
    metadata = {**{k: str(v) for k, v in meta.items()}, "format": FORMAT}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def check_params(params: dict, arch: str, origin: str, convention: str | None = None) -> None:
    """Raises WeightsError naming the first missing or wrongly shaped tensor.

    ``convention="normalised"`` also requires the input map (see :func:`param_shapes`).
    """
    for conv, shapes in param_shapes(arch, convention).items():
        for kind, want in shapes.items():
            if conv not in params or kind not in params[conv]:
                raise WeightsError(f"{origin}: missing tensor {conv}.{kind} for {arch}")
            got = tuple(np.shape(params[conv][kind]))
            if got != want:
                raise WeightsError(
                    f"{origin}: tensor {conv}.{kind} has shape {got}, expected {want} for {arch}"
                )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of ``path`` (empty when there is none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - any decoder failure means a bad file
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e


def load(path: str | Path, arch: str | None = None) -> tuple[dict, dict[str, str]]:
    """Reads a jaxstyle weights file; checks its format, architecture and every shape.

    Returns:
        ``(params, metadata)``.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a jaxstyle weights file (format {meta.get('format')!r})")
    if meta.get("arch") not in ARCHS:
        raise WeightsError(f"{path}: unknown architecture {meta.get('arch')!r}")
    if meta.get("convention") not in CONVENTIONS:
        raise WeightsError(
            f"{path}: unknown input convention {meta.get('convention')!r} "
            "(written by a newer jaxstyle?)"
        )
    if arch is not None and meta["arch"] != arch:
        raise WeightsError(f"{path}: holds {meta['arch']} weights, not {arch}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot read tensors ({e})") from e
    shapes = param_shapes(meta["arch"], meta["convention"])
    params = {
        conv: {"kernel": tensors.get(f"{conv}.kernel"), "bias": tensors.get(f"{conv}.bias")}
        for conv in shapes
    }
    params = {c: {k: v for k, v in p.items() if v is not None} for c, p in params.items()}
    check_params(params, meta["arch"], str(path), meta["convention"])
    return params, meta
