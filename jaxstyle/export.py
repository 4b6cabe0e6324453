"""Exported programs: a trained network as a file that other runtimes run without jaxstyle.

Formats (:data:`FORMATS`):

* ``safetensors``: the parameters, for jaxstyle itself (:mod:`jaxstyle.models`).
* ``stablehlo``: a :mod:`jax.export` serialized program, lowered for :data:`PLATFORMS` (CPU
  and CUDA) with symbolic batch, height and width: one file for every image size. Load it with
  ``jax.export.deserialize`` in a process with only jax installed. The CPU branch runs the
  convolution forms that jaxstyle's own CPU path runs (:mod:`jaxstyle.nets.conv`), the CUDA
  branch plain XLA convolutions (:func:`jax.lax.platform_dependent` picks at run time).
* ``savedmodel``: a TensorFlow SavedModel by :mod:`jax.experimental.jax2tf` (an
  ``XlaCallModule`` holding the StableHLO program, plain XLA convolutions), signature
  ``serving_default``, batch, height and width dynamic.
* ``tflite``: the same program converted by ``tf.lite.TFLiteConverter``, float32 or
  ``quantize="float16"`` (float16 weights, float32 inputs and outputs). **Fixed shape**: the
  converter of TensorFlow 2.21 cannot lower the dynamic-shape StableHLO that jax2tf emits for a
  symbolic batch, height or width (``'vhlo.dynamic_gather_v1' op is not part of the vhlo
  support yet``: every slice and pad of a symbolic size becomes a dynamic gather), and jax2tf in
  this JAX has no other serialization (``native_serialization=False`` is ignored). A TFLite file
  therefore has batch 1 and the height and width it was exported for (``size``);
  ``resize_tensor_input`` to another shape fails (XNNPack: "failed to reshape runtime").

Every program takes and returns float32 NHWC RGB in [0, 1] (the library's boundary):

* ``johnson``: ``images (N, H, W, 3) -> (N, H, W, 3)``, any H, W >= 2 (the network needs
  multiples of 4 inside: the image is reflection-padded to one and the output cropped back, as
  ``jaxstyle apply`` does, so the output equals apply's);
* ``multistyle``: ``images, style (S,) -> images``: ``style`` weighs the S styles' (gamma,
  beta) rows and is normalised to sum 1 inside (one-hot = one style; as ``--style-mix``), the
  same for every image of the batch;
* ``adain``: ``content (N, H, W, 3), style (M, Hs, Ws, 3), alpha () -> (N, H, W, 3)``: the M
  style images (of one size) are interpolated with equal weights (as ``--style`` with several
  images), ``alpha`` in [0, 1] is the strength (``--alpha``); each content image takes its own
  statistics. H, W, Hs, Ws >= 9 (:data:`jaxstyle.nets.adain.MIN_SIDE`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxstyle import backend, fileio

FORMATS = ("safetensors", "stablehlo", "savedmodel", "tflite")
QUANTIZE = ("float16",)
#: The platforms a stablehlo program is lowered for.
PLATFORMS = ("cpu", "cuda")
#: The TFLite program's default height and width (its shape is fixed, see the module docstring).
TFLITE_SIZE = (256, 256)


class ExportError(ValueError):
    """An export that cannot be done as asked (format, options, missing TensorFlow)."""


@dataclasses.dataclass(frozen=True)
class Program:
    """A model as a function of its inputs, parameters inside.

    ``fn(*inputs)`` traces the network with the convolution forms of the current
    :func:`jaxstyle.backend.conv_forms`; ``inputs`` are ``(name, symbolic shape)`` pairs
    whose shape strings share their dimension names (``n, h, w`` ...).
    """

    kind: str
    fn: Callable[..., jax.Array]
    inputs: tuple[tuple[str, str], ...]
    #: Constraints on the dimensions (``"h >= 9"``), which symbolic shapes need proved.
    constraints: tuple[str, ...] = ()


def _ceil_to(d: Any, m: int) -> Any:
    return m * ((d + m - 1) // m)


def johnson_fn(params: Any, config: Any) -> Callable[..., jax.Array]:
    """``images[, style] -> images`` for a Johnson (or multi-style) network, any H and W.

    The image is laid on a canvas whose sides are multiples of 8 (reflected beyond its edge) and
    the network is told its region, rounded up to a multiple of 4 (``valid``), exactly as
    :func:`jaxstyle.inference.apply_images` runs it: each output equals apply's. Multiples of
    8 (not 4) keep every side even after the two stride-2 layers, which the CPU's Winograd form
    needs and which is provable on symbolic sizes.
    """
    from jaxstyle.nets.transformer_net import TransformerNet, refill

    net = TransformerNet(config)

    def fn(images: jax.Array, style: jax.Array | None = None) -> jax.Array:
        n, h, w, _ = images.shape
        x = jnp.pad(images, ((0, 0), (0, _ceil_to(h, 8) - h), (0, _ceil_to(w, 8) - w), (0, 0)))
        own = jnp.broadcast_to(jnp.array([h, w], jnp.int32), (n, 2))
        x = refill(x, own, "reflect")  # the image reflected beyond its edges
        if style is not None:
            style = style.astype(jnp.float32) / jnp.sum(style)
        y = net.apply({"params": params}, x, _ceil_to(own, 4), style)
        return jnp.clip(y[:, :h, :w], 0.0, 1.0)

    return fn


def adain_fn(params: Any) -> Callable[..., jax.Array]:
    """``content, style batch, alpha -> images`` for an AdaIN network: as
    :func:`jaxstyle.inference.apply_adain` with equal style weights."""
    from jaxstyle.nets import adain

    def fn(content: jax.Array, style: jax.Array, alpha: jax.Array) -> jax.Array:
        mean, std = adain.mean_std(adain.encode(params["vgg"], style))
        mean, std = mean.mean(axis=0, keepdims=True), std.mean(axis=0, keepdims=True)
        # Unjitted: a jit-cached trace of the same shapes would keep the forms it was traced
        # with, whatever backend.conv_forms says now.
        return adain.stylize_with_stats.__wrapped__(params, content, mean, std, alpha)

    return fn


def program(kind: str, params: Any, config: Any) -> Program:
    """The exported function of a model (``kind``, ``params``, ``config`` as
    :func:`jaxstyle.inference.load_any` returns them)."""
    params = jax.tree_util.tree_map(jnp.asarray, params)
    if kind == "adain":
        from jaxstyle.nets.adain import MIN_SIDE

        inputs = (("content", "n, h, w, 3"), ("style", "m, hs, ws, 3"), ("alpha", ""))
        limits = tuple(f"{d} >= {MIN_SIDE}" for d in ("h", "w", "hs", "ws"))
        return Program(kind, adain_fn(params), inputs, limits)
    inputs = (("images", "n, h, w, 3"),)
    if config.num_styles > 1:
        inputs += (("style", str(config.num_styles)),)
    return Program(kind, johnson_fn(params, config), inputs)


def _specs(prog: Program) -> list[jax.ShapeDtypeStruct]:
    """Symbolic input shapes, all in one scope (dimension names are shared)."""
    names = sorted(
        {d.strip() for _, s in prog.inputs for d in s.split(",") if d.strip().isidentifier()}
    )
    dims = dict(
        zip(
            names,
            jax.export.symbolic_shape(", ".join(names), constraints=prog.constraints),
            strict=True,
        )
    )
    specs = []
    for _, s in prog.inputs:
        parts = [d.strip() for d in s.split(",") if d.strip()]
        shape = tuple(dims[d] if d in dims else int(d) for d in parts)
        specs.append(jax.ShapeDtypeStruct(shape, jnp.float32))
    return specs


def to_stablehlo(prog: Program, platforms: tuple[str, ...] = PLATFORMS) -> bytes:
    """The serialized :class:`jax.export.Exported` of ``prog`` for ``platforms``.

    On CPU it runs jaxstyle's CPU convolution forms, elsewhere XLA's convolutions: both are
    traced (whatever machine exports) and :func:`jax.lax.platform_dependent` selects at run
    time. Forms whose preconditions cannot be proved on symbolic sizes fall back to XLA's
    convolution (:func:`jaxstyle.nets.conv.conv2d` asks ``size % 2 == 0``, which is False for
    an unknown parity).
    """

    def with_forms(forms):
        def branch(*args):
            with backend.conv_forms(forms):
                return prog.fn(*args)

        return branch

    def fn(*args):
        if "cpu" in platforms and len(platforms) > 1:
            return jax.lax.platform_dependent(
                *args, cpu=with_forms("cpu"), default=with_forms("xla")
            )
        return with_forms("cpu" if platforms == ("cpu",) else "xla")(*args)

    exported = jax.export.export(jax.jit(fn), platforms=platforms)(*_specs(prog))
    return bytes(exported.serialize())


def _tf_function(prog: Program, shapes: list[list[int | None]] | None = None):
    """A ``tf.function`` (and its concrete function) of ``prog`` by jax2tf, plain XLA
    convolutions; dynamic shapes unless ``shapes`` fixes every input's."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    if shapes is None:
        poly = [f"({s})" if s else "()" for _, s in prog.inputs]
        shapes = [[None if not d.strip().isdigit() else int(d) for d in s.split(",") if d.strip()]
                  for _, s in prog.inputs]  # fmt: skip
    else:
        poly = None
    sig = [tf.TensorSpec(shape, tf.float32, name=name) for (name, _), shape in
           zip(prog.inputs, shapes, strict=True)]  # fmt: skip
    with backend.conv_forms("xla"):
        converted = jax2tf.convert(
            prog.fn,
            polymorphic_shapes=poly,
            polymorphic_constraints=prog.constraints if poly else (),
            native_serialization_platforms=("cpu",),
            with_gradient=False,  # inference only (and the gradient's trace loses constraints)
        )
        tf_fn = tf.function(converted, autograph=False, input_signature=sig)
        concrete = tf_fn.get_concrete_function()
    return tf_fn, concrete


def _import_tf():
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf  # noqa: F401
    except ImportError as e:
        raise ExportError(
            f"this format needs TensorFlow and jax2tf ({e}); pip install 'jaxstyle[train]'"
        ) from None
    return tf


def write_savedmodel(prog: Program, out: Path) -> Path:
    """A SavedModel folder at ``out`` (replaced atomically: written beside it, then renamed)."""
    tf = _import_tf()
    tf_fn, _ = _tf_function(prog)
    module = tf.Module()
    module.serve = tf_fn
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part"))
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": tf_fn})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual mode
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def tflite_bytes(prog: Program, size: tuple[int, int] = TFLITE_SIZE, quantize: str | None = None):
    """The TFLite flatbuffer of ``prog`` at batch 1 and ``size`` (height, width) for every
    image input (fixed shapes: see the module docstring)."""
    tf = _import_tf()
    shapes = [[1, *size, 3] if s.endswith("3") else ([] if not s else [int(s)])
              for _, s in prog.inputs]  # fmt: skip
    tf_fn, concrete = _tf_function(prog, shapes)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf_fn)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize is not None:
        raise ExportError(f"unknown --quantize {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    return converter.convert()


def check_request(fmt: str, quantize: str | None, out: Path, model: Path) -> None:
    """Raises ExportError / OutputError for a request that cannot be done, before any work."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if quantize is not None and fmt != "tflite":
        raise ExportError(f"--quantize is for --format tflite, not {fmt}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ExportError(f"unknown --quantize {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    fileio.refuse_overwriting_inputs([out], [model])
    if fmt == "savedmodel":
        if out.is_dir() and any(out.iterdir()) and not (out / "saved_model.pb").is_file():
            raise fileio.OutputError(f"{out}: a folder that is not a SavedModel; not replacing it")
        if out.exists() and not out.is_dir():
            raise fileio.OutputError(f"{out}: exists and is not a folder")
        fileio.check_writable(out.parent if out.parent != Path("") else Path("."), folder=True)
    else:
        fileio.check_writable(out)
    if fmt in ("savedmodel", "tflite"):
        _import_tf()


def export_model(
    model: str | Path,
    fmt: str,
    out: str | Path,
    *,
    quantize: str | None = None,
    size: tuple[int, int] = TFLITE_SIZE,
) -> Path:
    """Writes ``model`` (a model file or a training workdir) as ``fmt`` at ``out``; nothing is
    written unless the whole export succeeds. ``safetensors`` from a model file copies it
    (after checking that it loads). Returns ``out``.

    Raises:
        ExportError, jaxstyle.fileio.OutputError, jaxstyle.models.ModelError.
    """
    from jaxstyle.inference import load_any

    model, out = Path(model), Path(out)
    check_request(fmt, quantize, out, model)
    if fmt == "safetensors":
        if model.is_dir():
            raise ExportError("a workdir's safetensors export is jaxstyle.cli.cmd_export's")
        load_any(model)  # refuse a bad file rather than copying it
        with fileio.atomic_path(out) as tmp:
            shutil.copyfile(model, tmp)
        return out
    kind, params, config, _ = load_any(model)
    prog = program(kind, params, config)
    if fmt == "savedmodel":
        return write_savedmodel(prog, out)
    data = to_stablehlo(prog) if fmt == "stablehlo" else tflite_bytes(prog, size, quantize)
    with fileio.atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return out


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` or ``"N"`` (square) -> (height, width).

    Raises:
        ExportError: not that form, or a side below 9.
    """
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 9:
        raise ExportError(f"--size must be HxW or N with sides >= 9, got {text!r}")
    return (parts[0], parts[-1])
