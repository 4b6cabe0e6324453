"""Feed-forward style transfer training (Johnson, Alahi & Fei-Fei 2016).

A transformation network (``transformer_net``) is trained with Adam so that its output for a
content image ``x`` minimises ``content_weight * content(y, x) + style_weight * style(y, s) +
tv_weight * tv(y)`` under VGG16, with the loss definitions of :mod:`jaxstyle.losses` averaged over
the batch. ``train_step`` is a plain function, jitted once with the state donated.

Scaling: the batch is sharded over every local device along a ``data`` mesh axis (parameters
replicated); with several hosts, ``jax.distributed.initialize()`` runs when the standard
coordinator variables are set and each host reads its own shard of the data.

Reliability: orbax checkpoints every ``checkpoint_every`` steps and on Ctrl-C/SIGTERM; rerunning
the same command in the same workdir restores the latest one and skips the batches already
seen, so training continues with exactly the losses it would have had.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxstyle import losses
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


def net_config(cfg: TrainConfig) -> NetConfig:
    return dataclasses.replace(PRESETS[cfg.net], upsample=cfg.upsample)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.lr)


def loss_fn(
    params: Any,
    images: jax.Array,
    vgg: VGGNet,
    style_grams: dict[str, jax.Array],
    weights: dict[str, jax.Array],
    *,
    net_cfg: NetConfig,
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
    dtype: Any,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch-mean perceptual loss of the network's output for ``images`` (float [0, 1])."""
    y = TransformerNet(net_cfg, dtype).apply({"params": params}, images)
    n = images.shape[0]
    layers = tuple(dict.fromkeys(content_layers + style_layers))
    # One VGG pass over outputs and (constant) inputs together.
    feats = vgg.features(jnp.concatenate([y, jax.lax.stop_gradient(images)]), layers)
    content = sum(jnp.mean(losses.content_loss(feats[l][:n], feats[l][n:])) for l in content_layers)
    style = sum(
        jnp.mean(losses.style_loss(losses.gram(feats[l][:n]), style_grams[l][None]))
        for l in style_layers
    )
    tv = jnp.mean(losses.tv_loss(y))
    total = weights["content"] * content + weights["style"] * style + weights["tv"] * tv
    return total, {"content": content, "style": style, "tv": tv, "total": total}


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
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on a uint8 NHWC batch; returns the new state and the loss terms."""
    images = batch.astype(jnp.float32) / 255.0
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, terms), grads = grad_fn(
        state.params,
        images,
        vgg,
        style_grams,
        weights,
        net_cfg=net_cfg,
        content_layers=content_layers,
        style_layers=style_layers,
        dtype=dtype,
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), terms


def make_train_step(cfg: TrainConfig, tx: optax.GradientTransformation) -> Callable:
    """``train_step`` with its static settings bound, jitted once with the state donated."""
    step = functools.partial(
        train_step,
        tx=tx,
        net_cfg=net_config(cfg),
        content_layers=tuple(cfg.content_layers),
        style_layers=tuple(cfg.style_layers),
        dtype=jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32,
    )
    return jax.jit(step, donate_argnums=0)


# ---------------------------------------------------------------------------------------------
# The training loop.


def maybe_initialize_distributed() -> None:
    """Joins a multi-host job when the standard coordinator variables are set."""
    keys = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
    if any(os.environ.get(k) for k in keys) and jax.process_count() == 1:
        try:
            jax.distributed.initialize()
        except RuntimeError as e:  # already initialised
            if "already" not in str(e):
                raise


def _config_json(cfg: TrainConfig, style_path: str) -> dict[str, Any]:
    return {"style": str(Path(style_path).resolve()), **dataclasses.asdict(cfg)}


def _check_workdir_config(workdir: Path, current: dict[str, Any]) -> None:
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


def train_and_evaluate(
    cfg: TrainConfig,
    workdir: str | Path,
    style_path: str,
    vgg: VGGNet,
    *,
    progress: bool = True,
    validation: list[np.ndarray] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Trains (or resumes) in ``workdir``; returns the last metrics record.

    Args:
        cfg: settings.
        workdir: checkpoints, ``config.json``, ``metrics.jsonl``, TensorBoard events, previews.
        style_path: the style image.
        vgg: the VGG16 loss network.
        progress: show a progress bar.
        validation: fixed images for previews (default: the first batch of the data).
        stop_after: stop (with a checkpoint) after this many steps of this call, as if
            interrupted (tests).
    """
    import orbax.checkpoint as ocp
    from tqdm.auto import tqdm

    from jaxstyle import images as imlib
    from jaxstyle import input_pipeline

    cfg.validate()
    maybe_initialize_distributed()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    meta = _config_json(cfg, style_path)
    _check_workdir_config(workdir, meta)
    style = imlib.resize_long_side(imlib.load_image(style_path), cfg.style_size)

    devices = jax.devices()
    if cfg.batch_size % len(devices):
        raise TrainError(
            f"--batch-size {cfg.batch_size} is not divisible by the {len(devices)} devices"
        )
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))

    vgg = jax.device_put(vgg.with_pooling("max"), replicated)
    style_feats = vgg.features(jnp.asarray(style)[None], tuple(cfg.style_layers))
    style_grams = {k: losses.gram(v)[0] for k, v in style_feats.items()}
    weights = {
        "content": jnp.float32(cfg.content_weight),
        "style": jnp.float32(cfg.style_weight),
        "tv": jnp.float32(cfg.tv_weight),
    }
    style_grams, weights = jax.device_put((style_grams, weights), replicated)

    tx = make_optimizer(cfg)
    ncfg = net_config(cfg)
    params = init_params(ncfg, jax.random.PRNGKey(cfg.seed))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    mngr = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=3, create=True),
    )
    start = 0
    if mngr.latest_step() is not None:
        start = int(mngr.latest_step())
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
        state = mngr.restore(start, args=ocp.args.StandardRestore(abstract))
    else:
        (workdir / "config.json").write_text(json.dumps(meta, indent=1))
    state = jax.device_put(state, replicated)
    if start >= cfg.steps:
        print(f"{workdir}: already trained {start} steps (--steps {cfg.steps})", file=sys.stderr)
        return {"step": start}

    source = cfg.data
    ds, skipped = input_pipeline.make_dataset(
        source,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size // jax.process_count(),
        seed=cfg.seed,
        data_dir=cfg.data_dir or None,
        num_shards=jax.process_count(),
        shard_index=jax.process_index(),
    )
    if validation is None:
        # Fixed preview images: centre crops of the first files, from a dataset of their own
        # (a second iterator over ``ds`` would advance its reshuffling seed).
        val_ds, _ = input_pipeline.make_dataset(
            source,
            image_size=cfg.image_size,
            batch_size=min(cfg.batch_size, 4),
            seed=cfg.seed,
            data_dir=cfg.data_dir or None,
            shuffle_buffer=0,
            random_crop=False,
        )
        first = next(input_pipeline.iterate_numpy(val_ds.take(1)))
        validation = [b.astype(np.float32) / 255.0 for b in first]
    ds = ds.skip(start)  # deterministic pipeline: resume exactly where the last run stopped
    batches = input_pipeline.iterate_numpy(ds)

    step_fn = make_train_step(cfg, tx)
    preview_fn = jax.jit(
        lambda p, x: TransformerNet(ncfg).apply({"params": p}, x), out_shardings=replicated
    )
    tb = _summary_writer(workdir)
    metrics_path = workdir / "metrics.jsonl"
    _truncate_metrics(metrics_path, start)
    previews = workdir / "previews"

    last: dict[str, Any] = {"step": start}
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not progress, desc="train")
    t_compile = None
    with _Interrupt() as interrupt, open(metrics_path, "a") as metrics_file:
        t_last, step = time.perf_counter(), start
        while step < end and not interrupt.requested:
            local = next(batches)
            batch = jax.make_array_from_process_local_data(batch_sharding, local)
            if t_compile is None:
                t0 = time.perf_counter()
                step_fn = step_fn.lower(state, batch, vgg, style_grams, weights).compile()
                t_compile = time.perf_counter() - t0
            state, terms = step_fn(state, batch, vgg, style_grams, weights)
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == end:
                terms = {k: float(v) for k, v in terms.items()}
                now = time.perf_counter()
                last = {
                    "step": step,
                    **terms,
                    "skipped_images": skipped.count,
                    "seconds": now - t_last,
                }
                t_last = now
                metrics_file.write(json.dumps(last) + "\n")
                metrics_file.flush()
                bar.set_postfix({k: f"{terms[k]:.4g}" for k in ("total", "content", "style")})
                if tb is not None:
                    with tb.as_default(step=step):
                        import tensorflow as tf

                        for k, v in terms.items():
                            tf.summary.scalar(f"loss/{k}", v)
            if step % cfg.preview_every == 0 or step == cfg.steps:
                _save_preview(previews / f"step_{step:06d}.png", preview_fn, state, validation)
            if step % cfg.checkpoint_every == 0 or step == end:
                mngr.save(step, args=ocp.args.StandardSave(state))
        if interrupt.requested and step < end:
            mngr.save(step, args=ocp.args.StandardSave(state))
            bar.write(f"interrupted at step {step}: checkpoint saved; rerun to resume")
    mngr.wait_until_finished()
    bar.close()
    if tb is not None:
        tb.flush()
    last["compile_seconds"] = t_compile
    last["interrupted"] = bool(interrupt.requested)
    return last


def _summary_writer(workdir: Path):
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf.summary.create_file_writer(str(workdir / "tensorboard"))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops records past ``step`` (written after the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in keep))


def _save_preview(path: Path, preview_fn, state: TrainState, validation: list[np.ndarray]):
    from jaxstyle import images as imlib

    x = np.stack(validation).astype(np.float32)
    y = np.clip(np.asarray(preview_fn(state.params, jnp.asarray(x))), 0, 1)
    top = np.concatenate(list(x), axis=1)
    bottom = np.concatenate(list(y), axis=1)
    imlib.save_image(path, np.concatenate([top, bottom], axis=0))


def restore_params(workdir: str | Path) -> tuple[Any, NetConfig, dict[str, Any]]:
    """The latest checkpointed parameters of a workdir, its architecture and its config."""
    import orbax.checkpoint as ocp

    workdir = Path(workdir).resolve()
    cfg_path = workdir / "config.json"
    if not cfg_path.exists():
        raise TrainError(f"{workdir}: not a training workdir (no config.json)")
    saved = json.loads(cfg_path.read_text())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(
        **{k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items() if k in fields}
    )
    mngr = ocp.CheckpointManager(workdir / "checkpoints")
    step = mngr.latest_step()
    if step is None:
        raise TrainError(f"{workdir}: no checkpoint yet")
    ncfg = net_config(cfg)
    tx = make_optimizer(cfg)
    params = init_params(ncfg, jax.random.PRNGKey(0))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    state = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    return state.params, ncfg, {**saved, "step": int(step)}
