"""Trained transformation networks on disk: one safetensors file per style.

Keys are the flattened Flax parameter paths joined with dots (``res1.conv1.conv2d.kernel``),
float32. Metadata: ``format`` (``jaxstyle-johnson/1``), the architecture
(:meth:`jaxstyle.nets.transformer_net.NetConfig.to_meta`), and free-form provenance (style image,
training steps, source file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from jaxstyle.fileio import atomic_path
from jaxstyle.nets.transformer_net import NetConfig, init_params

FORMAT = "jaxstyle-johnson/1"


class ModelError(Exception):
    """A model file that cannot be read; the message names the file and the reason."""


def save_model(
    path: str | Path, params: Any, config: NetConfig, meta: dict[str, str] | None = None
) -> Path:
    """Writes ``params`` of a network with architecture ``config`` atomically."""
    from safetensors.numpy import save_file

    flat = traverse_util.flatten_dict(params, sep=".")
    tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}
    metadata = {**{k: str(v) for k, v in (meta or {}).items()}, **config.to_meta()}
    metadata["format"] = FORMAT
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load_model(path: str | Path) -> tuple[dict, NetConfig, dict[str, str]]:
    """Reads a model file; checks every tensor against the architecture in its metadata.

    Returns:
        ``(params, config, metadata)``.

    Raises:
        ModelError: missing, foreign, truncated or inconsistent file.
    """
    import jax
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any decoder failure means a bad file
        raise ModelError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a jaxstyle model (format {meta.get('format')!r})")
    try:
        config = NetConfig.from_meta(meta)
    except (KeyError, ValueError) as e:
        raise ModelError(f"{path}: bad architecture metadata ({e})") from None
    want = traverse_util.flatten_dict(
        jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0))), sep="."
    )
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise ModelError(
            f"{path}: tensors do not match the architecture (missing: {missing[:5]}, "
            f"unexpected: {extra[:5]})"
        )
    for k, spec in want.items():
        if tensors[k].shape != spec.shape:
            raise ModelError(
                f"{path}: tensor {k} has shape {tensors[k].shape}, expected {spec.shape}"
            )
    params = traverse_util.unflatten_dict(tensors, sep=".")
    return params, config, meta
