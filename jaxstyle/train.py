"""Feed-forward style transfer training (Johnson, Alahi & Fei-Fei 2016).

A transformation network (``transformer_net``) is trained with Adam so that its output for a
content image ``x`` minimises ``content_weight * content(y, x) + style_weight * style(y, s) +
tv_weight * tv(y)`` under VGG16, with the loss definitions of :mod:`jaxstyle.losses` averaged over
the batch.

The pieces, in the order :func:`train_and_evaluate` calls them (the shape of flax's
``examples/imagenet/train.py``; benchmarks call the same pieces):

* :func:`prepare_workdir`: every output is checked writable before any work;
* :func:`make_shardings`: the batch is sharded over every local device along a ``data`` mesh
  axis (parameters replicated); with several hosts, :func:`maybe_initialize_distributed` joins
  the job and each host reads its own shard of the data;
* :func:`style_grams`, :func:`loss_weights`: the constant arguments of the step;
* :func:`create_train_state`, :class:`Checkpoints`, :func:`restore_or_init`;
* :func:`train_step`, a plain function, jitted once with the state donated by
  :func:`make_train_step`;
* :func:`open_batches`, :func:`validation_images`, :class:`MetricsLog`;
* :func:`train_loop`: steps, metrics, previews, checkpoints.

Reliability: orbax checkpoints every ``checkpoint_every`` steps and on Ctrl-C/SIGTERM; rerunning
the same command in the same workdir restores the latest one and skips the batches already
seen, so training continues with exactly the losses it would have had. A state whose loss (or
any value) is not finite is never saved: training stops with a :class:`TrainError` and the last
good checkpoint stays. ``config.json`` is written only once the first batch was read, so a run
that fails to start leaves nothing that would refuse the corrected rerun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxstyle import fileio, losses
from jaxstyle.configs import TrainConfig
from jaxstyle.nets.transformer_net import PRESETS, NetConfig, TransformerNet, init_params
from jaxstyle.nets.vgg import VGGNet

#: Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "preview_every", "log_every", "data_dir")


class TrainError(Exception):
    """A training setup problem the user can fix (bad workdir, mismatched config)."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def net_config(cfg: TrainConfig, num_styles: int = 1) -> NetConfig:
    return dataclasses.replace(PRESETS[cfg.net], upsample=cfg.upsample, num_styles=num_styles)


def make_optimizer(cfg: TrainConfig, trainable: Any = None) -> optax.GradientTransformation:
    """Adam; with ``trainable`` (a tree of 0/1 masks shaped like the parameters, see
    :func:`finetune_mask`) every update is multiplied by the mask, so masked values never move."""
    if trainable is None:
        return optax.adam(cfg.lr)

    def update(updates, state, params=None):
        return jax.tree_util.tree_map(lambda u, m: u * m, updates, trainable), state

    only = optax.GradientTransformation(lambda params: optax.EmptyState(), update)
    return optax.chain(optax.adam(cfg.lr), only)


# ---------------------------------------------------------------------------------------------
# Several styles in one network (conditional instance norm) and fine-tuning new styles.


def _is_style_row(path: tuple[str, ...]) -> bool:
    """A (conditional) instance norm's scale or bias: the per-style parameters."""
    return path[-1] in ("scale", "bias") and path[-2].startswith("in")


def finetune_mask(ncfg: NetConfig, first_style: int) -> Any:
    """1.0 on the style rows ``first_style ..`` of every instance norm, 0.0 everywhere else
    (magenta's image_stylization_finetune trains only the new styles' (gamma, beta))."""
    shapes = jax.eval_shape(lambda: init_params(ncfg, jax.random.PRNGKey(0)))
    flat = flax.traverse_util.flatten_dict(shapes)
    mask = {}
    for path, spec in flat.items():
        m = np.zeros(spec.shape, np.float32)
        if _is_style_row(path):
            m[first_style:] = 1.0
        mask[path] = jnp.asarray(m)
    return flax.traverse_util.unflatten_dict(mask)


def add_style_rows(params: Any, ncfg: NetConfig, new: int) -> tuple[Any, NetConfig]:
    """A network of ``ncfg.num_styles + new`` styles: the old parameters, and every instance
    norm's table grown by ``new`` rows, each the mean of the old rows (a start that is already
    a plausible style, so fine-tuning converges faster than from gamma = 1, beta = 0)."""
    flat = flax.traverse_util.flatten_dict(params)
    out = {}
    for path, v in flat.items():
        v = jnp.asarray(v, jnp.float32)
        if _is_style_row(path):
            rows = v if ncfg.num_styles > 1 else v[None]
            v = jnp.concatenate([rows, jnp.repeat(rows.mean(0, keepdims=True), new, axis=0)])
        out[path] = v
    grown = dataclasses.replace(ncfg, num_styles=ncfg.num_styles + new)
    return flax.traverse_util.unflatten_dict(out), grown


def style_names_of(model: str | Path, kind: str, meta: dict[str, Any]) -> list[str]:
    """The style of each row of a trained network, as recorded by training or export."""
    if kind == "multistyle":
        return list(
            json.loads(meta["styles"]) if isinstance(meta["styles"], str) else meta["styles"]
        )
    return [str(meta.get("style") or Path(model).name)]


def loss_fn(
    params: Any,
    images: jax.Array,
    vgg: VGGNet,
    style_grams: dict[str, jax.Array],
    weights: dict[str, jax.Array],
    style: jax.Array | None = None,
    *,
    net_cfg: NetConfig,
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
    dtype: Any,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch-mean perceptual loss of the network's output for ``images`` (float [0, 1]).

    ``style_grams`` are (C, C) per layer, or (N, C, C) (each image's own style) with ``style``
    the (N, S) style vectors of a multi-style network.
    """
    y = TransformerNet(net_cfg, dtype).apply({"params": params}, images, None, style)
    n = images.shape[0]
    layers = tuple(dict.fromkeys(content_layers + style_layers))
    # One VGG pass over outputs and (constant) inputs together.
    feats = vgg.features(jnp.concatenate([y, jax.lax.stop_gradient(images)]), layers)
    content = sum(jnp.mean(losses.content_loss(feats[l][:n], feats[l][n:])) for l in content_layers)
    style = sum(
        jnp.mean(losses.style_loss(losses.gram(feats[l][:n]), _per_image(style_grams[l])))
        for l in style_layers
    )
    tv = jnp.mean(losses.tv_loss(y))
    total = weights["content"] * content + weights["style"] * style + weights["tv"] * tv
    return total, {"content": content, "style": style, "tv": tv, "total": total}


def _per_image(grams: jax.Array) -> jax.Array:
    """(C, C) -> (1, C, C); (N, C, C) stays."""
    return grams if grams.ndim == 3 else grams[None]


def sample_styles(seed: int, step: jax.Array, n: int, styles: tuple[int, int]) -> jax.Array:
    """A style index in ``[styles[0], styles[1])`` for each of the ``n`` images of the batch of
    ``step``: a function of the seed and the step alone, so a resumed run draws the same."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    return jax.random.randint(key, (n,), styles[0], styles[1])


def train_step(
    state: TrainState,
    batch: jax.Array,
    vgg: VGGNet,
    style_grams: dict[str, jax.Array],
    weights: dict[str, jax.Array],
    *,
    tx: optax.GradientTransformation,
    net_cfg: NetConfig,
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
    dtype: Any,
    seed: int = 0,
    styles: tuple[int, int] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on a uint8 NHWC batch; returns the new state and the loss terms.

    Multi-style networks: ``style_grams`` are (S, C, C) per layer, and each image of the batch
    gets a style of its own, drawn from ``styles`` (a range of style indices: all of them, or
    the new ones when fine-tuning) by :func:`sample_styles`. Per image rather than one style
    per batch: every step then moves the shared weights towards several styles at once instead
    of pulling them towards one style per step.
    """
    images = batch.astype(jnp.float32) / 255.0
    style = None
    if net_cfg.num_styles > 1:
        idx = sample_styles(seed, state.step, images.shape[0], styles or (0, net_cfg.num_styles))
        style = jax.nn.one_hot(idx, net_cfg.num_styles, dtype=jnp.float32)
        style_grams = {k: g[idx] for k, g in style_grams.items()}
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, terms), grads = grad_fn(
        state.params,
        images,
        vgg,
        style_grams,
        weights,
        style,
        net_cfg=net_cfg,
        content_layers=content_layers,
        style_layers=style_layers,
        dtype=dtype,
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), terms


def make_train_step(
    cfg: TrainConfig,
    tx: optax.GradientTransformation,
    ncfg: NetConfig | None = None,
    first_style: int = 0,
) -> Callable:
    """``train_step`` with its static settings bound, jitted once with the state donated.

    ``ncfg``: the architecture (default: ``cfg``'s, one style); ``first_style``: the first
    style trained (fine-tuning trains the styles from there on).
    """
    ncfg = ncfg or net_config(cfg)
    step = functools.partial(
        train_step,
        tx=tx,
        net_cfg=ncfg,
        seed=cfg.seed,
        styles=(first_style, ncfg.num_styles),
        content_layers=tuple(cfg.content_layers),
        style_layers=tuple(cfg.style_layers),
        dtype=jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32,
    )
    return jax.jit(step, donate_argnums=0)


def create_train_state(
    cfg: TrainConfig,
    tx: optax.GradientTransformation,
    ncfg: NetConfig | None = None,
    params: Any = None,
) -> TrainState:
    """Step 0: the network's initial parameters (seeded by ``cfg.seed``; or ``params``, the
    grown network being fine-tuned) and Adam's state."""
    if params is None:
        params = init_params(ncfg or net_config(cfg), jax.random.PRNGKey(cfg.seed))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def loss_weights(cfg: TrainConfig) -> dict[str, jax.Array]:
    """The loss weights as arrays, so a change of weight does not recompile the step."""
    return {k: jnp.float32(getattr(cfg, f"{k}_weight")) for k in ("content", "style", "tv")}


def style_grams(
    vgg: VGGNet, style: np.ndarray | jax.Array, layers: tuple[str, ...]
) -> dict[str, jax.Array]:
    """The Gram matrix of a float HW3 style image at each of ``layers`` (no batch axis)."""
    feats = vgg.features(jnp.asarray(style)[None], tuple(layers))
    return {k: losses.gram(v)[0] for k, v in feats.items()}


def stacked_style_grams(
    vgg: VGGNet, styles: list[np.ndarray], layers: tuple[str, ...]
) -> dict[str, jax.Array]:
    """(S, C, C) per layer: the Grams of each style image (each of its own size)."""
    each = [style_grams(vgg, s, layers) for s in styles]
    return {k: jnp.stack([g[k] for g in each]) for k in layers}


@jax.jit
def all_finite(tree: Any) -> jax.Array:
    """True when every floating-point value in ``tree`` is finite (one scalar, on device)."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


# ---------------------------------------------------------------------------------------------
# Devices.


class Shardings(NamedTuple):
    """Where the training arrays live: constants and state replicated, batches split."""

    replicated: NamedSharding
    batch: NamedSharding


def make_shardings(batch_size: int) -> Shardings:
    """A one-axis ``data`` mesh over every device; the global batch is split along it.

    Raises:
        TrainError: ``batch_size`` is not divisible by the number of devices.
    """
    devices = jax.devices()
    if batch_size % len(devices):
        raise TrainError(
            f"--batch-size {batch_size} is not divisible by the {len(devices)} devices"
        )
    mesh = Mesh(np.array(devices), ("data",))
    return Shardings(NamedSharding(mesh, P()), NamedSharding(mesh, P("data")))


def maybe_initialize_distributed() -> None:
    """Joins a multi-host job when the standard coordinator variables are set."""
    keys = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
    if any(os.environ.get(k) for k in keys) and jax.process_count() == 1:
        try:
            jax.distributed.initialize()
        except RuntimeError as e:  # already initialised
            if "already" not in str(e):
                raise


# ---------------------------------------------------------------------------------------------
# The workdir: config, checkpoints, metrics, previews.

#: What training writes in its workdir, and whether each is a folder.
WORKDIR_OUTPUTS = {
    "checkpoints": True,
    "tensorboard": True,
    "previews": True,
    "config.json": False,
    "metrics.jsonl": False,
}


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turns an OSError (or a refused output) while writing ``path`` into a TrainError."""
    try:
        yield
    except fileio.OutputError as e:
        raise TrainError(str(e)) from None
    except OSError as e:
        raise TrainError(f"{path}: cannot write ({e.strerror or e})") from e


def prepare_workdir(workdir: str | Path) -> Path:
    """Checks that everything training writes in ``workdir`` can be written, then creates it.

    Runs before any work, so a workdir below a file or on a read-only disk fails at once.

    Raises:
        TrainError: naming the path that cannot be written.
    """
    workdir = Path(workdir).expanduser().resolve()
    for path, folder in [(workdir, True)] + [(workdir / k, v) for k, v in WORKDIR_OUTPUTS.items()]:
        with _writing(path):
            fileio.check_writable(path, folder=folder)
    with _writing(workdir):
        workdir.mkdir(parents=True, exist_ok=True)
    return workdir


@dataclasses.dataclass(frozen=True)
class Run:
    """What a training run makes: the architecture, each style row's name (an image path for
    the styles trained here), and, when fine-tuning, the base network and its first new row."""

    ncfg: NetConfig
    styles: tuple[str, ...]
    base: str | None = None
    first_style: int = 0

    @property
    def trained_styles(self) -> tuple[str, ...]:
        return self.styles[self.first_style :]


def plan_run(
    cfg: TrainConfig, styles: Sequence[str], base: str | Path | None = None
) -> tuple[Run, Any]:
    """The :class:`Run` for ``styles`` (new styles when fine-tuning ``base``, a workdir or a
    model file of a single- or multi-style network) and the grown base parameters (or None).

    Raises:
        TrainError: a base that is not a Johnson network.
    """
    paths = tuple(str(Path(p).resolve()) for p in styles)
    if base is None:
        return Run(net_config(cfg, len(paths)), paths), None
    from jaxstyle import inference, models

    try:
        kind, params, ncfg, meta = inference.load_any(base)
    except models.ModelError as e:
        raise TrainError(str(e)) from None
    if kind not in ("johnson", "multistyle"):
        raise TrainError(f"{base}: --base must be a style network, not an {kind} model")
    names = style_names_of(base, kind, meta)
    params, grown = add_style_rows(params, ncfg, len(paths))
    run = Run(grown, (*names, *paths), str(Path(base).resolve()), len(names))
    return run, params


def _config_json(cfg: TrainConfig, run: Run) -> dict[str, Any]:
    if run.ncfg.num_styles == 1:  # the format of single-style workdirs, unchanged
        return {"style": run.styles[0], **dataclasses.asdict(cfg)}
    finetune = None if run.base is None else {"base": run.base, "first_style": run.first_style}
    return {
        "styles": list(run.styles),
        "net_config": run.ncfg.to_meta(),
        "finetune": finetune,
        **dataclasses.asdict(cfg),
    }


def _check_workdir_config(workdir: Path, current: dict[str, Any]) -> None:
    """Refuses to resume a checkpoint trained with other (non-resumable) settings."""
    path = workdir / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    diffs = [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in current.items()
        if k not in RESUMABLE_CHANGES and json.loads(json.dumps(v)) != saved.get(k)
    ]
    if diffs:
        raise TrainError(
            f"{workdir} holds a run with other settings ({'; '.join(diffs)}); "
            "use a new --workdir or the same settings to resume"
        )


def _write_config(workdir: Path, meta: dict[str, Any]) -> None:
    path = workdir / "config.json"
    with _writing(path), fileio.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))


class Checkpoints:
    """orbax checkpoints of a :class:`TrainState`; never saves a state that is not finite.

    Keeps the last ``max_to_keep``; since a non-finite state is refused rather than saved, a
    diverged run cannot push the good checkpoints out. Use as a context manager: leaving it
    waits for the pending (asynchronous) save.
    """

    def __init__(self, directory: Path, max_to_keep: int = 3, *, create: bool = True) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
        with _writing(self.directory):
            self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def latest_step(self) -> int | None:
        """The step of the newest checkpoint, or ``None``."""
        step = self._mngr.latest_step()
        return None if step is None else int(step)

    def restore(self, step: int, like: TrainState) -> TrainState:
        """The state saved at ``step``, with the shapes, dtypes and shardings of ``like``."""
        abstract = jax.tree_util.tree_map(self._ocp.utils.to_shape_dtype_struct, like)
        return self._mngr.restore(step, args=self._ocp.args.StandardRestore(abstract))

    def check_finite(self, step: int, loss: float, state: TrainState | None = None) -> None:
        """Raises TrainError, naming the last good checkpoint, if ``loss`` or ``state`` is not
        finite. A loss is that of the parameters before ``step``; the state's check catches
        parameters that became non-finite in the step itself.
        """
        if math.isfinite(loss) and (state is None or bool(all_finite(state))):
            return
        self.wait()
        good = self.latest_step()
        what = f"the loss is {loss}" if not math.isfinite(loss) else "the state holds NaN/inf"
        kept = (
            "no checkpoint was saved"
            if good is None
            else f"the last good checkpoint (step {good}) is kept in {self.directory}"
        )
        raise TrainError(
            f"training diverged at step {step}: {what}; stopped without saving it, and {kept}. "
            "Lower --lr or the loss weights and train in a new --workdir"
        )

    def save(self, step: int, state: TrainState, loss: float) -> None:
        """Saves ``state`` as ``step`` (asynchronously) after checking that it is finite."""
        self.check_finite(step, loss, state)
        with _writing(self.directory):
            self._mngr.save(step, args=self._ocp.args.StandardSave(state))

    def wait(self) -> None:
        """Waits until the pending save is on disk."""
        with _writing(self.directory):
            self._mngr.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._mngr.close()


def restore_or_init(ckpts: Checkpoints, state: TrainState) -> tuple[TrainState, int]:
    """The latest checkpoint (its shapes those of ``state``) and its step, or ``(state, 0)``."""
    step = ckpts.latest_step()
    if step is None:
        return state, 0
    return ckpts.restore(step, state), step


class MetricsLog:
    """``metrics.jsonl`` (one JSON record per logged step) and TensorBoard's ``loss/*`` scalars.

    Opening it drops the records past ``start`` (written after the checkpoint a resumed run
    starts from) and any line that is not a whole JSON record (a run killed mid-write).
    """

    def __init__(self, workdir: Path, start: int) -> None:
        self.path = workdir / "metrics.jsonl"
        with _writing(self.path):
            _truncate_metrics(self.path, start)
            self._file = open(self.path, "a")  # noqa: SIM115 - closed by close()
        self._tb = _summary_writer(workdir / "tensorboard")

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record`` (with its ``step``) and flushes, so a crash loses no record."""
        with _writing(self.path):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=record["step"]):
                for k in ("total", "content", "style", "tv"):
                    tf.summary.scalar(f"loss/{k}", record[k])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.flush()


def _summary_writer(folder: Path) -> Any:
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf.summary.create_file_writer(str(folder))


def _truncate_metrics(path: Path, step: int) -> None:
    """Keeps the whole records of steps up to ``step``; rewrites the file atomically."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the half-written last line of a killed run
        if isinstance(record, dict) and record.get("step", math.inf) <= step:
            keep.append(line)
    with fileio.atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))


#: Previews of multi-style networks show at most this many styles (the first ones trained).
PREVIEW_STYLES = 8


def _previewer(
    folder: Path,
    ncfg: NetConfig,
    validation: list[np.ndarray],
    replicated: NamedSharding,
    first_style: int = 0,
) -> Callable[[int, TrainState], None]:
    """``(step, state) -> None`` saving the validation images above their stylised versions:
    one row per style trained (up to :data:`PREVIEW_STYLES`)."""
    from jaxstyle import images as imlib

    apply = jax.jit(
        lambda p, x, s: TransformerNet(ncfg).apply({"params": p}, x, None, s),
        out_shardings=replicated,
    )
    x = np.stack(validation).astype(np.float32)
    top = np.concatenate(list(x), axis=1)
    if ncfg.num_styles == 1:
        styles = [None]
    else:
        rows = range(first_style, min(ncfg.num_styles, first_style + PREVIEW_STYLES))
        styles = [np.eye(ncfg.num_styles, dtype=np.float32)[k] for k in rows]

    def save(step: int, state: TrainState) -> None:
        grid = [top]
        for s in styles:
            y = np.clip(np.asarray(apply(state.params, jnp.asarray(x), s)), 0, 1)
            grid.append(np.concatenate(list(y), axis=1))
        path = folder / f"step_{step:06d}.png"
        with _writing(path):
            imlib.save_image(path, np.concatenate(grid))

    return save


# ---------------------------------------------------------------------------------------------
# Data.


@contextlib.contextmanager
def open_batches(cfg: TrainConfig, start: int = 0) -> Iterator[tuple[Iterator[np.ndarray], Any]]:
    """This host's uint8 batches from step ``start + 1`` on, and the skipped-files counter.

    The pipeline is deterministic, so skipping ``start`` batches resumes exactly where a run
    stopped. The TensorFlow iterator is closed on leaving the ``with``.
    """
    from jaxstyle import input_pipeline

    ds, skipped = input_pipeline.make_dataset(
        cfg.data,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size // jax.process_count(),
        seed=cfg.seed,
        data_dir=cfg.data_dir or None,
        num_shards=jax.process_count(),
        shard_index=jax.process_index(),
    )
    with input_pipeline.NumpyBatches(ds.skip(start)) as batches:
        yield batches, skipped


def validation_images(cfg: TrainConfig, n: int = 4) -> list[np.ndarray]:
    """Fixed preview images: centre crops of the first ``n`` files, float HW3 in [0, 1].

    Read from a dataset of their own: a second iterator over the training dataset would
    advance its reshuffling seed.
    """
    from jaxstyle import input_pipeline

    ds, _ = input_pipeline.make_dataset(
        cfg.data,
        image_size=cfg.image_size,
        batch_size=min(cfg.batch_size, n),
        seed=cfg.seed,
        data_dir=cfg.data_dir or None,
        shuffle_buffer=0,
        random_crop=False,
    )
    with input_pipeline.NumpyBatches(ds.take(1)) as batches:
        first = next(batches)
    return [b.astype(np.float32) / 255.0 for b in first]


# ---------------------------------------------------------------------------------------------
# The loop and the driver.


class _Interrupt:
    """Turns the first Ctrl-C/SIGTERM into a flag (checkpoint, then stop); a second one kills."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclasses.dataclass
class LoopOutputs:
    """Where :func:`train_loop` writes: checkpoints, metrics and preview images."""

    ckpts: Checkpoints
    metrics: MetricsLog
    preview: Callable[[int, TrainState], None]
    skipped: Any  # input_pipeline.SkipCounter: read when a record is written


def train_loop(
    cfg: TrainConfig,
    state: TrainState,
    start: int,
    batches: Iterator[np.ndarray],
    step_fn: Callable,
    consts: tuple[Any, ...],
    batch_sharding: NamedSharding,
    out: LoopOutputs,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Steps ``start + 1 .. cfg.steps``, logging, previewing and checkpointing on schedule.

    ``consts`` are the step's arguments after the batch (VGG, style Grams, loss weights). Stops
    early, with a checkpoint, on Ctrl-C/SIGTERM. Returns the last metrics record plus
    ``compile_seconds`` and ``interrupted``.

    Raises:
        TrainError: the loss or the state became non-finite (nothing non-finite is saved).
    """
    from tqdm.auto import tqdm

    last: dict[str, Any] = {"step": start}
    bar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not progress, desc="train")
    step, t_compile, t_last, saved = start, None, time.perf_counter(), start
    with _Interrupt() as interrupt:
        while step < cfg.steps and not interrupt.requested:
            batch = jax.tree_util.tree_map(  # an array, or a tuple of arrays (AdaIN)
                lambda b: jax.make_array_from_process_local_data(batch_sharding, b), next(batches)
            )
            if t_compile is None:
                t0 = time.perf_counter()
                step_fn = step_fn.lower(state, batch, *consts).compile()
                t_compile = time.perf_counter() - t0
            state, terms = step_fn(state, batch, *consts)
            step += 1
            bar.update(1)
            log = step % cfg.log_every == 0 or step == cfg.steps
            show = step % cfg.preview_every == 0 or step == cfg.steps
            save = step % cfg.checkpoint_every == 0 or step == cfg.steps or interrupt.requested
            if not (log or show or save):
                continue  # no host sync: the next step is dispatched at once
            terms = {k: float(v) for k, v in terms.items()}
            if log:
                now = time.perf_counter()
                last = {"step": step, **terms, "skipped_images": out.skipped.count}
                last["seconds"], t_last = now - t_last, now
                out.metrics.write(last)
                bar.set_postfix({k: f"{terms[k]:.4g}" for k in ("total", "content", "style")})
            out.ckpts.check_finite(step, terms["total"])  # before a preview of NaNs
            if show:
                out.preview(step, state)
            if save:
                out.ckpts.save(step, state, terms["total"])
                saved = step
        if interrupt.requested and saved != step:  # the signal came after this step's check
            out.ckpts.save(step, state, float(terms["total"]))
    bar.close()
    if interrupt.requested and step < cfg.steps:
        print(f"interrupted at step {step}: checkpoint saved; rerun to resume", file=sys.stderr)
    return {**last, "compile_seconds": t_compile, "interrupted": interrupt.requested}


def _style_targets(cfg: TrainConfig, run: Run, vgg: VGGNet) -> dict[str, jax.Array]:
    """The Gram targets: (C, C) per layer for one style; (S, C, C) for several, with zeros
    in the rows of a base network's styles (fine-tuning never draws them)."""
    from jaxstyle import images as imlib

    def grams(path: str) -> dict[str, jax.Array]:
        image = imlib.resize_long_side(imlib.load_image(path), cfg.style_size)
        return style_grams(vgg, image, cfg.style_layers)

    if run.ncfg.num_styles == 1:
        return grams(run.styles[0])
    trained = [grams(p) for p in run.trained_styles]
    zeros = {k: jnp.zeros_like(v) for k, v in trained[0].items()}
    rows = [zeros] * run.first_style + trained
    return {k: jnp.stack([r[k] for r in rows]) for k in cfg.style_layers}


def train_and_evaluate(
    cfg: TrainConfig,
    workdir: str | Path,
    styles: str | Sequence[str],
    vgg: VGGNet,
    *,
    base: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains (or resumes) in ``workdir``; returns the last metrics record.

    Args:
        cfg: settings.
        workdir: checkpoints, ``config.json``, ``metrics.jsonl``, TensorBoard events, previews.
        styles: the style image, or several: one multi-style network learns them all (each
            image of a batch draws its style, see :func:`train_step`).
        vgg: the VGG16 loss network.
        base: fine-tune: a trained network (workdir or model file) to which ``styles`` are
            added as new rows; only those rows are trained.
        progress: show a progress bar.

    Returns:
        The last metrics record (``step``, the loss terms, ...), with ``compile_seconds`` and
        ``interrupted``; only ``step`` when ``workdir`` had already trained ``cfg.steps``.

    Raises:
        TrainError: unwritable workdir, other settings in it, a bad base network, or a loss
            that became non-finite.
        DataError: the data cannot be read (nothing is written in ``workdir`` then).
    """
    cfg.validate()
    maybe_initialize_distributed()
    workdir = prepare_workdir(workdir)
    run, base_params = plan_run(cfg, [styles] if isinstance(styles, (str, Path)) else styles, base)
    meta = _config_json(cfg, run)
    shardings = make_shardings(cfg.batch_size)
    tx = make_optimizer(cfg, finetune_mask(run.ncfg, run.first_style) if base else None)
    with Checkpoints(workdir / "checkpoints") as ckpts:
        if ckpts.latest_step() is not None:  # settings matter only when resuming
            _check_workdir_config(workdir, meta)
        initial = create_train_state(cfg, tx, run.ncfg, base_params)
        state, start = restore_or_init(ckpts, initial)
        if start >= cfg.steps:
            print(
                f"{workdir}: already trained {start} steps (--steps {cfg.steps})",
                file=sys.stderr,
            )
            return {"step": start}
        with open_batches(cfg, start) as (batches, skipped):
            first = next(batches)  # the data works: only now is this run worth recording
            if start == 0:
                _write_config(workdir, meta)
            vgg = jax.device_put(vgg.with_pooling("max"), shardings.replicated)
            consts = (vgg, _style_targets(cfg, run, vgg), loss_weights(cfg))
            preview = _previewer(
                workdir / "previews",
                run.ncfg,
                validation_images(cfg),
                shardings.replicated,
                run.first_style,
            )
            with MetricsLog(workdir, start) as metrics:
                return train_loop(
                    cfg,
                    jax.device_put(state, shardings.replicated),
                    start,
                    itertools.chain([first], batches),
                    make_train_step(cfg, tx, run.ncfg, run.first_style),
                    jax.device_put(consts, shardings.replicated),
                    shardings.batch,
                    LoopOutputs(ckpts, metrics, preview, skipped),
                    progress=progress,
                )


def restore_params(workdir: str | Path) -> tuple[Any, NetConfig, dict[str, Any]]:
    """The latest checkpointed parameters of a workdir, its architecture and its config
    (``config.json``'s fields plus ``step``)."""
    workdir = Path(workdir).resolve()
    cfg_path = workdir / "config.json"
    if not cfg_path.exists():
        raise TrainError(f"{workdir}: not a training workdir (no config.json)")
    saved = json.loads(cfg_path.read_text())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(
        **{k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items() if k in fields}
    )
    if "net_config" in saved:  # several styles
        ncfg = NetConfig.from_meta(saved["net_config"])
        finetune = saved.get("finetune")
        mask = finetune_mask(ncfg, finetune["first_style"]) if finetune else None
    else:
        ncfg, mask = net_config(cfg), None
    if not (workdir / "checkpoints").is_dir():
        raise TrainError(f"{workdir}: no checkpoint yet")
    with Checkpoints(workdir / "checkpoints", create=False) as ckpts:
        like = create_train_state(cfg, make_optimizer(cfg, mask), ncfg)
        state, step = restore_or_init(ckpts, like)
    if step == 0:
        raise TrainError(f"{workdir}: no checkpoint yet")
    return state.params, ncfg, {**saved, "step": step}
