"""The driver of Gatys' method: it only sequences the pieces.

For each scale (coarse to fine): resize the content images, group same-shape ones into a batch,
compute the targets once (:func:`targets`), pick the starting images (:func:`starts`), and run
the batch's iterations in chunks (:func:`optimise`), restarting an image that diverged from its
best iterate; between chunks it reports progress and saves intermediate images. The run's log
records every iteration's losses, and :attr:`GatysResult.failed` says when an image ended badly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import images as imlib
from jaxstyle import losses
from jaxstyle.configs import GatysConfig
from jaxstyle.gatys import programs, regions, tiles
from jaxstyle.gatys.lbfgs import num_evaluations
from jaxstyle.gatys.objective import loss_weights, objective
from jaxstyle.nets.vgg import VGGNet, layer_names

#: Restarts per image and scale before the optimisation of that image is abandoned (best kept).
MAX_RESTARTS = 5


@dataclasses.dataclass
class GatysResult:
    """Stylised images (HWC float32 in [0, 1], content order), the run's log, and what failed.

    ``failed`` holds one sentence per image that ended badly (its final loss is not finite, or
    it used up its :data:`MAX_RESTARTS` restarts at some scale); empty when all went well.
    """

    images: list[np.ndarray]
    log: dict[str, Any]
    failed: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Run:
    """What a run accumulates: the log's records and counters, and where messages go."""

    say: Callable[[str], None]
    per_image: list[dict[str, Any]]
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    latest: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)  # per image
    failed: list[str] = dataclasses.field(default_factory=list)
    compile_s: float = 0.0
    optimise_s: float = 0.0


@contextlib.contextmanager
def _compile_time(run: _Run) -> Iterator[None]:
    """Adds the seconds JAX spends tracing, lowering and compiling inside the block to
    ``run.compile_s`` (and so leaves them out of the optimisation time)."""
    # This thread's only: a background compilation (programs.precompile) overlaps other work;
    # the time the driver waits for it is added by the caller.
    t0 = time.perf_counter()
    with programs.compile_seconds() as spent:
        try:
            yield
        finally:
            run.compile_s += spent[0]
            run.optimise_s += time.perf_counter() - t0 - spent[0]


def stylize(
    contents: Sequence[np.ndarray],
    styles: Sequence[np.ndarray],
    net: VGGNet,
    cfg: GatysConfig,
    *,
    progress: bool = True,
    on_save: Callable[[int, int, np.ndarray], None] | None = None,
    log_fn: Callable[[str], None] | None = None,
    objective: programs.Objective = objective,
    callback: Callable[[int, int, dict[str, float], np.ndarray], None] | None = None,
    callback_every: int = 1,
    aux: Sequence[Mapping[str, np.ndarray]] | None = None,
    init_images: Sequence[np.ndarray] | None = None,
) -> GatysResult:
    """Stylises each content image with the blend of ``styles``.

    Args:
        contents: HWC RGB float images in [0, 1] (any sizes; same-shape ones run as a batch).
        styles: HWC RGB float style images.
        net: the loss network (``cfg.pooling`` is applied to it).
        cfg: settings; see :class:`jaxstyle.configs.GatysConfig`.
        progress: show a progress bar (on stderr).
        on_save: called as ``on_save(image_index, iteration, image)`` every ``cfg.save_every``
            iterations (counted over all scales).
        log_fn: where warnings go (default: stderr, above the progress bar).
        objective: the loss of one image, with the signature of
            :func:`jaxstyle.gatys.objective.objective` (the default). A scale over the memory
            budget, or longer than ``cfg.tile``, runs in tiles (:mod:`jaxstyle.gatys.tiles`)
            with the default loss only; there ``aux`` may hold only style masks.
        callback: called as ``callback(image_index, iteration, losses, image)`` every
            ``callback_every`` iterations (counted over all scales, as ``on_save``) and after
            each scale's last iteration. ``losses`` is that image's latest log record
            (``total``, the weighted sum; the unweighted ``content``, ``style`` and ``tv``;
            ``function_evaluations``; ``scale``);
            ``image`` is what the run would return if it stopped there (the best iterate so far,
            post-processed), HWC float32 at the current scale. Each call copies the batch's
            images from the device, and chunks of iterations end at every call.
        callback_every: iterations between calls of ``callback`` (>= 1).
        aux: per content image, extra per-pixel inputs of ``objective``: a mapping of names to
            (H, W, C) float arrays at that content image's full size (all images the same
            names). At each scale each is resized to the scale's image size and reaches the
            objective in its ``content_t`` argument under its name, as an (h, w, C) array; so
            they are program arguments (a new frame or mask needs no recompilation). A name
            must not be a layer of the network.
        init_images: per content image, its starting image (HWC RGB in [0, 1], resized to
            the first scale) instead of ``cfg.init``: a video frame starts from the previous
            output warped to it.

    Returns:
        A :class:`GatysResult`.

    Raises:
        ValueError: impossible settings, or no content or no style image.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    if not contents or not styles:
        raise ValueError("need at least one content and one style image")
    if callback_every < 1:
        raise ValueError(f"callback_every must be >= 1, got {callback_every}")
    _check_aux(aux, contents, net)
    if init_images is not None and len(init_images) != len(contents):
        raise ValueError(f"{len(init_images)} init_images for {len(contents)} content images")
    net = net.with_pooling(cfg.pooling)
    weights = loss_weights(cfg, len(styles))
    pcfg = programs.program_config(cfg)
    scales = cfg.resolved_scales()
    sized_per_scale = [[imlib.resize_long_side(c, s) for c in contents] for s in scales]
    report = _Report(on_save, callback, callback_every)
    plans = [{k: tiles.plan(cfg, k[:2], len(i)) for k, i in _groups(sized).items()}
             for sized in sized_per_scale]  # fmt: skip
    if any(p for per_scale in plans for p in per_scale.values()):
        tiles.check_objective(objective, aux[0] if aux else {})
    units = sum(
        cfg.iterations if p is None else
        tiles.bar_units(cfg, k[:2], p, len(g), si * cfg.iterations, report.periods(cfg))
        for si, sized in enumerate(sized_per_scale)
        for (k, g), p in zip(_groups(sized).items(), plans[si].values(), strict=True)
    )  # fmt: skip
    bar = tqdm(total=units, unit="it", disable=not progress, desc="stylize", file=sys.stderr)
    say = log_fn or (lambda m: bar.write(m, file=sys.stderr))
    run = _Run(say=say, per_image=[_image_log() for _ in contents])
    results: list[np.ndarray] = [np.empty(0)] * len(contents)
    key = None  # (made from cfg.seed when a noise start needs it)
    for si, (scale, sized) in enumerate(zip(scales, sized_per_scale, strict=True)):
        style_long = max(16, round(scale * cfg.style_scale))
        base_styles = [imlib.resize_long_side(s, style_long) for s in styles]
        for shape, idx in _groups(sized).items():
            tiling = plans[si][shape]
            if tiling is None:  # (a tiled scale computes its targets window by window)
                content_t, style_g = targets(net, cfg, [sized[i] for i in idx], base_styles)
                if aux is not None:
                    content_t = {**content_t, **_aux_at(aux, idx, sized[idx[0]].shape[:2])}
                args = (net, content_t, style_g, weights)
            # init_images stand in for a previous scale's results (resized the same way).
            given = si == 0 and init_images is not None
            x, key = starts(
                cfg, 1 if given else si, [sized[i] for i in idx], base_styles,
                init_images if given else results, idx, key,
            )  # fmt: skip
            group = _Group(scale, si * cfg.iterations, idx, [sized[i] for i in idx])
            if tiling is not None:
                last = si == len(scales) - 1
                best = _tiled(run, cfg, pcfg, net, weights, tiling, group, x, base_styles, aux,
                              bar, report, last)  # fmt: skip
            else:
                final = si == len(scales) - 1
                best = optimise(run, cfg, pcfg, objective, group, x, args, bar, report, final)
            for b, i in enumerate(idx):
                results[i] = best[b]
            if si == len(scales) - 1 and tiling is None:
                _final_losses(run, pcfg, objective, group, best, args)
    bar.close()
    final = [
        _finish(cfg, results[i], imlib.resize_long_side(contents[i], scales[-1]))
        for i in range(len(contents))
    ]
    run.failed += [
        f"image {i}: the final loss is not finite ({p['total']})"
        for i, p in enumerate(run.per_image)
        if not np.isfinite(p["total"])
    ]
    log = {"config": dataclasses.asdict(cfg), "iterations": run.records}
    log["summary"] = _summary(run, net, pcfg)
    return GatysResult(images=final, log=log, failed=list(run.failed))


def _tiled(run, cfg, pcfg, net, weights, plan, group, x, styles, aux, bar, report, last):
    """A batch at a tiled scale (:mod:`jaxstyle.gatys.tiles`): its images one after the
    other, window by window; the whole-image losses at the last scale."""
    size = group.contents[0].shape[:2]
    masks = [None] * len(group.idx)
    if aux and regions.STYLE_MASKS in aux[0]:
        masks = [np.asarray(m) for m in _aux_at(aux, group.idx, size)[regions.STYLE_MASKS]]
    with _compile_time(run):
        best = tiles.optimise(
            run, cfg, pcfg, net, weights, plan, group, list(np.asarray(x)), styles, masks, bar,
            report, functools.partial(_finish, cfg), MAX_RESTARTS,
        )  # fmt: skip
        if last:
            tiles.final_losses(run, cfg, net, weights, plan, group, best, styles, masks)
    return best


def _check_aux(aux, contents: Sequence[np.ndarray], net: VGGNet) -> None:
    """Raises ValueError unless ``aux`` has one mapping per content image, the same names in
    each, none a layer name, each value (H, W, C) at its content image's size."""
    if aux is None:
        return
    if len(aux) != len(contents):
        raise ValueError(f"aux has {len(aux)} entries for {len(contents)} content images")
    names = set(aux[0]) if aux else set()
    for i, (extra, content) in enumerate(zip(aux, contents, strict=True)):
        if set(extra) != names:
            raise ValueError(f"aux[{i}] has names {sorted(extra)}, aux[0] {sorted(names)}")
        for name, a in extra.items():
            if name in layer_names(net.arch):
                raise ValueError(f"aux name {name!r} is a layer of the network")
            if np.ndim(a) != 3 or np.shape(a)[:2] != content.shape[:2]:
                raise ValueError(
                    f"aux[{i}][{name!r}] has shape {np.shape(a)}; expected (H, W, C) with "
                    f"(H, W) = {content.shape[:2]}, the content image's size"
                )


def _aux_at(aux, idx: Sequence[int], size: tuple[int, int]) -> dict[str, jax.Array]:
    """The batch ``idx``'s auxiliary inputs resized to ``size``, stacked: name -> (B, h, w, C)."""

    def at(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float32)
        if a.shape[:2] == size:
            return a
        return np.asarray(jax.image.resize(a, (*size, a.shape[2]), "linear"))

    return {n: jnp.asarray(np.stack([at(aux[i][n]) for i in idx])) for n in aux[idx[0]]}


def _image_log() -> dict[str, Any]:
    return {"iterations": 0, "function_evaluations": 0, "restarts": 0}


def _groups(sized: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of the images of each shape (each shape is optimised as one batch)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(sized):
        groups.setdefault(c.shape, []).append(i)
    return groups


@dataclasses.dataclass
class _Group:
    """A batch of same-shape content images at one scale, and its restart bookkeeping."""

    scale: int
    offset: int  # iterations done at earlier scales
    idx: list[int]  # the images' indices among the contents
    contents: list[np.ndarray]  # the images at this scale

    def __post_init__(self):
        b = len(self.idx)
        self.restarts = np.zeros(b, int)
        self.frozen = np.zeros(b, bool)  # used up its restarts: no more iterations
        self.nfev_base = np.zeros(b, int)  # evaluations before the latest restart


def targets(
    net: VGGNet, cfg: GatysConfig, contents: Sequence[np.ndarray], styles: Sequence[np.ndarray]
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Content features ``(B, 1, h, w, c)`` and style Grams ``(B, S, c, c)`` of a batch.

    With ``preserve_colors="histogram"`` each content image gets Grams of the styles
    recoloured to its colours. Each image's features and Gram matrices are one compiled
    program, and the batch is stacked by another: computed op by op, the Grams were a dozen
    small programs, which took 0.4 s of a warm 256 px run (measured).
    """
    # (device_put: jnp.asarray compiles a small program per shape on JAX 0.10.)
    batch = jax.device_put(np.stack(contents).astype(np.float32))
    content_t = _content_targets(net, batch, tuple(cfg.content_layers))
    layers = tuple(cfg.style_layers)
    grams = []
    for content in contents:
        st = styles
        if cfg.preserve_colors == "histogram":
            st = [imlib.match_color(s, content) for s in styles]
        grams.append(
            [_grams(net, jax.device_put(np.asarray(s, np.float32)[None]), layers) for s in st]
        )
    return content_t, _stack_grams(grams)


@functools.partial(jax.jit, static_argnums=2)
def _content_targets(net: VGGNet, x: jax.Array, layers: tuple[str, ...]) -> dict[str, jax.Array]:
    return {k: v[:, None] for k, v in net.features(x, layers).items()}


@functools.partial(jax.jit, static_argnums=2)
def _grams(net: VGGNet, x: jax.Array, layers: tuple[str, ...]) -> dict[str, jax.Array]:
    """``{layer: (1, C, C)}`` of one image ``x`` (1, H, W, 3)."""
    return {k: losses.gram(v) for k, v in net.features(x, layers).items()}


@jax.jit
def _stack_grams(grams: list[list[dict[str, jax.Array]]]) -> dict[str, jax.Array]:
    """``{layer: (B, S, C, C)}`` from ``grams[b][s][layer]`` (1, C, C)."""
    return {
        k: jnp.stack([jnp.concatenate([g[k] for g in per]) for per in grams]) for k in grams[0][0]
    }


def starts(
    cfg: GatysConfig,
    scale_index: int,
    contents: Sequence[np.ndarray],
    styles: Sequence[np.ndarray],
    results: Sequence[np.ndarray],
    idx: Sequence[int],
    key: jax.Array | None,
) -> tuple[jax.Array, jax.Array | None]:
    """The starting images of a batch (``cfg.init`` at the first scale, else the previous
    scale's results enlarged: coarse to fine), and the advanced random key (``None`` until a
    noise start needs one; then made from ``cfg.seed``). Only noise draws from the key: its
    programs are compiled only then (0.15 s of a first run, measured)."""
    x0 = []
    for content, i in zip(contents, idx, strict=True):
        if scale_index > 0:
            x0.append(imlib.resize(results[i], *content.shape[:2]))
            continue
        sub = None
        if cfg.init == "noise":
            key = jax.random.PRNGKey(cfg.seed) if key is None else key
            key, sub = jax.random.split(key)
        x0.append(_initial(cfg, content, styles[0], sub))
    return jax.device_put(np.stack(x0).astype(np.float32)), key


def _initial(cfg: GatysConfig, content: np.ndarray, style: np.ndarray, key) -> np.ndarray:
    h, w = content.shape[:2]
    if cfg.init == "content":
        return content
    if cfg.init == "noise":
        return np.asarray(jax.random.uniform(key, (h, w, 3), jnp.float32))
    if cfg.init == "style":
        return imlib.resize(style, h, w)
    return imlib.resize(imlib.load_image(cfg.init), h, w)


@dataclasses.dataclass(frozen=True)
class _Report:
    """What the driver hands out between chunks: intermediate saves and the caller's callback."""

    on_save: Callable[[int, int, np.ndarray], None] | None = None
    callback: Callable[[int, int, dict[str, float], np.ndarray], None] | None = None
    callback_every: int = 1

    def periods(self, cfg: GatysConfig) -> list[int]:
        """Iteration periods that chunks must end on (counted over all scales)."""
        saves = [cfg.save_every] if cfg.save_every > 0 else []
        return saves + ([self.callback_every] if self.callback else [])


def optimise(
    run: _Run,
    cfg: GatysConfig,
    pcfg: GatysConfig,
    objective: programs.Objective,
    group: _Group,
    x: jax.Array,
    args: tuple,
    bar: Any,
    report: _Report,
    final: bool = False,
) -> np.ndarray:
    """``cfg.iterations`` iterations of a batch from ``x``, chunk by chunk, with progress,
    intermediate saves and callbacks between chunks; returns the best iterates, (B, H, W, 3)
    in [0, 1]. With ``final`` (the last scale) the program of the final losses is compiled
    alongside the first ones."""
    with _compile_time(run):
        wait = programs.precompile(pcfg, objective, final, x, *args)
    # The targets, computed while the programs were traced, are not optimisation time: the
    # first evaluation waited for them (0.3 s at 256 px, measured).
    jax.block_until_ready(args)
    with _compile_time(run):
        carry = programs.start(pcfg, objective, x, *args)
    run.compile_s += wait()
    done = 0
    periods = report.periods(cfg)
    while done < cfg.iterations:
        n = min(programs.chunk_len(cfg), cfg.iterations - done)
        for period in periods:  # a chunk ends where a save or a callback is due
            n = min(n, period - (group.offset + done) % period)
        with _compile_time(run):
            carry, last = _chunk(run, pcfg, objective, group, carry, n, done, args)
        done += n
        bar.update(n)
        if last is not None:
            terms = zip(programs.HIST[:4], last[:4].tolist(), strict=True)
            bar.set_postfix({k: f"{v:.3g}" for k, v in terms})
        _report(run, cfg, report, group, carry, group.offset + done, done == cfg.iterations)
    nfev = group.nfev_base + np.asarray(num_evaluations(carry.state))
    for b, i in enumerate(group.idx):
        run.per_image[i]["function_evaluations"] += int(nfev[b])
    return np.clip(np.asarray(carry.best_x), 0.0, 1.0)


def _report(run: _Run, cfg, report: _Report, group: _Group, carry, at: int, last: bool) -> None:
    """Intermediate saves and callbacks due at iteration ``at`` (over all scales); the best
    iterates are copied from the device only when one is due."""
    save = bool(report.on_save) and cfg.save_every > 0 and at % cfg.save_every == 0
    call = bool(report.callback) and (at % report.callback_every == 0 or last)
    if not (save or call):
        return
    out = np.asarray(carry.best_x)
    for b, i in enumerate(group.idx):
        image = _finish(cfg, out[b], group.contents[b])
        if save:
            report.on_save(i, at, image)
        if call:
            losses = {
                k: v for k, v in run.latest.get(i, {}).items() if k not in ("image", "iteration")
            }
            report.callback(i, at, losses, image)


def _chunk(run, pcfg, objective, group: _Group, carry, n: int, done: int, args):
    """``n`` more iterations of every image still going, restarting those that diverge.

    Returns the carry and image 0's last history row (None if it ran no iteration).
    """
    pending = np.where(group.frozen, 0, n).astype(np.int32)
    last = None
    while pending.any():
        start = group.offset + done + n - pending  # iterations done per image
        carry, hist, steps, ok = programs.run_chunk(pcfg, objective, carry, pending, *args)
        _record(run, group, hist, steps, start)
        if steps[0] > 0:
            last = hist[0, steps[0] - 1]
        pending = pending - steps.astype(np.int32)
        failed = ~ok & ~group.frozen
        if failed.any():
            carry = _restart(run, pcfg, objective, group, carry, failed, start + steps, args)
        pending = np.where(group.frozen, 0, pending)
    return carry, last


def _record(run: _Run, group: _Group, hist, steps, start) -> None:
    """Appends the chunk's per-iteration losses to the log."""
    for b, i in enumerate(group.idx):
        for t in range(int(steps[b])):
            row = dict(zip(programs.HIST, hist[b, t].tolist(), strict=True))
            nfev = int(row.pop("nfev")) + int(group.nfev_base[b])
            record = {
                "scale": group.scale,
                "image": i,
                "iteration": int(start[b]) + t + 1,
                **row,
                "function_evaluations": nfev,
            }
            run.records.append(record)
            run.latest[i] = record
        run.per_image[i]["iterations"] += int(steps[b])


def _restart(run, pcfg, objective, group: _Group, carry, failed, iteration, args):
    """Restarts the ``failed`` images from their best iterate, or gives up on those that used
    up their restarts (they keep their best iterate); says so either way."""
    group.nfev_base += np.where(failed, np.asarray(num_evaluations(carry.state)), 0)
    carry = programs.restart(pcfg, objective, carry, jnp.asarray(failed), *args)
    best_v = np.asarray(carry.best_v)
    for b in np.flatnonzero(failed):
        i = group.idx[b]
        group.restarts[b] += 1
        run.per_image[i]["restarts"] += 1
        group.frozen[b] = group.restarts[b] > MAX_RESTARTS
        what = "giving up on it, keeping" if group.frozen[b] else "restarting from"
        run.say(
            f"warning: image {i}: the loss diverged at iteration {int(iteration[b])} "
            f"(scale {group.scale}); {what} the best iterate (loss {best_v[b]:.4g})"
        )
        if group.frozen[b]:
            run.failed.append(
                f"image {i}: the loss diverged {MAX_RESTARTS + 1} times at scale {group.scale}; "
                f"its optimisation was abandoned at loss {best_v[b]:.4g}"
            )
    return carry


def _final_losses(run: _Run, pcfg, objective, group: _Group, best: np.ndarray, args) -> None:
    """Records the losses of the images that are saved (clipped to [0, 1])."""
    _, terms = programs.losses(pcfg, objective, jax.device_put(np.asarray(best, np.float32)), *args)
    for b, i in enumerate(group.idx):
        run.per_image[i].update({k: float(np.asarray(v)[b]) for k, v in terms.items()})


def _summary(run: _Run, net: VGGNet, pcfg: GatysConfig) -> dict[str, Any]:
    per_image = run.per_image
    summary: dict[str, Any] = {
        k: float(sum(p[k] for p in per_image)) for k in ("content", "style", "tv", "total")
    }
    summary.update(
        iterations=sum(p["iterations"] for p in per_image),
        function_evaluations=sum(p["function_evaluations"] for p in per_image),
        restarts=sum(p["restarts"] for p in per_image),
        optimisation_seconds=run.optimise_s,
        compile_seconds=run.compile_s,
        loop=pcfg.loop,
        network={"arch": net.arch, "pooling": net.pooling, "convention": net.convention},
        failed=list(run.failed),
        per_image=per_image,
    )
    return summary


def _finish(cfg: GatysConfig, image: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Applies post-processing (luminance colour preservation) to an output image."""
    image = np.clip(image, 0.0, 1.0)
    if cfg.preserve_colors == "luminance":
        image = imlib.transfer_luminance(image, content)
    return image
