"""Tiled Gatys: optimise an image too large for memory one overlapping tile at a time.

The whole image stays in host memory; the network only ever sees a *window*: a tile (its
*core*, the pixels being optimised) with ``tile_halo`` pixels of context around it, which the
tile leaves as they are. Every window of a scale has the same shape (windows at the image's
edges are shifted inwards), so a scale compiles one set of programs whatever the image size,
and device memory is bounded by the window, not the output.

**The loss a tile minimises is the whole image's**, as a function of the tile's pixels with
every other pixel held (block coordinate descent):

* content: content targets are the content image's features in the same window (computed tile
  by tile); the tile's term is its loss region's share of the whole image's mean, ``sum (F -
  F_c)^2 / (C * N)`` with ``N`` the positions of the whole image's grid. The *loss region* is
  the core grown by ``halo // 2`` pixels: a pixel near the core's edge moves its neighbours'
  features too, and their loss counts.
* style: Gram matrices are global, and a tile never gets a style target of its own. The whole
  image's Gram numerator ``sum_p F_p F_p^T`` is a sum over positions; the tile's Gram is
  ``(rest + sum_region F_p F_p^T) / (C * N)`` where ``rest`` is the sum over every position
  outside its loss region (kept up to date as tiles change), compared with the whole style
  image's Gram
  matrices (themselves computed tile by tile when the style image is large). So the tile's
  style term *is* the whole image's style term, not an average of per-tile terms (which would
  ask every tile to hold every texture of the style on its own).
* TV: every pair of neighbouring pixels that touches the core, over the whole image's count.

Each tile gets ``tile_iterations`` iterations of the configured optimiser (a fresh L-BFGS
history per visit: the optimiser state is per window, never per image, so memory stays
bounded; one full-image L-BFGS history of 20 pairs at 3000x2000 would be 2.9 GB alone), then
the next tile runs against the updated image (Gauss-Seidel). A *sweep* visits every tile once;
``iterations`` per scale are counted per pixel (``iterations / tile_iterations`` sweeps).

Seams are hidden three ways: the halo gives the tile's features the context of its
neighbours; overlap and blend: the tile's variables reach ``halo // 4`` pixels past its core
and fade linearly from 1 to 0 over ``2 * (halo // 4)`` pixels across each core edge (the image
the loss sees is ``blend * tile + (1 - blend) * current``, which is also what is written back,
so neighbouring tiles meet in a ramp, never a one-pixel step); and the tile grid shifts by half
a tile between sweeps (as crowsonkb's tiled style transfer shifts its grid), so every seam of
one sweep lies in the middle of a tile in the next. Measured at 96 px with 48 px tiles and a
16 px halo (10 iterations, demo images), the mean absolute pixel difference across the last
sweep's tile edges was 1.44x that elsewhere with neither margin nor blend, 1.61x with the
margin alone, and 0.92x with both (the untiled run: 1.02x on the same lines).
Features near the window's edge still differ from the whole image's (zero padding replaces
the pixels beyond the halo); that, and the ``rest`` of each sweep being a few tiles stale, are
the approximations: the tiled loss is close to the untiled one, not equal (tests bound it).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import backend
from jaxstyle import images as imlib
from jaxstyle.configs import GatysConfig
from jaxstyle.gatys import programs
from jaxstyle.gatys.lbfgs import num_evaluations
from jaxstyle.gatys.regions import STYLE_MASKS, at_grid, gram_numerators, style_distance
from jaxstyle.nets.vgg import CHANNELS, VGGNet

#: The largest tile automatic tiling chooses (larger ones gain little and compile longer).
AUTO_TILE_MAX = 1024
#: Automatic tiles are multiples of this (the network's deepest pooling step).
AUTO_TILE_STEP = 64

# Names of the tile objective's per-window inputs (in its ``content_t`` argument).
_PIX = "tile:pixels"  # (h, w, 1): the core's blend weight: 1 inside, 0 on the halo
_CONTEXT = "tile:context"  # (h, w, 3): the window of the current image
_LOSS = "tile:loss"  # (h, w, 1): positions whose loss the tile counts (core + margin)
_REGIONS = "tile:regions"  # (h, w, R): the loss map times each style mask (R = 1 without)
_TV_NORM = "tile:tv_norm"  # the whole image's count of neighbour pairs times channels


def _rest(n: str) -> str:
    return f"tile:rest:{n}"  # (R, C, C) the other tiles' Gram numerators


def _norm(n: str) -> str:
    return f"tile:norm:{n}"  # (R,) Gram normalisers C * sum of region weights; content: C * N


def _pairs(n: str) -> str:
    return f"tile:pairs:{n}"  # (R, S) region-style weights


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a scale is tiled: tile side, halo, and the one window shape (h, w) it compiles."""

    tile: int
    halo: int
    window: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Window:
    """A window's top-left corner in the image and its core (absolute, half-open)."""

    y: int
    x: int
    core: tuple[int, int, int, int]  # y0, y1, x0, x1


def budget(cfg: GatysConfig) -> int:
    """Bytes the run may plan to use: ``--max-memory``, else
    :func:`jaxstyle.backend.memory_budget`."""
    if cfg.max_memory:
        from jaxstyle.tiling import parse_bytes

        return parse_bytes(cfg.max_memory)
    return backend.memory_budget()


def auto_tile(cfg: GatysConfig, image_pixels: int = 0) -> int:
    """The largest tile (a multiple of :data:`AUTO_TILE_STEP`, at most :data:`AUTO_TILE_MAX`)
    whose tiled run of ``image_pixels`` fits :func:`budget`; the smallest step when none
    does."""
    limit = budget(cfg)
    for tile in range(AUTO_TILE_MAX, AUTO_TILE_STEP - 1, -AUTO_TILE_STEP):
        side = tile + 2 * cfg.tile_halo
        if tiled_bytes(side * side, image_pixels, cfg) <= limit:
            return tile
    return AUTO_TILE_STEP


def plan(cfg: GatysConfig, shape: Sequence[int], n_images: int = 1) -> Plan | None:
    """The tiling of a scale whose images are ``shape`` (h, w), ``n_images`` of them run
    together untiled; ``None`` when it runs untiled.

    With ``cfg.tile`` a scale is tiled when its long side exceeds the tile; with ``tile=0``
    when the untiled run's memory estimate (:func:`jaxstyle.backend.gatys_bytes`) exceeds
    :func:`budget`, with tiles of :func:`auto_tile`.
    """
    h, w = int(shape[0]), int(shape[1])
    if cfg.tile > 0:
        if max(h, w) <= cfg.tile:
            return None
        tile = cfg.tile
    else:
        if backend.gatys_bytes(h * w * n_images, cfg.history_size) <= budget(cfg):
            return None
        tile = auto_tile(cfg, h * w * n_images)
    side = tile + 2 * cfg.tile_halo
    return Plan(tile, cfg.tile_halo, (min(h, side), min(w, side)))


#: Peak memory of a tiled run, from the peak resident memory (``ru_maxrss``) of ``jaxstyle
#: stylize`` runs on CPU (2 cores, JAX 0.10.2, tubingen + starry night, 8 iterations a scale):
#: a fixed part (the process: Python, JAX, VGG16, compiled programs), bytes per window pixel
#: (the network's activations and gradients, XLA's temporaries, the window's L-BFGS history)
#: and bytes per output pixel (the whole image's float32 RGB copies the driver keeps: the
#: content at each scale, the iterate, the scale's result, the output and its finishing
#: copies). Tiling bounds the first two; the last grows with the output. Measured: 1400 px in
#: tiles of 256 and 512 (windows of 384 and 640 px): 2.04 and 2.94 GiB, 3,660 bytes per window
#: pixel between them; 3000 px in tiles of 768 (896 px windows): 5.33 GiB (the fit's estimate
#: with 3,660: 5.1); 3000 px in tiles of 1024 (1152 px windows): over 8.56 GiB before it ended.
#: The cost per window pixel grows with the window, so :data:`WINDOW_BYTES_PER_PIXEL` is taken
#: from the largest window an automatic tile makes (1152 px), and over-estimates smaller ones.
PROCESS_BYTES = 1_400 * 2**20
WINDOW_BYTES_PER_PIXEL = 5_100
HOST_BYTES_PER_PIXEL = 160


def host_bytes(pixels: int) -> int:
    """Estimated host memory of a tiled run of ``pixels`` output pixels (all its images)."""
    return pixels * HOST_BYTES_PER_PIXEL


def tiled_bytes(window_pixels: int, image_pixels: int, cfg: GatysConfig) -> int:
    """Estimated peak memory of a run whose largest scale is tiled (:data:`PROCESS_BYTES`)."""
    history = 2 * min(cfg.history_size, cfg.tile_iterations) * 12  # the window's L-BFGS pairs
    return (
        PROCESS_BYTES
        + window_pixels * (WINDOW_BYTES_PER_PIXEL + history)
        + host_bytes(image_pixels)
    )


def window_bytes(p: Plan, cfg: GatysConfig, image_pixels: int = 0) -> int:
    """Estimated peak memory of a tiled run with plan ``p`` and ``image_pixels`` output
    pixels."""
    return tiled_bytes(p.window[0] * p.window[1], image_pixels, cfg)


def _cuts(n: int, tile: int, offset: int) -> list[tuple[int, int]]:
    """A partition of [0, n) into intervals of at most ``tile``, boundaries at offset + k*tile."""
    edges = sorted({0, *range(offset % tile or tile, n, tile), n})
    return list(zip(edges[:-1], edges[1:], strict=True))


def _place(a: int, b: int, side: int, n: int) -> int:
    """The start of a window of ``side`` (<= n) centred on [a, b), shifted into [0, n)."""
    return min(max(a - (side - (b - a)) // 2, 0), n - side)


def windows(shape: Sequence[int], p: Plan, sweep: int = 0) -> list[Window]:
    """The windows of one sweep: cores partition the image; the grid shifts by half a tile on
    odd sweeps."""
    h, w = int(shape[0]), int(shape[1])
    offset = (sweep % 2) * (p.tile // 2)
    out = []
    for y0, y1 in _cuts(h, p.tile, offset):
        for x0, x1 in _cuts(w, p.tile, offset):
            y, x = _place(y0, y1, p.window[0], h), _place(x0, x1, p.window[1], w)
            out.append(Window(y, x, (y0, y1, x0, x1)))
    return out


def sweep_lengths(cfg: GatysConfig, offset: int, periods: Sequence[int]) -> list[int]:
    """Iterations per tile of each sweep of a scale: ``tile_iterations``, shortened so that
    sweeps end where an intermediate save or a callback is due (counted from ``offset``)."""
    out, done = [], 0
    while done < cfg.iterations:
        n = min(cfg.tile_iterations, cfg.iterations - done)
        for period in periods:
            n = min(n, period - (offset + done) % period)
        out.append(n)
        done += n
    return out


def bar_units(cfg: GatysConfig, shape, p: Plan, n_images: int, offset, periods) -> int:
    """Progress-bar units of a tiled scale: tiles x iterations, over sweeps and images."""
    lengths = sweep_lengths(cfg, offset, periods)
    return n_images * sum(n * len(windows(shape, p, s)) for s, n in enumerate(lengths))


# ---------------------------------------------------------------------------------------------
# What a window computes.


def _window_inputs(win: Window, p: Plan, image, masks, margin: int = 0):
    """The window's pixels, its core map (h, w, 1), the core grown by ``margin`` pixels (within
    the window) and that grown map times each style mask (h, w, R)."""
    h, w = p.window
    y0, y1, x0, x1 = win.core
    pix = np.zeros((h, w, 1), np.float32)
    pix[y0 - win.y : y1 - win.y, x0 - win.x : x1 - win.x] = 1.0
    grown = pix
    if margin:
        grown = np.zeros_like(pix)
        ya, xa = max(y0 - win.y - margin, 0), max(x0 - win.x - margin, 0)
        grown[ya : y1 - win.y + margin, xa : x1 - win.x + margin] = 1.0
    crop = image[win.y : win.y + h, win.x : win.x + w]
    regions = grown if masks is None else grown * masks[win.y : win.y + h, win.x : win.x + w]
    return crop, pix, grown, regions


def _blend(win: Window, p: Plan, shape: Sequence[int]) -> np.ndarray:
    """The window's blend weights (h, w, 1): 1 on the core, ramping linearly to 0 over
    ``2 * (halo // 4)`` pixels centred on each core edge inside the image (overlap and blend:
    neighbouring tiles' ramps sum to 1, and a tile's edge cannot leave a one-pixel step)."""
    f = p.halo // 4
    y0, y1, x0, x1 = win.core

    def axis(a: int, b: int, start: int, side: int, n: int) -> np.ndarray:
        t = np.arange(start, start + side, dtype=np.float32) + 0.5
        if f == 0:
            return ((t > a) & (t < b)).astype(np.float32)
        low = np.ones_like(t) if a == 0 else np.clip((t - (a - f)) / (2 * f), 0.0, 1.0)
        high = np.ones_like(t) if b == n else np.clip((b + f - t) / (2 * f), 0.0, 1.0)
        return np.minimum(low, high)

    ry = axis(y0, y1, win.y, p.window[0], int(shape[0]))
    rx = axis(x0, x1, win.x, p.window[1], int(shape[1]))
    return (ry[:, None] * rx[None, :])[..., None]


@functools.partial(jax.jit, static_argnums=(6, 7))
def _window_stats(net: VGGNet, x, c, pix, regions, grown, content_layers, style_layers):
    """One forward pass of a window (and of the content's, for content layers).

    Returns the core's share of the whole-image sums (per style layer the Gram numerators
    ``num`` (R, C, C) and region weights ``wsum`` (R,), per layer the core's positions
    ``count``, per content layer the summed squared content error ``csum``), the Gram
    numerators over the ``grown`` regions (the loss region, ``grown``), and the content's
    features (``content``, the window's content targets).
    """
    layers = tuple(dict.fromkeys(content_layers + style_layers))
    fx = net.features(x[None], layers)
    fc = net.features(c[None], content_layers) if content_layers else {}
    out: dict[str, dict[str, jax.Array]] = {
        "num": {}, "wsum": {}, "count": {}, "csum": {}, "grown": {}, "content": fc
    }  # fmt: skip
    for n in layers:
        grid = fx[n].shape[1:3]
        out["count"][n] = jnp.sum(at_grid(pix, grid))
        if n in style_layers:
            m = at_grid(regions, grid)
            out["num"][n] = gram_numerators(fx[n], m)
            out["wsum"][n] = jnp.sum(m, axis=(0, 1))
            out["grown"][n] = gram_numerators(fx[n], at_grid(grown, grid))
        if n in content_layers:
            out["csum"][n] = jnp.sum(at_grid(pix, grid)[None] * (fx[n] - fc[n]) ** 2)
    return out


def _host(stats: dict[str, Any]) -> dict[str, Any]:
    """Window statistics without the content features (which stay on the device)."""
    return {k: v for k, v in stats.items() if k != "content"}


def tile_objective(x, net, content_t, style_g, weights, content_layers, style_layers):
    """The whole image's loss as a function of one window's core pixels (module docstring);
    the signature of :func:`jaxstyle.gatys.objective.objective`, so the compiled programs of
    :mod:`jaxstyle.gatys.programs` run it unchanged."""
    pix = content_t[_PIX]
    x = pix * x + (1.0 - pix) * content_t[_CONTEXT]  # the halo is context, not a variable
    layers = tuple(dict.fromkeys(content_layers + style_layers))
    feats = net.features(x[None], layers)
    content = 0.0
    for n in content_layers:
        p = at_grid(content_t[_LOSS], feats[n].shape[1:3])[None]
        content = content + jnp.sum(p * (feats[n] - content_t[n]) ** 2) / content_t[_norm(n)]
    style = 0.0
    for i, n in enumerate(style_layers):
        m = at_grid(content_t[_REGIONS], feats[n].shape[1:3])
        g = (content_t[_rest(n)] + gram_numerators(feats[n], m)) / content_t[_norm(n)][
            :, None, None
        ]
        style = style + weights["layers"][i] * style_distance(g, style_g[n], content_t[_pairs(n)])
    dx, dy = x[:, 1:] - x[:, :-1], x[1:] - x[:-1]
    on = (pix > 0).astype(x.dtype)  # the pairs that the variables change
    wx, wy = jnp.maximum(on[:, 1:], on[:, :-1]), jnp.maximum(on[1:], on[:-1])
    tv = (jnp.sum(wx * dx**2) + jnp.sum(wy * dy**2)) / content_t[_TV_NORM]
    total = weights["content"] * content + weights["style"] * style + weights["tv"] * tv
    return total, {"content": content, "style": style, "tv": tv, "total": total}


def style_grams(
    net: VGGNet, image: np.ndarray, layers: tuple[str, ...], p: Plan
) -> dict[str, np.ndarray]:
    """The Gram matrices ``{layer: (C, C)}`` of a whole (style) image, window by window:
    the sum of the cores' numerators over the sum of their positions (an image that fits one
    window gives :func:`jaxstyle.losses.gram` exactly)."""
    h, w = image.shape[:2]
    q = dataclasses.replace(p, window=(min(h, p.window[0]), min(w, p.window[1])))
    num: dict[str, np.ndarray] = {}
    pos: dict[str, float] = {}
    for win in windows((h, w), q):
        crop, pix, _, _ = _window_inputs(win, q, image, None)
        s = jax.device_get(_window_stats(net, crop, crop, pix, pix, pix, (), layers))
        for n in layers:
            num[n] = num.get(n, 0.0) + s["num"][n][0]
            pos[n] = pos.get(n, 0.0) + float(s["wsum"][n][0])
    return {n: num[n] / (num[n].shape[-1] * pos[n]) for n in layers}


@dataclasses.dataclass
class _Sums:
    """The whole image's sums: per window of the current sweep's partition (refreshed after
    each visit, for the log), and the running Gram numerators ``num`` that each visit
    updates by replacing its loss region's share."""

    per_window: list[dict[str, Any]]
    num: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.num = {n: self.total("num", n) for n in self.per_window[0]["num"]}

    def total(self, key: str, name: str):
        return sum(s[key][name] for s in self.per_window)


class _Image:
    """One content image being optimised at a tiled scale (host arrays)."""

    def __init__(self, x, content, masks, targets, cfg, weights, p):
        self.x, self.content, self.masks = x, content, masks
        self.targets = targets  # {layer: (S, C, C)}
        self.cfg, self.weights, self.p = cfg, weights, p
        self.cl, self.sl = tuple(cfg.content_layers), tuple(cfg.style_layers)
        h, w = x.shape[:2]
        self.tv_norm = float((h * (w - 1) + (h - 1) * w) * 3)
        self.content_channels = {n: CHANNELS[int(n[4]) - 1] for n in self.cl}
        self.margin = p.halo // 2

    def stats(self, net, win: Window) -> dict[str, Any]:
        """:func:`_window_stats` of the window in the current image (content features left
        on the device)."""
        crop, pix, _, core = _window_inputs(win, self.p, self.x, self.masks)
        _, _, _, grown = _window_inputs(win, self.p, self.x, self.masks, self.margin)
        c = self.content[win.y : win.y + self.p.window[0], win.x : win.x + self.p.window[1]]
        s = _window_stats(net, crop, c, pix, core, grown, self.cl, self.sl)
        return {**jax.device_get(_host(s)), "content": s["content"]}

    def sums(self, net, wins: Sequence[Window]) -> _Sums:
        return _Sums([_host(self.stats(net, win)) for win in wins])

    def pairs(self, sums: _Sums, n: str) -> np.ndarray:
        """(R, S): blend weights for one region, or each mask's share of the grid."""
        if self.masks is None:
            return np.asarray(self.weights["blend"], np.float32)[None]
        share = sums.total("wsum", n) / sums.total("count", n)
        return np.diag(share).astype(np.float32)

    def norms(self, sums: _Sums) -> dict[str, np.ndarray]:
        out = {}
        for n in self.sl:
            c = self.targets[n].shape[-1]
            out[n] = (c * np.maximum(sums.total("wsum", n), 1e-6)).astype(np.float32)
        for n in self.cl:
            c = self.content_channels[n]
            out[f"content:{n}"] = np.float32(c * sums.total("count", n))
        return out

    def losses(self, sums: _Sums) -> dict[str, float]:
        """The whole image's loss terms from the per-window sums (TV from the pixels)."""
        norms = self.norms(sums)
        content = sum(float(sums.total("csum", n)) / norms[f"content:{n}"] for n in self.cl)
        style = 0.0
        for i, n in enumerate(self.sl):
            g = sums.total("num", n) / norms[n][:, None, None]
            d = np.mean((g[:, None] - self.targets[n][None]) ** 2, axis=(-2, -1))
            style += float(self.weights["layers"][i]) * float(np.sum(self.pairs(sums, n) * d))
        x = self.x
        tv = float(np.sum((x[:, 1:] - x[:, :-1]) ** 2) + np.sum((x[1:] - x[:-1]) ** 2))
        tv /= self.tv_norm
        w = {k: float(v) for k, v in self.weights.items() if np.ndim(v) == 0}
        total = w["content"] * content + w["style"] * style + w["tv"] * tv
        terms = {"total": total, "content": content, "style": style, "tv": tv}
        return {k: float(v) for k, v in terms.items()}  # the log is JSON

    def inputs(self, win: Window, sums: _Sums, now: dict) -> tuple[dict, dict]:
        """The tile objective's ``content_t`` and ``style_g`` for a window whose
        :meth:`stats` are ``now``, with a batch axis of 1."""
        crop, pix, grown, regions = _window_inputs(win, self.p, self.x, self.masks, self.margin)
        feats = now["content"]
        old = now["grown"]
        norms = self.norms(sums)
        t: dict[str, Any] = {n: feats[n][None] for n in self.cl}
        blend = _blend(win, self.p, self.x.shape)
        t.update({_PIX: blend, _LOSS: grown, _CONTEXT: crop, _REGIONS: regions})
        t[_TV_NORM] = self.tv_norm
        for n in self.sl:
            t[_rest(n)] = sums.num[n] - old[n]
            t[_norm(n)] = norms[n]
            t[_pairs(n)] = self.pairs(sums, n)
        for n in self.cl:
            t[_norm(n)] = norms[f"content:{n}"]
        content_t = {
            k_: v if k_ in self.cl else jnp.asarray(np.asarray(v, np.float32))[None]
            for k_, v in t.items()
        }
        style_g = {n: jnp.asarray(self.targets[n])[None] for n in self.sl}
        return content_t, style_g


def optimise(
    run,
    cfg: GatysConfig,
    pcfg: GatysConfig,
    net: VGGNet,
    weights: dict,
    p: Plan,
    group,
    starts: Sequence[np.ndarray],
    styles: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    bar,
    report,
    finish: Callable[[np.ndarray, np.ndarray], np.ndarray],
    max_restarts: int,
) -> list[np.ndarray]:
    """``cfg.iterations`` iterations (per pixel) of each image of ``group`` at a tiled scale.

    Args:
        run: the driver's run record (log records, per-image counters, warnings).
        cfg, pcfg: the settings and their program configuration.
        net, weights: the loss network and :func:`jaxstyle.gatys.objective.loss_weights`.
        p: the scale's :class:`Plan`.
        group: the driver's batch (scale, iteration offset, image indices, contents).
        starts: each image's starting pixels (H, W, 3).
        styles: the style images at this scale.
        masks: each image's style masks (H, W, S) at this size, or None.
        bar: the progress bar (tiles x iterations).
        report: the driver's saves and callbacks (``on_save``, ``callback``, ``periods``).
        finish: post-processing of an output image given its content image.
        max_restarts: restarts per tile visit before it keeps its best iterate.

    Returns:
        The optimised images, (H, W, 3) in [0, 1].
    """
    sl = tuple(cfg.style_layers)
    images = []
    for content, x0, m in zip(group.contents, starts, masks, strict=True):
        st = styles
        if cfg.preserve_colors == "histogram":
            st = [imlib.match_color(s, content) for s in styles]
        grams = [style_grams(net, s, sl, p) for s in st]
        targets = {n: np.stack([g[n] for g in grams]) for n in sl}
        img = _Image(np.array(x0, np.float32), content, m, targets, cfg, weights, p)
        images.append(img)
    shape = group.contents[0].shape[:2]
    done = 0
    for sweep, n in enumerate(sweep_lengths(cfg, group.offset, report.periods(cfg))):
        wins = windows(shape, p, sweep)
        for b, img in enumerate(images):
            sums = img.sums(net, wins)
            nfev = 0
            for k, win in enumerate(wins):
                nfev += _visit(run, pcfg, net, img, win, sums, k, n, bar, group, b, max_restarts)
                bar.set_postfix(sweep=sweep + 1, tile=f"{k + 1}/{len(wins)}")
            _record(run, group, b, img.losses(sums), group.offset + done + n, n, nfev, len(wins))
        done += n
        last = done == cfg.iterations
        _report(run, cfg, report, group, images, group.offset + done, last, finish)
    return [img.x for img in images]


def _visit(run, pcfg, net, img: _Image, win: Window, sums: _Sums, k, n, bar, group, b, tries):
    """``n`` iterations of one window's core; writes the best iterate back into the image.
    Returns the function evaluations it used."""
    now = img.stats(net, win)
    content_t, style_g = img.inputs(win, sums, now)
    args = (net, content_t, style_g, img.weights)
    crop = content_t[_CONTEXT]
    carry = programs.start(pcfg, tile_objective, crop, *args)
    pending, restarts, nfev = n, 0, 0
    while pending > 0:
        m = min(pending, programs.chunk_len(pcfg))
        carry, _, steps, ok = programs.run_chunk(
            pcfg, tile_objective, carry, np.array([m], np.int32), *args
        )
        pending -= int(steps[0])
        bar.update(int(steps[0]))
        if not ok[0]:
            nfev += int(num_evaluations(carry.state)[0])
            restarts += 1
            run.per_image[group.idx[b]]["restarts"] += 1
            if restarts > tries:
                run.say(
                    f"warning: image {group.idx[b]}: a tile at ({win.y}, {win.x}) diverged "
                    f"{restarts} times (scale {group.scale}); keeping its best iterate"
                )
                bar.update(pending)
                break
            carry = programs.restart(pcfg, tile_objective, carry, jnp.asarray([True]), *args)
    nfev += int(num_evaluations(carry.state)[0])
    best = np.clip(np.asarray(carry.best_x[0]), 0.0, 1.0)
    blend = np.asarray(content_t[_PIX][0])
    h, w = img.p.window
    img.x[win.y : win.y + h, win.x : win.x + w] = blend * best + (1.0 - blend) * np.asarray(crop[0])
    after = img.stats(net, win)
    sums.num = {n: sums.num[n] - now["grown"][n] + after["grown"][n] for n in sums.num}
    sums.per_window[k] = _host(after)
    return nfev


def _record(run, group, b: int, terms: dict, iteration: int, n: int, nfev: int, tiles: int):
    """A whole-image log record at the end of a sweep."""
    i = group.idx[b]
    run.per_image[i]["iterations"] += n
    run.per_image[i]["function_evaluations"] += nfev
    record = {"scale": group.scale, "image": i, "iteration": iteration, **terms}
    record.update(function_evaluations=run.per_image[i]["function_evaluations"], tiles=tiles)
    run.records.append(record)
    run.latest[i] = record


def _report(run, cfg, report, group, images, at: int, last: bool, finish) -> None:
    """Intermediate saves and callbacks due at the end of a sweep (iteration ``at``)."""
    save = bool(report.on_save) and cfg.save_every > 0 and at % cfg.save_every == 0
    call = bool(report.callback) and (at % report.callback_every == 0 or last)
    for b, img in enumerate(images):
        i = group.idx[b]
        out = finish(img.x, group.contents[b])
        if save:
            report.on_save(i, at, out)
        if call:
            terms = {k: v for k, v in run.latest[i].items() if k not in ("image", "iteration")}
            report.callback(i, at, terms, out)


def final_losses(run, cfg, net, weights, p, group, results, styles, masks) -> None:
    """The whole-image losses of the saved images (clipped to [0, 1]), window by window."""
    sl = tuple(cfg.style_layers)
    for b, i in enumerate(group.idx):
        content = group.contents[b]
        st = styles
        if cfg.preserve_colors == "histogram":
            st = [imlib.match_color(s, content) for s in styles]
        grams = [style_grams(net, s, sl, p) for s in st]
        targets = {n: np.stack([g[n] for g in grams]) for n in sl}
        img = _Image(np.clip(results[i], 0, 1), content, masks[b], targets, cfg, weights, p)
        terms = img.losses(img.sums(net, windows(content.shape[:2], p)))
        run.per_image[i].update(terms)


def check_objective(objective, aux_names) -> None:
    """Raises ValueError when a tiled scale is asked for something only the untiled path has:
    another objective, or auxiliary inputs other than style masks."""
    from jaxstyle.gatys.objective import objective as default

    if objective is not default:
        raise ValueError("tiled scales (--tile) use the default loss; a custom objective is not")
    extra = sorted(set(aux_names) - {STYLE_MASKS})
    if extra:
        raise ValueError(f"tiled scales (--tile) take only style masks as aux, not {extra}")
