"""Iterative style transfer (Gatys, Ecker & Bethge 2015): optimise the pixels of an image.

The image ``x`` minimises ``content_weight * content + style_weight * style + tv_weight * tv``
(formulas in :mod:`jaxstyle.losses`) with L-BFGS from jaxopt (or Adam from optax), under jit:

* Targets (content features, style Gram matrices) are computed once per scale.
* One program is compiled per image shape and batch size. It runs a chunk of iterations in a
  ``while_loop`` whose length is an argument, so progress reports and intermediate saves happen
  between chunks without recompiling. Loss weights are arguments too: changing them reuses it.
* Several content images of one shape are optimised together: the per-image problem is
  ``vmap``-ed, so every image keeps its own L-BFGS history and line search, exactly as if it
  were optimised alone, while the network runs on the whole batch at once.
* Divergence (a non-finite loss, or one more than ``EXPLODE_FACTOR`` times the best so far) stops
  that image's chunk; the optimiser restarts from the best finite iterate, and the user is told.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import images as imlib
from jaxstyle import losses
from jaxstyle.configs import GatysConfig
from jaxstyle.nets.vgg import VGGNet

#: A loss above this multiple of the best loss so far for EXPLODE_PATIENCE iterations in a row
#: counts as divergence (a non-finite loss at once). L-BFGS without a line search has brief spikes
#: of 10-1000x in its first iterations that it recovers from by itself; those are let through.
EXPLODE_FACTOR = 100.0
EXPLODE_PATIENCE = 3
#: Restarts per image and scale before the optimisation of that image is abandoned (best kept).
MAX_RESTARTS = 5
#: Largest pixel change of the first L-BFGS step, in [0, 1] units.
FIRST_STEP = 0.05
_HIST = ("total", "content", "style", "tv", "nfev")


def objective(
    x: jax.Array,
    net: VGGNet,
    content_t: dict[str, jax.Array],
    style_g: dict[str, jax.Array],
    weights: dict[str, jax.Array],
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The Gatys loss of one image ``x`` (H, W, 3); see :func:`jaxstyle.losses.gatys_loss`."""
    layers = tuple(dict.fromkeys(content_layers + style_layers))
    feats = net.features(x[None], layers)
    return losses.gatys_loss(
        feats,
        x[None],
        {n: content_t[n] for n in content_layers},
        {n: style_g[n] for n in style_layers},
        content_weight=weights["content"],
        style_weight=weights["style"],
        tv_weight=weights["tv"],
        style_layer_weights={n: weights["layers"][i] for i, n in enumerate(style_layers)},
        style_blend_weights=weights["blend"],
    )


class _Optimizer:
    """A uniform ``init``/``step`` over jaxopt L-BFGS and optax Adam for one image."""

    def __init__(self, cfg: GatysConfig, fun: Callable):
        self.cfg, self.fun = cfg, fun
        if cfg.optimizer == "lbfgs":
            import jaxopt

            # linesearch "none": unit steps along the L-BFGS direction, one function evaluation
            # per iteration, as torch.optim.LBFGS and neural-style do by default. Measured at
            # 128 px over 40 iterations it reached a lower loss than jaxopt's zoom line search
            # with 41 instead of 108 evaluations; divergence is caught by the restart logic.
            kw = {"stepsize": 1.0} if cfg.linesearch == "none" else {"linesearch": cfg.linesearch}
            self.solver = jaxopt.LBFGS(
                fun=fun, has_aux=True, history_size=cfg.history_size, tol=0.0, maxiter=1 << 30, **kw
            )
        else:
            import optax

            self.tx = optax.adam(cfg.lr)

    def init(self, x, *args):
        """Returns ``(state, loss at x)``."""
        if self.cfg.optimizer == "lbfgs":
            state = self.solver.init_state(x, *args)
            # jaxopt's first step is -grad with stepsize <= 1: with losses ~1e5 that is far too
            # long and the line search burns dozens of evaluations shrinking it. Scale the first
            # direction so its largest pixel change is FIRST_STEP (torch.optim.LBFGS scales by
            # 1/|g|_1 for the same reason); later steps use L-BFGS's own curvature scaling.
            scale = FIRST_STEP / (jnp.max(jnp.abs(state.grad)) + 1e-12)
            return state._replace(gamma=scale.astype(state.gamma.dtype)), state.value
        value, _ = self.fun(x, *args)
        return (self.tx.init(x), jnp.ones((), jnp.int32)), value

    def step(self, x, state, *args):
        """Returns ``(new x, state, evaluated x, its loss, its terms, function evaluations)``."""
        if self.cfg.optimizer == "lbfgs":
            slot = state.iter_num % self.cfg.history_size  # where jaxopt stores this pair
            old_gamma = state.gamma
            new_x, state = self.solver.update(x, state, *args)
            # Without a line search nothing guarantees the curvature condition s.y > 0; jaxopt
            # stores the pair anyway, and a negative rho (or gamma) turns the next direction
            # uphill: the loss then climbs and stalls (seen on the demo images). Drop such a
            # pair, as torch.optim.LBFGS does (it skips pairs with y.s <= 1e-10).
            rho = state.rho_history[slot]
            bad = ~(rho > 0) | (rho > 1e10)
            state = state._replace(
                rho_history=state.rho_history.at[slot].set(jnp.where(bad, 0.0, rho)),
                gamma=jnp.where(bad, old_gamma, state.gamma),
            )
            # Projected L-BFGS: keep the image in [0, 1]. Unconstrained L-BFGS pushes ~3% of
            # pixels out of range, and clipping them afterwards raised the loss by ~20% at
            # 128 px; projecting every step ended 14% lower at the same cost (jaxopt's LBFGSB
            # ended higher still, and slower). The loss reported is the one before projection.
            new_x = jnp.clip(new_x, 0.0, 1.0)
            return new_x, state, new_x, state.value, state.aux, state.num_fun_eval
        import optax

        opt_state, nfev = state
        (value, terms), grad = jax.value_and_grad(self.fun, has_aux=True)(x, *args)
        updates, opt_state = self.tx.update(grad, opt_state, x)
        # Projected Adam: the image stays a valid image in [0, 1].
        new_x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
        return new_x, (opt_state, nfev + 1), x, value, terms, nfev + 1


#: Compiled programs kept in memory, so repeated calls (a weight sweep, a batch of scales, an
#: experiment script) reuse them instead of recompiling. Least recently used entries go first.
_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 8


def _cached(key, make):
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = _CACHE[key] = make()
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def _chunk_len(cfg: GatysConfig) -> int:
    """Most iterations between progress reports (and intermediate saves)."""
    return cfg.progress_every if cfg.save_every <= 0 else min(cfg.progress_every, cfg.save_every)


def _static_key(cfg: GatysConfig) -> tuple:
    """The settings a program depends on (loss weights are arguments, not part of it).

    ``objective`` is part of the key so that replacing it (as the divergence test does) builds
    new programs.
    """
    buf = _chunk_len(cfg)
    lr = cfg.lr if cfg.optimizer == "adam" else None
    return (
        objective,
        cfg.optimizer,
        lr,
        cfg.linesearch,
        cfg.history_size,
        buf,
        tuple(cfg.content_layers),
        tuple(cfg.style_layers),
    )


def _programs(cfg: GatysConfig):
    return _cached(("programs", _static_key(cfg)), lambda: _build(cfg))


def _compiled(cfg: GatysConfig, programs, x, args):
    """AOT-compiled ``init``, ``chunk`` and ``evaluate`` for these argument shapes."""
    init_fn, chunk_fn, eval_fn = programs
    leaves, tree = jax.tree_util.tree_flatten((x, args))
    key = ("compiled", _static_key(cfg), tree, tuple((a.shape, str(a.dtype)) for a in leaves))

    def make():
        init_c = init_fn.lower(x, *args).compile()
        state, value = jax.eval_shape(init_fn, x, *args)
        n_arr = jax.ShapeDtypeStruct((x.shape[0],), jnp.int32)
        chunk_c = chunk_fn.lower(x, state, x, value, n_arr, *args).compile()
        return init_c, chunk_c, eval_fn.lower(x, *args).compile()

    return _cached(key, make)


def _build(cfg: GatysConfig):
    """The jitted, batch-vmapped ``init``, ``chunk`` and ``evaluate`` programs for ``cfg``."""
    content_layers, style_layers = tuple(cfg.content_layers), tuple(cfg.style_layers)

    def fun(x, net, content_t, style_g, weights):
        return objective(x, net, content_t, style_g, weights, content_layers, style_layers)

    opt = _Optimizer(cfg, fun)
    buf = _chunk_len(cfg)

    def init_one(x, net, content_t, style_g, weights):
        return opt.init(x, net, content_t, style_g, weights)

    def step_one(x, state, best_x, best_v, high, active, net, content_t, style_g, weights):
        """One iteration with divergence bookkeeping; an inactive image is left unchanged."""
        new_x, new_state, x_eval, value, terms, nfev = opt.step(
            x, state, net, content_t, style_g, weights
        )
        finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(new_x))
        new_high = jnp.where(value > EXPLODE_FACTOR * best_v, high + 1, 0)
        sane = finite & (new_high < EXPLODE_PATIENCE)
        better = active & finite & (value < best_v)
        best_x = jnp.where(better, x_eval, best_x)
        best_v = jnp.where(better, value, best_v)
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        x = keep(new_x, x)
        state = jax.tree_util.tree_map(keep, new_state, state)
        row = jnp.stack([value, terms["content"], terms["style"], terms["tv"], nfev])
        return x, state, best_x, best_v, keep(new_high, high), row.astype(jnp.float32), sane

    def chunk_one(x, state, best_x, best_v, n, net, content_t, style_g, weights):
        args = (net, content_t, style_g, weights)
        hist = jnp.zeros((buf, len(_HIST)), jnp.float32)

        def cond(c):
            return (c[0] < n) & c[-1]

        def body(c):
            i, x, state, best_x, best_v, hist, high, _ = c
            x, state, best_x, best_v, high, row, sane = step_one(
                x, state, best_x, best_v, high, jnp.array(True), *args
            )
            return i + 1, x, state, best_x, best_v, hist.at[i].set(row), high, sane

        zero = jnp.zeros((), jnp.int32)
        c = (zero, x, state, best_x, best_v, hist, zero, jnp.array(True))
        i, x, state, best_x, best_v, hist, _, ok = jax.lax.while_loop(cond, body, c)
        return x, state, best_x, best_v, hist, i, ok

    def evaluate_one(x, net, content_t, style_g, weights):
        return fun(x, net, content_t, style_g, weights)

    shared = (None, 0, 0, None)  # net and weights shared; targets per image
    init = jax.jit(jax.vmap(init_one, in_axes=(0, *shared)))
    evaluate = jax.jit(jax.vmap(evaluate_one, in_axes=(0, *shared)))
    if jax.default_backend() == "cpu":
        # XLA:CPU runs the body of a while_loop about 2x slower than the same computation
        # dispatched on its own (0.78 vs 0.43 s per VGG16 iteration at 256 px, measured on 2
        # cores), so on CPU a chunk is a host loop over a jitted single step; the dispatch
        # overhead is microseconds against hundreds of milliseconds of work.
        step = jax.jit(jax.vmap(step_one, in_axes=(0, 0, 0, 0, 0, 0, *shared)))
        return init, _HostChunk(step, buf), evaluate, buf
    chunk = jax.jit(jax.vmap(chunk_one, in_axes=(0, 0, 0, 0, 0, *shared)))
    return init, chunk, evaluate, buf


class _HostChunk:
    """The chunk program's interface, run as a host loop over a compiled single step."""

    def __init__(self, step, buf: int, compiled=None):
        self.step, self.buf, self.compiled = step, buf, compiled

    def lower(self, x, state, best_x, best_v, n_arr, *args):
        high = jax.ShapeDtypeStruct((x.shape[0],), jnp.int32)
        active = jax.ShapeDtypeStruct((x.shape[0],), jnp.bool_)
        lowered = self.step.lower(x, state, best_x, best_v, high, active, *args)
        return _Compiling(lambda: _HostChunk(self.step, self.buf, lowered.compile()))

    def __call__(self, x, state, best_x, best_v, n_arr, *args):
        n_arr = np.asarray(n_arr)
        b = n_arr.shape[0]
        hist = np.zeros((b, self.buf, len(_HIST)), np.float32)
        steps = np.zeros(b, np.int32)
        ok = np.ones(b, bool)
        high = jnp.zeros((b,), jnp.int32)
        for i in range(int(n_arr.max(initial=0))):
            active = (i < n_arr) & ok
            if not active.any():
                break
            x, state, best_x, best_v, high, row, sane = self.compiled(
                x, state, best_x, best_v, high, jnp.asarray(active), *args
            )
            row, sane = np.asarray(row), np.asarray(sane)
            hist[active, i] = row[active]
            steps += active
            ok &= ~(active & ~sane)
        return x, state, best_x, best_v, hist, steps, ok


class _Compiling:
    def __init__(self, make):
        self.compile = make


@dataclasses.dataclass
class GatysResult:
    """Stylised images (HWC float32 in [0, 1], content order) and the run's log."""

    images: list[np.ndarray]
    log: dict[str, Any]


def _weights(cfg: GatysConfig, n_styles: int) -> dict[str, jax.Array]:
    layers = cfg.style_layer_weights or (1.0,) * len(cfg.style_layers)
    blend = np.asarray(cfg.style_blend_weights or (1.0,) * n_styles, np.float32)
    if len(blend) != n_styles:
        raise ValueError(
            f"--style-blend-weights has {len(blend)} values for {n_styles} style images"
        )
    return {
        "content": jnp.float32(cfg.content_weight),
        "style": jnp.float32(cfg.style_weight),
        "tv": jnp.float32(cfg.tv_weight),
        "layers": jnp.asarray(layers, jnp.float32),
        "blend": jnp.asarray(blend / blend.sum()),
    }


def _initial(cfg: GatysConfig, content: np.ndarray, style: np.ndarray, key) -> np.ndarray:
    h, w = content.shape[:2]
    if cfg.init == "content":
        return content
    if cfg.init == "noise":
        return np.asarray(jax.random.uniform(key, (h, w, 3), jnp.float32))
    if cfg.init == "style":
        return imlib.resize(style, h, w)
    return imlib.resize(imlib.load_image(cfg.init), h, w)


def stylize(
    contents: Sequence[np.ndarray],
    styles: Sequence[np.ndarray],
    net: VGGNet,
    cfg: GatysConfig,
    *,
    progress: bool = True,
    on_save: Callable[[int, int, np.ndarray], None] | None = None,
    log_fn: Callable[[str], None] | None = None,
) -> GatysResult:
    """Stylises each content image with the blend of ``styles``.

    Args:
        contents: HWC RGB float images in [0, 1] (any sizes; same-shape ones run as a batch).
        styles: HWC RGB float style images.
        net: the loss network (``cfg.pooling`` is applied to it).
        cfg: settings; see :class:`jaxstyle.configs.GatysConfig`.
        progress: show a progress bar.
        on_save: called as ``on_save(image_index, iteration, image)`` every ``cfg.save_every``
            iterations (counted over all scales).
        log_fn: where warnings go (default: the progress bar's ``write``).

    Returns:
        A :class:`GatysResult`.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    if not contents or not styles:
        raise ValueError("need at least one content and one style image")
    net = net.with_pooling(cfg.pooling)
    weights = _weights(cfg, len(styles))
    init_fn, chunk_fn, eval_fn, buf = _programs(cfg)
    scales = cfg.resolved_scales()
    key = jax.random.PRNGKey(cfg.seed)
    n_img = len(contents)

    results: list[np.ndarray | None] = [None] * n_img
    records: list[dict[str, Any]] = []
    per_image = [{"iterations": 0, "function_evaluations": 0, "restarts": 0} for _ in contents]
    compile_s = optimise_s = 0.0
    feat_jit = jax.jit(lambda net, x, layers: net.features(x, layers), static_argnums=2)
    sized_per_scale = [[imlib.resize_long_side(c, s) for c in contents] for s in scales]
    n_groups = sum(len({c.shape for c in sized}) for sized in sized_per_scale)
    bar = tqdm(total=cfg.iterations * n_groups, unit="it", disable=not progress, desc="stylize")
    say = log_fn or bar.write

    for si, (scale, sized) in enumerate(zip(scales, sized_per_scale, strict=True)):
        offset = si * cfg.iterations  # iterations done at earlier scales
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, c in enumerate(sized):
            groups.setdefault(c.shape, []).append(i)
        style_long = max(16, round(scale * cfg.style_scale))
        base_styles = [imlib.resize_long_side(s, style_long) for s in styles]
        for shape, idx in groups.items():
            # Targets, once per scale: content features, and style Grams per image (histogram
            # colour preservation recolours the style for each content image).
            cont = jnp.asarray(np.stack([sized[i] for i in idx]))
            feats = feat_jit(net, cont, tuple(cfg.content_layers))
            content_t = {k: v[:, None] for k, v in feats.items()}  # (B, 1, h, w, c)
            grams = []
            for i in idx:
                st = base_styles
                if cfg.preserve_colors == "histogram":
                    st = [imlib.match_color(s, sized[i]) for s in base_styles]
                feats = [feat_jit(net, jnp.asarray(s)[None], tuple(cfg.style_layers)) for s in st]
                grams.append(losses.style_targets(feats))
            style_g = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *grams)
            x0 = []
            for i in idx:
                if si == 0:
                    key, sub = jax.random.split(key)
                    x0.append(_initial(cfg, sized[i], base_styles[0], sub))
                else:  # coarse-to-fine: start from the previous scale's result
                    x0.append(imlib.resize(results[i], *shape[:2]))
            x = jnp.asarray(np.stack(x0).astype(np.float32))
            args = (net, content_t, style_g, weights)

            t0 = time.perf_counter()
            init_c, chunk_c, eval_c = _compiled(cfg, (init_fn, chunk_fn, eval_fn), x, args)
            compile_s += time.perf_counter() - t0
            state, value = init_c(x, *args)

            best_x, best_v = x, value
            restarts = np.zeros(len(idx), int)
            frozen = np.zeros(len(idx), bool)
            nfev_base = np.zeros(len(idx), int)  # evaluations before the latest restart
            last_row = np.zeros(len(_HIST))  # image 0's latest losses, for the progress bar
            t0 = time.perf_counter()
            done = 0
            while done < cfg.iterations:
                n = min(buf, cfg.iterations - done)
                if cfg.save_every > 0:
                    n = min(n, cfg.save_every - (offset + done) % cfg.save_every)
                pending = np.where(frozen, 0, n).astype(np.int32)
                while pending.any():
                    x, state, best_x, best_v, hist, steps, ok = chunk_c(
                        x, state, best_x, best_v, jnp.asarray(pending), *args
                    )
                    hist, steps, ok = np.asarray(hist), np.asarray(steps), np.asarray(ok)
                    if steps[0] > 0:
                        last_row = hist[0, int(steps[0]) - 1]
                    for b, i in enumerate(idx):
                        start = offset + done + (n - int(pending[b]))
                        for t in range(int(steps[b])):
                            row = dict(zip(_HIST, hist[b, t].tolist(), strict=True))
                            nfev = int(row.pop("nfev")) + int(nfev_base[b])
                            records.append(
                                {
                                    "scale": scale,
                                    "image": i,
                                    "iteration": start + t + 1,
                                    **row,
                                    "function_evaluations": nfev,
                                }
                            )
                        per_image[i]["iterations"] += int(steps[b])
                    pending = pending - steps.astype(np.int32)
                    failed = ~ok & ~frozen
                    if failed.any():
                        nfev_base += np.where(failed, np.asarray(_nfev(state)), 0)
                        state, x = _restart(init_c, state, x, best_x, failed, args)
                        for b in np.flatnonzero(failed):
                            restarts[b] += 1
                            per_image[idx[b]]["restarts"] += 1
                            frozen[b] = restarts[b] > MAX_RESTARTS
                            what = "giving up on it, keeping" if frozen[b] else "restarting from"
                            say(
                                f"warning: image {idx[b]}: the loss diverged at iteration "
                                f"{offset + done + n - int(pending[b])} (scale {scale}); {what} "
                                f"the best iterate (loss {float(np.asarray(best_v)[b]):.4g})"
                            )
                    pending = np.where(frozen, 0, pending)
                done += n
                bar.update(n)
                bar.set_postfix(
                    {k: f"{v:.3g}" for k, v in zip(_HIST[:4], last_row[:4].tolist(), strict=True)}
                )
                if on_save and cfg.save_every > 0 and (offset + done) % cfg.save_every == 0:
                    out = np.asarray(best_x)
                    for b, i in enumerate(idx):
                        on_save(i, offset + done, _finish(cfg, out[b], sized[i]))
            jax.block_until_ready(best_x)
            optimise_s += time.perf_counter() - t0
            nfev_total = nfev_base + np.asarray(_nfev(state))
            for b, i in enumerate(idx):
                results[i] = np.clip(np.asarray(best_x[b]), 0.0, 1.0)
                per_image[i]["function_evaluations"] += int(nfev_total[b])
            if si == len(scales) - 1:
                # Report the loss of the image that is saved (clipped to [0, 1]).
                _, terms = eval_c(jnp.asarray(np.stack([results[i] for i in idx])), *args)
                for b, i in enumerate(idx):
                    per_image[i].update({k: float(v[b]) for k, v in terms.items()})
    bar.close()

    final = [
        _finish(cfg, results[i], imlib.resize_long_side(contents[i], scales[-1]))
        for i in range(n_img)
    ]
    summary = {k: float(sum(p[k] for p in per_image)) for k in ("content", "style", "tv", "total")}
    summary.update(
        iterations=sum(p["iterations"] for p in per_image),
        function_evaluations=sum(p["function_evaluations"] for p in per_image),
        restarts=sum(p["restarts"] for p in per_image),
        optimisation_seconds=optimise_s,
        compile_seconds=compile_s,
        network={"arch": net.arch, "pooling": net.pooling, "convention": net.convention},
        per_image=per_image,
    )
    log = {"config": dataclasses.asdict(cfg), "iterations": records, "summary": summary}
    return GatysResult(images=final, log=log)


def _nfev(state) -> jax.Array:
    """Function evaluations since the optimiser state was initialised (per image)."""
    return state.num_fun_eval if hasattr(state, "num_fun_eval") else state[1]


def _restart(init_c, state, x, best_x, failed: np.ndarray, args):
    """Re-initialises the optimiser of the failed images from their best iterate."""
    mask = jnp.asarray(failed)
    new_x = jnp.where(mask[:, None, None, None], best_x, x)
    fresh, _ = init_c(new_x, *args)

    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree_util.tree_map(pick, fresh, state), new_x


def _finish(cfg: GatysConfig, image: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Applies post-processing (luminance colour preservation) to an output image."""
    image = np.clip(image, 0.0, 1.0)
    if cfg.preserve_colors == "luminance":
        image = imlib.transfer_luminance(image, content)
    return image
