"""AdaIN networks from the state dicts of the PyTorch port (naoto0804/pytorch-AdaIN).

    python -m weights_convert adain vgg_normalised.pth decoder.pth -o model.safetensors

``vgg_normalised.pth`` is a whole VGG19 as an ``nn.Sequential`` (convolutions at indices 0, 2,
5, 9, ..., 51); the network uses it up to relu4_1 (index 29), so the later convolutions are
reported as unused. ``decoder.pth`` is the mirror ``nn.Sequential`` (convolutions at 1, 5, 8,
..., 28). Both are read with ``torch.load(weights_only=True)`` (or as safetensors); every tensor
must have its shape and hold finite floating-point values. The two files are told apart by their
first convolution, so that swapping them gives an error that says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxstyle.fileio import check_writable, refuse_overwriting_inputs
from jaxstyle.nets import adain as net
from jaxstyle.weights.format import sha256_file
from jaxstyle.weights.readers import OIHW_TO_HWIO, ConvertError, ConvertReport, as_float32
from jaxstyle.weights.readers import read_tensors as _read_tensors

LAYOUT = "pytorch-AdaIN"
SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_OIHW = (3, 2, 0, 1)  # HWIO -> OIHW, for the shapes the PyTorch tensors must have


def _listed(keys: list[str], limit: int = 10) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _looks_like(tensors: dict[str, np.ndarray]) -> str:
    """Which of the two files ``tensors`` resembles: ``"vgg"``, ``"decoder"`` or ``"neither"``."""
    if np.shape(tensors.get("0.weight", ())) == (3, 3, 1, 1):
        return "vgg"
    if np.shape(tensors.get("1.weight", ())) == (256, 512, 3, 3) and "0.weight" not in tensors:
        return "decoder"
    return "neither"


def _source_shapes(part: str) -> dict[str, tuple[int, ...]]:
    """PyTorch key -> shape for ``part`` (``vgg`` or ``decoder``)."""
    out = {}
    for idx, s in net.param_shapes()[part].items():
        out[f"{idx}.weight"] = tuple(s["kernel"][a] for a in _OIHW)
        out[f"{idx}.bias"] = s["bias"]
    return out


def convert_part(
    tensors: dict[str, np.ndarray], part: str, origin: str = "<tensors>"
) -> tuple[dict, ConvertReport]:
    """Maps one state dict (``part`` = ``"vgg"`` or ``"decoder"``) to jaxstyle parameters.

    Returns:
        ``({index: {"kernel": HWIO, "bias"}}, report)``; the report lists the keys used and the
        unused ones (the VGG's layers after relu4_1).

    Raises:
        ConvertError: the other file of the pair, missing or unexpected tensors, a wrong shape,
            a non-floating or non-finite tensor; the message names the file and the tensor.
    """
    name = {"vgg": "vgg_normalised.pth (the encoder)", "decoder": "decoder.pth (the decoder)"}
    looks = _looks_like(tensors)
    if looks != part:
        what = name.get(looks, "neither AdaIN file")
        first = ", ".join(sorted(tensors)[:4]) or "no tensors"
        raise ConvertError(
            f"{origin}: given as {name[part]} but it looks like {what} (first keys: {first})"
        )
    want = _source_shapes(part)
    missing = [k for k in want if k not in tensors]
    if missing:
        raise ConvertError(f"{origin}: missing tensors {_listed(missing)}")
    allowed = {f"{i}.{leaf}" for i in net.ENCODER_REST for leaf in ("weight", "bias")}
    unused = sorted(set(tensors) - set(want))
    unexpected = [k for k in unused if part == "decoder" or k not in allowed]
    if unexpected:
        # A different network would otherwise convert into a wrong one without a word.
        raise ConvertError(f"{origin}: unexpected tensors {_listed(unexpected)} for {name[part]}")
    params: dict = {}
    for key, shape in want.items():
        arr = as_float32(tensors[key], key, origin)
        if arr.shape != shape:
            raise ConvertError(f"{origin}: tensor {key} has shape {arr.shape}, expected {shape}")
        idx, leaf = key.split(".")
        if leaf == "weight":
            params.setdefault(idx, {})["kernel"] = np.ascontiguousarray(arr.transpose(OIHW_TO_HWIO))
        else:
            params.setdefault(idx, {})["bias"] = arr
    return params, ConvertReport(layout=f"{LAYOUT} {part}", used=list(want), unexpected=unused)


def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.pth``/``.pt``/``.bin`` state dict or a ``.safetensors`` file.

    Raises:
        ConvertError: missing, unsupported or unreadable file.
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ConvertError(
            f"{path}: unsupported format {path.suffix!r} for an AdaIN state dict "
            f"(supported: {', '.join(SUFFIXES)})"
        )
    return _read_tensors(path)


def convert_adain(vgg_path: str | Path, decoder_path: str | Path) -> tuple[dict, list]:
    """Reads and converts both files.

    Returns:
        ``(params, [vgg_report, decoder_report])`` with params as :mod:`jaxstyle.nets.adain`.

    Raises:
        ConvertError: as :func:`convert_part`, or an unreadable file.
    """
    vgg, vgg_report = convert_part(read_tensors(vgg_path), "vgg", str(vgg_path))
    dec, dec_report = convert_part(read_tensors(decoder_path), "decoder", str(decoder_path))
    return {"vgg": vgg, "decoder": dec}, [vgg_report, dec_report]


def write_adain(
    vgg_path: str | Path, decoder_path: str | Path, out: str | Path
) -> tuple[Path, list, dict[str, str]]:
    """Converts the pair and writes one AdaIN model file atomically.

    Returns:
        ``(out, reports, metadata)``.

    Raises:
        ConvertError: as :func:`convert_adain`.
        jaxstyle.fileio.OutputError: ``out`` is one of the sources or cannot be written;
            checked before anything is read.
    """
    from jaxstyle.models import save_adain_model

    vgg_path, decoder_path, out = Path(vgg_path), Path(decoder_path), Path(out)
    refuse_overwriting_inputs([out], [vgg_path, decoder_path])
    check_writable(out)
    params, reports = convert_adain(vgg_path, decoder_path)
    meta = {
        "source": f"{vgg_path.name} + {decoder_path.name}",
        "source_sha256": f"{sha256_file(vgg_path)} {sha256_file(decoder_path)}",
        "source_layout": LAYOUT,
    }
    return save_adain_model(out, params, meta), reports, meta
