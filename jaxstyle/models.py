"""Feed-forward models on disk: one safetensors file per model, whatever its kind.

Keys are the flattened parameter paths joined with dots (``res1.conv1.conv2d.kernel``),
float32. Metadata: ``kind`` (what the file holds; files written before kinds existed have none and
are ``johnson``), ``format``, the architecture, and free-form provenance (style image, training
steps, source file). Kinds:

* ``johnson``: a single-style transformation network, format ``jaxstyle-johnson/1``, the
  architecture in :meth:`jaxstyle.nets.transformer_net.NetConfig.to_meta`;
* ``multistyle``: a transformation network with conditional instance norm, one (gamma, beta)
  row per style, format ``jaxstyle-model/1``: the architecture as ``johnson`` plus
  ``num_styles``, ``styles`` (a JSON list: each row's style image) and ``training`` (a JSON
  object: the training settings);
* ``adain``: an arbitrary-style AdaIN network (:mod:`jaxstyle.nets.adain`), format
  ``jaxstyle-model/1``; its architecture is ``encoder`` (``vgg19`` or ``vgg16``; absent, as in
  converted files written before it existed: ``vgg19``), which fixes the layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from jaxstyle.fileio import atomic_path
from jaxstyle.nets.transformer_net import NetConfig, init_params

FORMAT = "jaxstyle-johnson/1"
#: The format of model kinds other than ``johnson`` (whose format string predates kinds).
MODEL_FORMAT = "jaxstyle-model/1"
KINDS = ("johnson", "multistyle", "adain")


class ModelError(Exception):
    """A model file that cannot be read; the message names the file and the reason."""


def save_model(
    path: str | Path, params: Any, config: NetConfig, meta: dict[str, str] | None = None
) -> Path:
    """Writes ``params`` of a network with architecture ``config`` atomically: a ``johnson``
    file for one style, a ``multistyle`` one for several."""
    from safetensors.numpy import save_file

    flat = traverse_util.flatten_dict(params, sep=".")
    tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}
    metadata = {**{k: str(v) for k, v in (meta or {}).items()}, **config.to_meta()}
    multi = config.num_styles > 1
    metadata["format"] = MODEL_FORMAT if multi else FORMAT
    metadata["kind"] = "multistyle" if multi else "johnson"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def save_adain_model(
    path: str | Path, params: Any, meta: dict[str, str] | None = None, *, encoder: str = "vgg19"
) -> Path:
    """Writes an AdaIN network's ``params`` (:mod:`jaxstyle.nets.adain`, with the ``encoder``
    ``vgg19`` or ``vgg16``) atomically."""
    from safetensors.numpy import save_file

    from jaxstyle.nets.adain import ENCODERS

    if encoder not in ENCODERS:
        raise ValueError(f"unknown AdaIN encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    flat = traverse_util.flatten_dict(params, sep=".")
    tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}
    metadata = {k: str(v) for k, v in (meta or {}).items()}
    metadata.update(format=MODEL_FORMAT, kind="adain", encoder=encoder)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def _kind_of(path: Path, meta: dict[str, str]) -> str:
    """The ``kind`` in a model file's metadata; ``johnson`` when absent (older files)."""
    if meta.get("format") not in (FORMAT, MODEL_FORMAT):
        raise ModelError(f"{path}: not a jaxstyle model (format {meta.get('format')!r})")
    kind = meta.get("kind", "johnson")
    if kind not in KINDS:
        raise ModelError(f"{path}: unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    return kind


def _check_tensors(path: Path, tensors: dict, want: dict) -> None:
    """Raises ModelError unless ``tensors`` has exactly the keys and shapes of ``want``."""
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise ModelError(
            f"{path}: tensors do not match the architecture (missing: {missing[:5]}, "
            f"unexpected: {extra[:5]})"
        )
    for k, shape in want.items():
        if tensors[k].shape != tuple(shape):
            raise ModelError(f"{path}: tensor {k} has shape {tensors[k].shape}, expected {shape}")


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """A safetensors file's metadata and tensors.

    Raises:
        ModelError: no such file, or one safetensors cannot read.
    """
    from safetensors import safe_open
    from safetensors.numpy import load_file

    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
        return meta, load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any decoder failure means a bad file
        raise ModelError(f"{path}: not a readable safetensors file ({e})") from None


def load_model(path: str | Path) -> tuple[str, dict, NetConfig | None, dict[str, str]]:
    """Reads a model file; checks every tensor against the architecture in its metadata.

    Returns:
        ``(kind, params, config, metadata)``: ``kind`` is one of :data:`KINDS`; ``config`` is
        the :class:`NetConfig` of a ``johnson`` network, ``None`` for ``adain`` (fixed layout).

    Raises:
        ModelError: missing, foreign, truncated or inconsistent file.
    """
    import jax

    path = Path(path)
    meta, tensors = read_safetensors(path)
    kind = _kind_of(path, meta)
    if kind == "adain":
        from jaxstyle.nets.adain import ENCODERS, param_shapes

        encoder = meta.get("encoder", "vgg19")  # converted files of the port's VGG19 have none
        if encoder not in ENCODERS:
            raise ModelError(f"{path}: unknown AdaIN encoder {encoder!r}")
        shapes = traverse_util.flatten_dict(param_shapes(encoder), sep=".")  # shapes are leaves
        _check_tensors(path, tensors, shapes)
        return kind, traverse_util.unflatten_dict(tensors, sep="."), None, meta
    try:
        config = NetConfig.from_meta(meta)
        if (kind == "multistyle") != (config.num_styles > 1):
            raise ValueError(f"a {kind} network with num_styles {config.num_styles}")
        if kind == "multistyle" and len(style_names(meta)) != config.num_styles:
            raise ValueError(f"{len(style_names(meta))} style names for {config.num_styles} rows")
    except (KeyError, ValueError) as e:
        raise ModelError(f"{path}: bad architecture metadata ({e})") from None
    want = traverse_util.flatten_dict(
        jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0))), sep="."
    )
    _check_tensors(path, tensors, {k: spec.shape for k, spec in want.items()})
    return kind, traverse_util.unflatten_dict(tensors, sep="."), config, meta


def style_names(meta: dict[str, Any]) -> list[str]:
    """A multi-style network's style names (file names of its style images), in row order."""
    styles = meta["styles"]
    return [Path(s).name for s in (json.loads(styles) if isinstance(styles, str) else styles)]


def model_kind(path: str | Path) -> str:
    """The kind of a model file or training workdir, from the file's metadata (or the
    workdir's ``config.json``) alone, so that flags can be checked before anything is loaded.

    Raises:
        ModelError: missing, foreign or unreadable file, or an unknown kind.
    """
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        return workdir_kind(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - any decoder failure means a bad file
        raise ModelError(f"{path}: not a readable safetensors file ({e})") from None
    return _kind_of(path, meta)


def workdir_kind(workdir: Path) -> str:
    """What a training workdir trains: its ``config.json`` says ``kind`` (``adain``), lists
    several ``styles`` (``multistyle``) or one ``style`` (``johnson``).

    Raises:
        ModelError: no readable ``config.json``.
    """
    try:
        saved = json.loads((workdir / "config.json").read_text())
    except FileNotFoundError:
        raise ModelError(f"{workdir}: not a training workdir (no config.json)") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{workdir}/config.json: not readable ({e})") from None
    if saved.get("kind"):
        return saved["kind"]
    return "multistyle" if len(saved.get("styles", ())) > 1 else "johnson"
