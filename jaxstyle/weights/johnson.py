"""Johnson transformation networks from pytorch/examples ``fast_neural_style`` state dicts.

    python -m weights_convert johnson SRC.pth -o model.safetensors

The PyTorch module names are ours (:mod:`jaxstyle.nets.transformer_net` mirrors them), so the name
table is one rule per leaf: a convolution's ``weight`` is our ``kernel`` (OIHW -> HWIO), an
instance norm's ``weight`` is our ``scale``, ``bias`` is ``bias``. The architecture (channel
widths, number of residual blocks) is read from the tensors' shapes, then every tensor is checked
against the shapes of that architecture.

Those networks were trained on 0-255 RGB images and end in a linear layer (the example clamps
the output to 0-255 when it saves an image), so the converted model has ``io_scale=255`` and
``output="linear"``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from jaxstyle.fileio import check_writable, refuse_overwriting_inputs
from jaxstyle.nets.transformer_net import NetConfig
from jaxstyle.weights.format import sha256_file
from jaxstyle.weights.readers import (
    OIHW_TO_HWIO,
    ConvertError,
    ConvertReport,
    as_float32,
    read_tensors,
)

LAYOUT = "fast_neural_style"
#: Weight-file suffixes accepted. ``.model`` is what fast_neural_style's training script writes.
SUFFIXES = (".pth", ".pt", ".bin", ".model", ".safetensors")
#: Running statistics that PyTorch < 0.4 stored for InstanceNorm2d (ignored since; never used at
#: inference with instance statistics). pytorch/examples deletes them before loading, so do we.
STALE_STATS = ("running_mean", "running_var", "num_batches_tracked")
# Our leaf name -> the PyTorch one.
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_HWIO_TO_OIHW = (3, 2, 0, 1)
_NET_KEY = re.compile(r"^(conv[1-3]|in[1-5]|res\d+|deconv[1-3])\.")
_RES_KEY = re.compile(r"^res(\d+)\.")
_NORM_KEY = re.compile(r"(^|\.)in\d+\.weight$")


def _listed(keys: list[str], limit: int = 10) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _source_shapes(config: NetConfig) -> dict[str, tuple[int, ...]]:
    """PyTorch key -> the shape it must have in a network of architecture ``config``."""
    import jax
    from flax import traverse_util

    from jaxstyle.nets.transformer_net import init_params

    flat = traverse_util.flatten_dict(
        jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0))), sep="."
    )
    out = {}
    for key, spec in flat.items():
        module, leaf = key.rsplit(".", 1)
        shape = tuple(spec.shape)
        if leaf == "kernel":
            shape = tuple(shape[a] for a in _HWIO_TO_OIHW)
        out[f"{module}.{_LEAF[leaf]}"] = shape
    return out


def infer_config(tensors: dict[str, np.ndarray], origin: str = "<tensors>") -> NetConfig:
    """Reads the architecture of a fast_neural_style state dict from its tensor shapes.

    Only the channel widths (the output channels of conv1..conv3) and the number of residual
    blocks (``res1``..``resN``, numbered without gaps) are read here;
    :func:`convert_johnson_tensors` then checks every tensor against them.

    Raises:
        ConvertError: not a TransformerNet state dict, or its first convolutions are missing.
    """
    # Same module names, our leaf names: checked first, or it would read as all-missing.
    if "conv1.conv2d.kernel" in tensors:
        raise ConvertError(f"{origin}: already a jaxstyle model; it needs no conversion")
    if not any(_NET_KEY.match(k) for k in tensors):
        sample = ", ".join(sorted(tensors)[:5]) or "no tensors"
        raise ConvertError(
            f"{origin}: not a pytorch/examples fast_neural_style TransformerNet state dict "
            f"(first keys: {sample})"
        )
    widths = []
    for i in (1, 2, 3):
        key = f"conv{i}.conv2d.weight"
        if key not in tensors:
            raise ConvertError(f"{origin}: missing tensor {key}")
        if np.ndim(tensors[key]) != 4:
            raise ConvertError(
                f"{origin}: tensor {key} has shape {np.shape(tensors[key])}, "
                "expected a 4-d convolution kernel (out, in, h, w)"
            )
        widths.append(int(np.shape(tensors[key])[0]))
    blocks = {int(m.group(1)) for k in tensors if (m := _RES_KEY.match(k))}
    num_res = len(blocks)
    # Counted, not the highest index, so that a stray ``res1000000`` cannot size the network.
    if blocks != set(range(1, num_res + 1)):
        gaps = ", ".join(f"res{i}" for i in range(1, num_res + 1) if i not in blocks)
        raise ConvertError(
            f"{origin}: missing tensors of residual block {gaps} "
            f"(found blocks {', '.join(map(str, sorted(blocks)))})"
        )
    return NetConfig(
        channels=tuple(widths), num_res=num_res, upsample="nearest", io_scale=255.0, output="linear"
    )


def convert_johnson_tensors(
    tensors: dict[str, np.ndarray], origin: str = "<tensors>"
) -> tuple[dict, NetConfig, ConvertReport]:
    """Maps a fast_neural_style TransformerNet state dict to jaxstyle parameters.

    Args:
        tensors: PyTorch key -> array, as stored in the source file.
        origin: the file name, for error messages.

    Returns:
        ``(params, config, report)``: nested float32 params for
        :class:`jaxstyle.nets.transformer_net.TransformerNet`, the architecture read from the
        shapes,
        and the keys used and dropped (stale instance-norm running statistics).

    Raises:
        ConvertError: not a TransformerNet state dict, missing or unexpected tensors, or a tensor
            whose shape does not fit the architecture; the message names the file and tensor.
    """
    # nn.DataParallel prefixes every key with "module." when a wrapped model is saved.
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    config = infer_config(tensors, origin)
    want = _source_shapes(config)
    missing = [k for k in want if k not in tensors]
    if missing:
        raise ConvertError(f"{origin}: missing tensors {_listed(missing)}")
    norms = {k.rsplit(".", 1)[0] for k in want if _NORM_KEY.search(k)}
    dropped, unexpected = [], []
    for k in sorted(set(tensors) - set(want)):
        module, _, leaf = k.rpartition(".")
        (dropped if module in norms and leaf in STALE_STATS else unexpected).append(k)
    if unexpected:
        # Silently ignoring them would convert a different network into a wrong one.
        raise ConvertError(
            f"{origin}: unexpected tensors {_listed(unexpected)} (not the "
            f"fast_neural_style TransformerNet layout with channels {config.channels} and "
            f"{config.num_res} residual blocks)"
        )
    flat = {}
    for key, shape in want.items():
        arr = as_float32(tensors[key], key, origin)
        if arr.shape != shape:
            raise ConvertError(
                f"{origin}: tensor {key} has shape {arr.shape}, expected {shape} for a "
                f"TransformerNet with channels {config.channels}"
            )
        module, leaf = key.rsplit(".", 1)
        if arr.ndim == 4:
            flat[(*module.split("."), "kernel")] = np.ascontiguousarray(arr.transpose(OIHW_TO_HWIO))
        else:
            flat[(*module.split("."), "scale" if leaf == "weight" else "bias")] = arr
    from flax import traverse_util

    params = traverse_util.unflatten_dict(flat)
    return params, config, ConvertReport(layout=LAYOUT, used=list(want), unexpected=dropped)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads every tensor of a PyTorch state dict or a safetensors file.

    PyTorch files are read with ``torch.load(weights_only=True)``: no arbitrary pickle.

    Raises:
        ConvertError: missing, unsupported, truncated or corrupt file (the message names it).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConvertError(
            f"{path}: unsupported format {path.suffix!r} for a TransformerNet state dict "
            f"(supported: {', '.join(SUFFIXES)})"
        )
    return read_tensors(path)


def convert_johnson(path: str | Path) -> tuple[dict, NetConfig, ConvertReport]:
    """Reads and converts a fast_neural_style TransformerNet (.pth/.pt/.model or .safetensors).

    Returns:
        ``(params, config, report)`` as :func:`convert_johnson_tensors`.

    Raises:
        ConvertError: unreadable file or not a TransformerNet state dict (names file and tensor).
    """
    return convert_johnson_tensors(read_state_dict(path), origin=str(path))


def write_johnson(
    src: str | Path, out: str | Path
) -> tuple[Path, NetConfig, ConvertReport, dict[str, str]]:
    """Converts ``src`` and writes it atomically to ``out`` in jaxstyle's model format.

    Returns:
        ``(out, config, report, metadata)``; metadata holds ``source``, ``source_sha256`` and
        ``source_layout`` as written (the architecture is added by ``save_model``).

    Raises:
        ConvertError: as :func:`convert_johnson`.
        jaxstyle.fileio.OutputError: ``out`` is ``src`` (symlinks included) or cannot be
            written; checked before reading ``src``.
        OSError: writing failed midway (an existing ``out`` is left untouched).
    """
    from jaxstyle.models import save_model

    src, out = Path(src), Path(out)
    refuse_overwriting_inputs([out], [src])
    check_writable(out)
    params, config, report = convert_johnson(src)
    meta = {"source": src.name, "source_sha256": sha256_file(src), "source_layout": LAYOUT}
    return save_model(out, params, config, meta), config, report, meta
