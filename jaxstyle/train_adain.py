"""AdaIN decoder training (Huang & Belongie 2017), as the PyTorch port's ``train.py``.

The encoder (VGG up to relu4_1, :mod:`jaxstyle.nets.adain`) is frozen: it is an argument of the
step, never optimised. Only the decoder is trained, with Adam at ``lr / (1 + lr_decay * step)``
(the port's ``adjust_learning_rate``, here an optax schedule, so the rate is part of the
optimiser state and a resumed run continues with exactly the rates it would have had). For a
content batch ``c`` and a style batch ``s`` (paired image by image):

* ``t = AdaIN(f(c), f(s))`` at relu4_1, ``g = decoder(t)`` (unclipped, as the port trains);
* content loss ``mean((f(g) - t)^2)`` at relu4_1 (a mean over every element of the batch,
  torch's ``mse_loss``);
* style loss ``sum over relu1_1, relu2_1, relu3_1, relu4_1 of mean((mu(f_l(g)) - mu(f_l(s)))^2)
  + mean((sigma(f_l(g)) - sigma(f_l(s)))^2)``, with per image and channel ``mu`` the mean and
  ``sigma = sqrt(unbiased variance + 1e-5)`` (the port's ``calc_mean_std``);
* total ``content_weight * content + style_weight * style``.

Content and style images come from two deterministic pipelines (:mod:`jaxstyle.input_pipeline`,
the style one seeded ``seed + 1``), each resized to ``load_size`` on its short side (the paper's
aspect-preserving resize; the port squashes to 512x512) and randomly cropped to ``image_size``.

The workdir is :mod:`jaxstyle.train`'s (the same pieces: checks before any work, orbax
checkpoints every ``checkpoint_every`` steps and on Ctrl-C/SIGTERM, ``metrics.jsonl``,
TensorBoard, previews, exact resumption, refused setting changes) with ``"kind": "adain"`` in
``config.json`` and the frozen encoder in ``encoder.safetensors``, so that :func:`restore_params`
and :func:`export` need nothing but the workdir, and a resumption with other encoder weights is
refused.

The default encoder is jaxstyle's Caffe VGG16 (its activations are those of the ImageNet
network, not the port's "normalised" VGG19, so the loss values are on another scale and the
weights 1 and 10 balance the terms differently than in the paper; Adam's steps do not depend on
the overall scale).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jaxstyle import fileio, models
from jaxstyle.configs import AdainTrainConfig
from jaxstyle.nets import adain
from jaxstyle.nets.vgg import VGGNet
from jaxstyle.train import (
    Checkpoints,
    LoopOutputs,
    MetricsLog,
    TrainError,
    TrainState,
    _check_workdir_config,
    _write_config,
    _writing,
    make_shardings,
    maybe_initialize_distributed,
    prepare_workdir,
    restore_or_init,
    train_loop,
)

KIND = "adain"
#: The frozen encoder's parameters, written once when training starts.
ENCODER_FILE = "encoder.safetensors"
ENCODER_FORMAT = "jaxstyle-adain-encoder/1"


# ---------------------------------------------------------------------------------------------
# The optimiser, the state, the loss and the step.


def make_optimizer(cfg: AdainTrainConfig) -> optax.GradientTransformation:
    """Adam at ``lr / (1 + lr_decay * k)`` for update ``k`` = 0, 1, ... (the port's decay)."""
    lr, decay = cfg.lr, cfg.lr_decay
    return optax.adam(lambda count: lr / (1.0 + decay * count))


def init_decoder(cfg: AdainTrainConfig) -> dict:
    """The decoder's initial parameters, seeded by ``cfg.seed``: PyTorch's default ``Conv2d``
    initialisation (kernel and bias uniform in ±1/sqrt(fan_in)), as the port's decoder has."""
    key = jax.random.PRNGKey(cfg.seed)
    out = {}
    for j, (name, s) in enumerate(adain.param_shapes(cfg.encoder)["decoder"].items()):
        bound = 1.0 / np.sqrt(np.prod(s["kernel"][:3]))
        k1, k2 = jax.random.split(jax.random.fold_in(key, j))
        out[name] = {
            "kernel": jax.random.uniform(k1, s["kernel"], jnp.float32, -bound, bound),
            "bias": jax.random.uniform(k2, s["bias"], jnp.float32, -bound, bound),
        }
    return out


def create_train_state(cfg: AdainTrainConfig, tx: optax.GradientTransformation) -> TrainState:
    """Step 0: the decoder's initial parameters and Adam's state (the encoder is not in it)."""
    params = init_decoder(cfg)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def loss_weights(cfg: AdainTrainConfig) -> dict[str, jax.Array]:
    """The loss weights as arrays, so a change of weight does not recompile the step."""
    return {k: jnp.float32(getattr(cfg, f"{k}_weight")) for k in ("content", "style")}


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a - b))


def loss_fn(
    decoder: Any,
    vgg: Any,
    content: jax.Array,
    style: jax.Array,
    weights: dict[str, jax.Array],
    *,
    encoder: str,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The port's loss (module docstring) for float NHWC [0, 1] batches of equal shape."""
    vgg = jax.lax.stop_gradient(vgg)  # frozen
    n = content.shape[0]
    # One encoder pass over contents and styles together; no gradient flows into either.
    feats = adain.encode_features(vgg, jnp.concatenate([content, style]), encoder)
    style_feats = {k: v[n:] for k, v in feats.items()}
    t = adain.adain(feats["relu4_1"][:n], style_feats["relu4_1"])
    out_feats = adain.encode_features(vgg, adain.decode(decoder, t, encoder), encoder)
    content_loss = _mse(out_feats["relu4_1"], t)
    style_loss = 0.0
    for name in adain.FEATURE_LAYERS:
        (g_mean, g_std), (s_mean, s_std) = map(adain.mean_std, (out_feats[name], style_feats[name]))
        style_loss += _mse(g_mean, s_mean) + _mse(g_std, s_std)
    total = weights["content"] * content_loss + weights["style"] * style_loss
    return total, {"content": content_loss, "style": style_loss, "total": total}


def train_step(
    state: TrainState,
    batch: tuple[jax.Array, jax.Array],
    vgg: Any,
    weights: dict[str, jax.Array],
    *,
    tx: optax.GradientTransformation,
    encoder: str,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step of the decoder on uint8 NHWC ``(content, style)`` batches."""
    content, style = (b.astype(jnp.float32) / 255.0 for b in batch)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, terms), grads = grad_fn(state.params, vgg, content, style, weights, encoder=encoder)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), terms


def make_train_step(cfg: AdainTrainConfig, tx: optax.GradientTransformation) -> Callable:
    """``train_step`` with its static settings bound, jitted once with the state donated."""
    return jax.jit(functools.partial(train_step, tx=tx, encoder=cfg.encoder), donate_argnums=0)


def encoder_params(vgg: VGGNet, encoder: str) -> dict:
    """The frozen AdaIN encoder built from a VGG of the same architecture.

    Raises:
        TrainError: ``vgg`` is not a ``encoder`` network.
    """
    if vgg.arch != encoder:
        raise TrainError(f"the --encoder {encoder} needs {encoder} weights, got {vgg.arch} ones")
    return adain.encoder_from_vgg(vgg.params, vgg.arch, vgg.convention)


# ---------------------------------------------------------------------------------------------
# The workdir: config.json with the kind, the encoder file, metrics.


def _config_json(cfg: AdainTrainConfig) -> dict[str, Any]:
    return {"kind": KIND, **dataclasses.asdict(cfg)}


def _flat_numpy(params: dict) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(params, sep=".")
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode() + tensors[k].tobytes())
    return h.hexdigest()


def _write_encoder(workdir: Path, vgg: dict, encoder: str) -> None:
    from safetensors.numpy import save_file

    tensors = _flat_numpy(vgg)
    meta = {"format": ENCODER_FORMAT, "encoder": encoder, "sha256": _digest(tensors)}
    path = workdir / ENCODER_FILE
    with _writing(path), fileio.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _read_encoder(workdir: Path, encoder: str) -> dict:
    """The encoder saved in ``workdir``, checked against ``encoder``'s shapes."""
    path = workdir / ENCODER_FILE
    if not path.is_file():
        raise TrainError(f"{workdir}: no {ENCODER_FILE} (the frozen encoder of this run)")
    try:
        meta, tensors = models.read_safetensors(path)
    except models.ModelError as e:
        raise TrainError(str(e)) from None
    want = traverse_util.flatten_dict(adain.param_shapes(encoder)["vgg"], sep=".")
    got = {k: v.shape for k, v in tensors.items()}
    if meta.get("encoder") != encoder or got != {k: tuple(v) for k, v in want.items()}:
        raise TrainError(f"{path}: not the {encoder} encoder this workdir's config.json names")
    return traverse_util.unflatten_dict(tensors, sep=".")


def _check_same_encoder(workdir: Path, vgg: dict, encoder: str) -> None:
    saved = _flat_numpy(_read_encoder(workdir, encoder))
    if _digest(saved) != _digest(_flat_numpy(vgg)):
        raise TrainError(
            f"{workdir} was trained with other {encoder} encoder weights (its {ENCODER_FILE}); "
            "use the same --weights to resume, or a new --workdir"
        )


class _Metrics(MetricsLog):
    """:class:`jaxstyle.train.MetricsLog` with AdaIN's terms (it has no ``tv``) in TensorBoard."""

    def write(self, record: dict[str, Any]) -> None:
        tb, self._tb = self._tb, None  # the base class writes Johnson's four terms
        try:
            super().write(record)
        finally:
            self._tb = tb
        if tb is not None:
            import tensorflow as tf

            with tb.as_default(step=record["step"]):
                for k in ("total", "content", "style"):
                    tf.summary.scalar(f"loss/{k}", record[k])


# ---------------------------------------------------------------------------------------------
# Data and previews.


class _Skipped:
    """The unreadable files skipped by both pipelines (what ``train_loop`` reads)."""

    def __init__(self, *counters: Any) -> None:
        self._counters = counters

    @property
    def count(self) -> int:
        return sum(c.count for c in self._counters)


def _dataset(cfg: AdainTrainConfig, source: str, seed: int, **kw: Any) -> Any:
    from jaxstyle import input_pipeline

    kw.setdefault("batch_size", cfg.batch_size // jax.process_count())
    return input_pipeline.make_dataset(
        source,
        image_size=cfg.image_size,
        load_size=cfg.load_size,
        seed=seed,
        data_dir=cfg.data_dir or None,
        **kw,
    )


@contextlib.contextmanager
def open_batches(
    cfg: AdainTrainConfig, start: int = 0
) -> Iterator[tuple[Iterator[tuple[np.ndarray, np.ndarray]], Any]]:
    """This host's uint8 ``(content, style)`` batches from step ``start + 1`` on, and the
    skipped-files counter. Both pipelines are deterministic, so skipping ``start`` batches of
    each resumes exactly where a run stopped.

    Raises:
        DataError: either source cannot be used (raised before any batch is read).
    """
    from jaxstyle import input_pipeline

    shard = {"num_shards": jax.process_count(), "shard_index": jax.process_index()}
    contents, c_skipped = _dataset(cfg, cfg.data, cfg.seed, **shard)
    styles, s_skipped = _dataset(cfg, cfg.styles, cfg.seed + 1, **shard)
    with (
        input_pipeline.NumpyBatches(contents.skip(start)) as c,
        input_pipeline.NumpyBatches(styles.skip(start)) as s,
    ):
        yield zip(c, s, strict=True), _Skipped(c_skipped, s_skipped)


def _fixed_images(cfg: AdainTrainConfig, source: str, seed: int, n: int) -> np.ndarray:
    """Centre crops of the first ``n`` images of ``source`` (file order), float NHWC [0, 1];
    read from a dataset of their own (another iterator would advance the training one)."""
    from jaxstyle import input_pipeline

    ds, _ = _dataset(cfg, source, seed, batch_size=n, shuffle_buffer=0, random_crop=False)
    with input_pipeline.NumpyBatches(ds.take(1)) as batches:
        return next(batches).astype(np.float32) / 255.0


def _previewer(
    cfg: AdainTrainConfig, folder: Path, vgg: Any, replicated: Any, n: int = 4
) -> Callable[[int, TrainState], None]:
    """``(step, state) -> None`` saving fixed contents, styles and their stylisations in rows."""
    from jaxstyle import images as imlib

    n = min(n, cfg.batch_size)
    contents = _fixed_images(cfg, cfg.data, cfg.seed, n)
    styles = _fixed_images(cfg, cfg.styles, cfg.seed + 1, n)

    def run(decoder, vgg, c, s):
        t = adain.adain(adain.encode(vgg, c, cfg.encoder), adain.encode(vgg, s, cfg.encoder))
        return jnp.clip(adain.decode(decoder, t, cfg.encoder), 0.0, 1.0)

    apply = jax.jit(run, out_shardings=replicated)
    rows = [np.concatenate(list(contents), axis=1), np.concatenate(list(styles), axis=1)]

    def save(step: int, state: TrainState) -> None:
        y = np.asarray(apply(state.params, vgg, jnp.asarray(contents), jnp.asarray(styles)))
        path = folder / f"step_{step:06d}.png"
        with _writing(path):
            imlib.save_image(path, np.concatenate([*rows, np.concatenate(list(y), axis=1)]))

    return save


# ---------------------------------------------------------------------------------------------
# The driver, restoring and exporting.


def train_and_evaluate(
    cfg: AdainTrainConfig, workdir: str | Path, vgg: VGGNet, *, progress: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) an AdaIN decoder in ``workdir``; returns the last metrics record.

    Args:
        cfg: settings (``cfg.encoder`` names the architecture of ``vgg``).
        workdir: checkpoints, ``config.json``, ``encoder.safetensors``, ``metrics.jsonl``,
            TensorBoard events, previews.
        vgg: the VGG whose trunk up to relu4_1 becomes the frozen encoder.
        progress: show a progress bar.

    Returns:
        The last metrics record (``step``, ``total``, ``content``, ``style``, ...), with
        ``compile_seconds`` and ``interrupted``; only ``step`` when ``workdir`` had already
        trained ``cfg.steps``.

    Raises:
        TrainError: unwritable workdir, other settings or encoder weights in it, a VGG of
            another architecture, or a loss that became non-finite.
        DataError: the content or style images cannot be read (nothing is written then).
    """
    cfg.validate()
    maybe_initialize_distributed()
    workdir = prepare_workdir(workdir)
    with _writing(workdir / ENCODER_FILE):
        fileio.check_writable(workdir / ENCODER_FILE)
    meta = _config_json(cfg)
    enc = encoder_params(vgg, cfg.encoder)
    shardings = make_shardings(cfg.batch_size)
    tx = make_optimizer(cfg)
    with Checkpoints(workdir / "checkpoints") as ckpts:
        if ckpts.latest_step() is not None:  # settings matter only when resuming
            _check_workdir_config(workdir, meta)
            _check_same_encoder(workdir, enc, cfg.encoder)
        state, start = restore_or_init(ckpts, create_train_state(cfg, tx))
        if start >= cfg.steps:
            print(
                f"{workdir}: already trained {start} steps (--steps {cfg.steps})",
                file=sys.stderr,
            )
            return {"step": start}
        with open_batches(cfg, start) as (batches, skipped):
            first = next(batches)  # the data works: only now is this run worth recording
            if start == 0:
                _write_encoder(workdir, enc, cfg.encoder)
                _write_config(workdir, meta)
            enc = jax.device_put(enc, shardings.replicated)
            preview = _previewer(cfg, workdir / "previews", enc, shardings.replicated)
            consts = jax.device_put((enc, loss_weights(cfg)), shardings.replicated)
            with _Metrics(workdir, start) as metrics:
                return train_loop(
                    cfg,
                    jax.device_put(state, shardings.replicated),
                    start,
                    itertools.chain([first], batches),
                    make_train_step(cfg, tx),
                    consts,
                    shardings.batch,
                    LoopOutputs(ckpts, metrics, preview, skipped),
                    progress=progress,
                )


def restore_params(workdir: str | Path) -> tuple[dict, dict[str, Any]]:
    """The full AdaIN network of a workdir's latest checkpoint and its config.

    Returns:
        ``(params, meta)``: ``{"vgg": encoder, "decoder": ...}`` as
        :func:`jaxstyle.inference.apply_adain` takes them, and ``config.json`` plus ``step``.

    Raises:
        TrainError: not an AdaIN training workdir, or no checkpoint yet.
    """
    workdir = Path(workdir).resolve()
    cfg_path = workdir / "config.json"
    if not cfg_path.exists():
        raise TrainError(f"{workdir}: not a training workdir (no config.json)")
    try:
        saved = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise TrainError(f"{cfg_path}: not readable ({e})") from None
    if saved.get("kind") != KIND:
        raise TrainError(f"{workdir}: not an AdaIN training workdir (kind {saved.get('kind')!r})")
    fields = {f.name for f in dataclasses.fields(AdainTrainConfig)}
    cfg = AdainTrainConfig(**{k: v for k, v in saved.items() if k in fields})
    if not (workdir / "checkpoints").is_dir():
        raise TrainError(f"{workdir}: no checkpoint yet")
    with Checkpoints(workdir / "checkpoints", create=False) as ckpts:
        state, step = restore_or_init(ckpts, create_train_state(cfg, make_optimizer(cfg)))
    if step == 0:
        raise TrainError(f"{workdir}: no checkpoint yet")
    vgg = _read_encoder(workdir, cfg.encoder)
    return {"vgg": vgg, "decoder": state.params}, {**saved, "step": step}


def export(workdir: str | Path, out_path: str | Path) -> Path:
    """Writes a workdir's latest network as one AdaIN model file (:mod:`jaxstyle.models`),
    with the encoder, the steps and the training settings in its metadata.

    Raises:
        TrainError: as :func:`restore_params`.
        jaxstyle.fileio.OutputError: ``out_path`` is in the workdir's place or not writable
            (checked before anything is read).
    """
    from jaxstyle import models

    out = Path(out_path)
    fileio.refuse_overwriting_inputs([out], [workdir])
    fileio.check_writable(out)
    params, saved = restore_params(workdir)
    training = {k: v for k, v in saved.items() if k not in ("kind", "step")}
    meta = {
        "steps": saved["step"],
        "source": str(Path(workdir).resolve()),
        "content_data": saved["data"],
        "styles": saved["styles"],
        "training": json.dumps(training, sort_keys=True),
        "encoder_sha256": _digest(_flat_numpy(params["vgg"])),
    }
    return models.save_adain_model(out, params, meta, encoder=saved["encoder"])
