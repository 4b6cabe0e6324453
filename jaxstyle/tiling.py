"""Feed-forward networks on images of any size in bounded memory: exact tiling.

An image too large to run whole is cut into square *cores* of ``tile`` pixels on a grid; each
core runs inside a *window* that adds a context margin (``halo``) on every side, and every
window has the same shape, so one compiled program (per pass) serves every tile of every image,
in batches. The result equals the network applied to the whole image (up to float rounding):

* **Edges.** Each window knows where the image lies in it (its origin and the image's extent,
  traced arguments). Before every padded convolution the positions beyond the image are refilled
  with what the whole image's padding shows there (reflection, edge rows before a nearest x2
  upsampling, zeros before a transposed convolution, -inf before AdaIN's ceil-mode pooling), as
  :func:`jaxstyle.nets.transformer_net.refill` does for size buckets. Interior window edges get
  real neighbours: the halo is at least the network's receptive radius, so a core never sees the
  garbage that builds up at a window's border.
* **Normalisation statistics** are the whole image's. Instance norm's statistics at layer k
  depend on every earlier layer's normalised output, so they are gathered in order: pass k runs
  the windows up to norm layer k with layers 1..k-1 normalised by the statistics already
  gathered, and sums count, mean and squared deviations over the cores (which partition the
  image), combined on the host in float64 (Chan et al.'s pairwise update, no cancellation). A
  final pass runs the whole network with every statistic fixed. For Johnson's network (15 norm
  layers) that costs the prefix sums of the layers' work: about 7.4 full-network passes of
  multiply-adds (9,216 of the 153,792 MACs a pixel are in each of the ten residual
  convolutions), times the window's halo overhead. Exact schemes that cache a whole-image
  feature map would be cheaper but hold O(image) feature maps; this one holds tiles only.
  AdaIN needs one statistic (the content's relu4_1 mean and deviation): two passes (the
  encoder, then encoder + decoder).
* **Blending.** Neighbouring cores overlap by ``overlap`` pixels (default
  :data:`OVERLAP`) and are blended by complementary linear ramps (the weights sum to 1). Both
  tiles are exact there (the halo covers the overlap), so the ramp changes nothing beyond float
  rounding; it keeps seams invisible should two tiles' rounding differ.

Memory: every compiled program sees ``batch`` windows of ``tile + 2 * halo`` pixels a side; the
image, its output and the per-channel statistics are the only whole-image arrays (float32,
24 bytes a pixel together). :func:`plan` picks a tile for a memory budget.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.nets import conv
from jaxstyle.nets.transformer_net import NetConfig

#: Default overlap of neighbouring cores (pixels), blended by linear ramps.
OVERLAP = 16
#: Bytes per window pixel of a tile program (temporaries + outputs from XLA's
#: ``compiled.memory_analysis()`` of the output program at a 256 px window on CPU: Johnson's
#: full network 1,294, AdaIN's VGG19 encoder + decoder 2,820; rounded up).
BYTES_PER_WINDOW_PIXEL = {"johnson": 1_400, "adain": 2_900}
#: Bytes per image pixel held whole while tiling: the float32 input and output, and slack for
#: the decode and the 8-bit copy written out.
BYTES_PER_IMAGE_PIXEL = 32
#: The largest tile :func:`plan` chooses (larger tiles only save halo overhead, ~1.3x at 1024).
MAX_TILE = 1024


# ---------------------------------------------------------------------------------------------
# Geometry.


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The tiling of one network: core size, halo, alignment (all in input pixels)."""

    tile: int  # core side
    halo: int  # context on each side of a core
    align: int  # window origins are multiples of this (the network's total stride)
    overlap: int = OVERLAP

    @property
    def window(self) -> int:
        return self.tile + 2 * self.halo


def receptive_radius(kind: str, config: NetConfig | None = None) -> int:
    """How many input pixels from a window's border the output stops being exact: the margin a
    core needs on each side, counted from the network's layers (plus one unit of the coarsest
    level for rounding at the far side; the tests check exactness with several tiles)."""
    a, s = 0, 1  # first exact index at the current level; level (pixels per unit)
    ops: list[tuple[str, int]] = []
    if kind in ("johnson", "multistyle"):
        ops = [("conv", 4), ("down", 1), ("down", 1)]
        ops += [("conv", 1)] * (2 * config.num_res)
        ops += [("up", 1), ("up", 1), ("conv", 4)]
    else:
        from jaxstyle.nets import adain

        arch = adain.ARCHS["vgg19"]
        for i, _, _, k in arch.encoder:
            if i in arch.pool_before:
                ops.append(("pool", 1))
            if k > 1:
                ops.append(("conv", 1))
        for i, _, _ in arch.decoder:
            ops.append(("up", 1) if i in arch.upsample_before else ("conv", 1))
    for op, r in ops:
        if op == "conv":
            a += r
        elif op == "down":  # output row i reads rows 2i-1 .. 2i+1
            a, s = math.ceil((a + 1) / 2), 2 * s
        elif op == "pool":  # output row i reads rows 2i, 2i+1
            a, s = math.ceil(a / 2), 2 * s
        else:  # nearest x2 (or transposed) + 3x3: row j reads rows (j-1)//2 .. (j+1)//2
            a, s = 2 * a + 1, s // 2
    return a * s + (8 if kind == "adain" else 4)


def geometry(kind: str, config: NetConfig | None, tile: int, overlap: int = OVERLAP) -> Geometry:
    """The tiling of ``kind`` with cores of ``tile`` pixels (rounded up to the alignment)."""
    align = 8 if kind == "adain" else 4
    up = lambda n: -(-n // align) * align  # noqa: E731
    halo = up(receptive_radius(kind, config) + overlap // 2)
    return Geometry(tile=up(tile), halo=halo, align=align, overlap=overlap)


def min_tile(kind: str, config: NetConfig | None) -> int:
    """The smallest core accepted: the network's receptive field (twice the radius). Smaller
    cores spend most of each window on context (a 1:3 core-to-window side at this size)."""
    g = geometry(kind, config, 1)
    return 2 * (g.halo - g.overlap // 2)


def _cores(extent: int, tile: int) -> list[int]:
    return list(range(0, extent, tile))


def _reflect_index(g: np.ndarray, n: int) -> np.ndarray:
    """Indices ``g`` (any integers) reflected into [0, n) without repeating the edge."""
    if n == 1:
        return np.zeros_like(g)
    period = 2 * (n - 1)
    m = np.mod(g, period)
    return np.where(m < n, m, period - m)


def _window(image: np.ndarray, oy: int, ox: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` window of ``image`` at (oy, ox), reflected beyond its edges
    (what the untiled network sees in its multiple-of-4 padding; farther out the network
    refills every layer, so any finite value would do)."""
    h, w = image.shape[:2]
    rows = _reflect_index(np.arange(oy, oy + size), h)
    cols = _reflect_index(np.arange(ox, ox + size), w)
    return image[rows[:, None], cols[None, :]]


def _ramp(start: int, stop: int, lo: int, hi: int, overlap: int) -> np.ndarray:
    """1-D blending weights of the output span [lo, hi) of a core [start, stop): 1 inside the
    core, linear ramps across each interior boundary's overlap band, complementary to the
    neighbour's (they sum to 1)."""
    x = np.arange(lo, hi, dtype=np.float64) + 0.5
    w = np.ones_like(x)
    half = overlap / 2
    if overlap > 0:
        if lo < start:  # a neighbour before: ramp up across [start - half, start + half)
            w = np.minimum(w, np.clip((x - (start - half)) / overlap, 0, 1))
        if hi > stop:
            w = np.minimum(w, np.clip(((stop + half) - x) / overlap, 0, 1))
    return w.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# In-window refilling (the traced side of the geometry).


def _src(length: int, origin: jax.Array, extent: jax.Array, mode: str) -> jax.Array:
    """(N, length) window index each window row takes its value from, for windows whose row 0
    is image row ``origin`` (N,) of an image ``extent`` rows long (both at this level)."""
    g = origin[:, None] + jnp.arange(length)[None, :]
    e = jnp.broadcast_to(extent, origin.shape)[:, None]
    if mode == "edge":
        s = jnp.clip(g, 0, e - 1)
    else:
        period = jnp.maximum(2 * (e - 1), 1)
        m = jnp.mod(g, period)
        s = jnp.where(e > 1, jnp.where(m < e, m, period - m), 0)
    lo = jnp.maximum(-origin, 0)[:, None]  # the image's rows inside the window
    hi = jnp.minimum(e - origin[:, None], length) - 1
    return jnp.clip(s - origin[:, None], lo, hi)


def _inside(length: int, origin: jax.Array, extent: jax.Array) -> jax.Array:
    g = origin[:, None] + jnp.arange(length)[None, :]
    return (g >= 0) & (g < extent)


class _Where:
    """Where the image lies in a batch of windows, at every level (pixels per unit)."""

    def __init__(self, origin: jax.Array, extents: dict[int, jax.Array]):
        self.origin = origin  # (N, 2) full-resolution window origins (multiples of align)
        self.extents = extents  # level -> (2,) the image's extent at that level

    def refill(self, x: jax.Array, level: int, mode: str) -> jax.Array:
        o = self.origin // level
        e = self.extents[level]
        if mode in ("zero", "-inf"):
            ins = (
                _inside(x.shape[1], o[:, 0], e[0])[:, :, None]
                & _inside(x.shape[2], o[:, 1], e[1])[:, None, :]
            )
            fill = 0.0 if mode == "zero" else -jnp.inf
            return jnp.where(ins[..., None], x, jnp.asarray(fill, x.dtype))
        ih = _src(x.shape[1], o[:, 0], e[0], mode)
        iw = _src(x.shape[2], o[:, 1], e[1], mode)
        x = jnp.take_along_axis(x, ih[:, :, None, None], axis=1)
        return jnp.take_along_axis(x, iw[:, None, :, None], axis=2)

    def core_stats(self, x: jax.Array, level: int, geo: Geometry) -> tuple[jax.Array, ...]:
        """Count (N,), mean (N, C) and summed squared deviations (N, C) of each window's core
        inside the image (the cores partition the image: each pixel counted once)."""
        o = self.origin // level
        e = self.extents[level]
        n = x.shape[1]
        idx = jnp.arange(n)
        c0, c1 = geo.halo // level, (geo.halo + geo.tile) // level
        core = (idx >= c0) & (idx < c1)
        rows = core[None] & _inside(n, o[:, 0], e[0])
        cols = core[None] & _inside(x.shape[2], o[:, 1], e[1])
        mask = (rows[:, :, None] & cols[:, None, :])[..., None].astype(jnp.float32)
        x = x.astype(jnp.float32)
        count = jnp.sum(mask, axis=(1, 2, 3))
        safe = jnp.maximum(count, 1.0)[:, None]
        mean = jnp.sum(x * mask, axis=(1, 2)) / safe
        m2 = jnp.sum(((x - mean[:, None, None, :]) * mask) ** 2, axis=(1, 2))
        return count, mean, m2


class _Reached(Exception):  # noqa: N818 - control flow while tracing, not an error
    """Raised while tracing when the pass reaches the norm layer whose statistics it gathers."""

    def __init__(self, value):
        self.value = value


def combine(count, mean, m2, acc=None):
    """Adds per-tile (count, mean, M2) to ``acc`` (float64 on the host; Chan et al. 1979)."""
    count = np.asarray(count, np.float64)
    mean = np.asarray(mean, np.float64)
    m2 = np.asarray(m2, np.float64)
    for i in range(count.shape[0]):
        if count[i] == 0:
            continue
        if acc is None:
            acc = (count[i], mean[i].copy(), m2[i].copy())
            continue
        n_a, mean_a, m2_a = acc
        n = n_a + count[i]
        delta = mean[i] - mean_a
        acc = (n, mean_a + delta * count[i] / n, m2_a + m2[i] + delta**2 * n_a * count[i] / n)
    return acc


# ---------------------------------------------------------------------------------------------
# Johnson's network (single- and multi-style), tile by tile.


def _conv(p: dict, x: jax.Array, stride: int = 1) -> jax.Array:
    k = p["kernel"].shape[0]
    xp = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="reflect")
    return conv.conv2d(xp, p["kernel"], stride) + p["bias"]


#: ``upto`` of a program that gathers every norm layer's statistics and makes the output.
ALL = -1


def _johnson(params, cfg: NetConfig, x, where: _Where, geo: Geometry, stats, style, upto):
    """Johnson's network on windows, normalised with ``stats``; with ``upto`` = k it raises
    :class:`_Reached` carrying norm layer k's core statistics (its input, pre-normalisation)."""
    layer = [0]
    gathered = []

    def norm(name: str, y, level: int):
        k = layer[0]
        if k == upto:
            raise _Reached(where.core_stats(y, level, geo))
        if upto == ALL:
            gathered.append(where.core_stats(y, level, geo))
        layer[0] += 1
        p = _get(params, name)
        scale, bias = p["scale"], p["bias"]
        if cfg.num_styles > 1:
            scale, bias = style @ scale, style @ bias
        mean, var = stats[k]
        y32 = y.astype(jnp.float32)
        return (y32 - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias

    def conv_layer(name, y, level, stride=1):
        return _conv(_get(params, name)["conv2d"], where.refill(y, level, "reflect"), stride)

    def up_layer(name, y, level):
        p = _get(params, name)["conv2d"]
        if cfg.upsample == "transpose":
            return _transpose(p, where.refill(y, level, "zero"))
        y = where.refill(y, level, "edge")
        return conv.upsample_conv3x3(y, p["kernel"]) + p["bias"]

    y = x * cfg.io_scale
    y = jax.nn.relu(norm("in1", conv_layer("conv1", y, 1), 1))
    y = jax.nn.relu(norm("in2", conv_layer("conv2", y, 1, 2), 2))
    y = jax.nn.relu(norm("in3", conv_layer("conv3", y, 2, 2), 4))
    for i in range(cfg.num_res):
        r = f"res{i + 1}"
        t = jax.nn.relu(norm(f"{r}/in1", conv_layer(f"{r}/conv1", y, 4), 4))
        y = y + norm(f"{r}/in2", conv_layer(f"{r}/conv2", t, 4), 4)
    y = jax.nn.relu(norm("in4", up_layer("deconv1", y, 4), 2))
    y = jax.nn.relu(norm("in5", up_layer("deconv2", y, 2), 1))
    y = conv_layer("deconv3", y, 1)
    y = jax.nn.sigmoid(y) if cfg.output == "sigmoid" else y / cfg.io_scale
    y = jnp.clip(y, 0.0, 1.0)
    return (tuple(gathered), y) if upto == ALL else y


def _transpose(p: dict, y: jax.Array) -> jax.Array:
    """flax ``nn.ConvTranspose(strides=2, padding="SAME")`` with parameters ``p``."""
    import flax.linen as nn

    m = nn.ConvTranspose(p["kernel"].shape[-1], (3, 3), strides=(2, 2), padding="SAME")
    return m.apply({"params": p}, y)


def _get(params: dict, name: str) -> dict:
    for part in name.split("/"):
        params = params[part]
    return params


def norm_count(kind: str, config: NetConfig | None) -> int:
    """How many normalisation statistics the network needs from the whole image."""
    return 1 if kind == "adain" else 3 + 2 * config.num_res + 2


@functools.lru_cache(maxsize=64)
def _johnson_program(cfg: NetConfig, geo: Geometry, upto: int | None) -> Callable:
    def run(params, x, origin, extent, stats, style):
        where = _Where(origin, {s: -(-extent // s) for s in (1, 2, 4)})
        try:
            return _johnson(params, cfg, x, where, geo, stats, style, upto)
        except _Reached as r:
            return r.value

    return jax.jit(run)


# ---------------------------------------------------------------------------------------------
# AdaIN, tile by tile.


def _adain(params, x, where: _Where, geo: Geometry, target, stats, upto):
    """The AdaIN network on windows; ``upto=0`` raises :class:`_Reached` with the relu4_1
    core statistics; else ``stats`` = (content mean, content std) and ``target`` = (style mean,
    style std, alpha)."""
    from jaxstyle.nets import adain

    vgg, dec = params["vgg"], params["decoder"]
    arch = adain.ARCHS[adain.encoder_of(vgg)]
    level = 1
    for i, _, _, k in arch.encoder:
        p = vgg[str(i)]
        if i in arch.pool_before:
            x = where.refill(x, level, "-inf")
            n, h, w, c = x.shape
            x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
            level *= 2
        if k == 1:
            x = jnp.einsum("nhwc,co->nhwo", x, p["kernel"][0, 0]) + p["bias"]
            continue
        x = jax.nn.relu(_conv(p, where.refill(x, level, "reflect")))
    if upto == 0:
        raise _Reached(where.core_stats(x, level, geo))
    c_mean, c_std = stats
    s_mean, s_std, alpha = target
    t = (x - c_mean) / c_std * s_std + s_mean
    t = alpha * t + (1 - alpha) * x
    last = arch.decoder[-1][0]
    dlevel = {8: "d8", 4: "d4", 2: "d2", 1: "d1"}
    for i, _, _ in arch.decoder:
        p = dec[str(i)]
        if i in arch.upsample_before:
            t = where.refill(t, dlevel[level], "edge")
            t = conv.upsample_conv3x3(t, p["kernel"]) + p["bias"]
            level //= 2
        else:
            t = _conv(p, where.refill(t, dlevel[level], "reflect"))
        if i != last:
            t = jax.nn.relu(t)
    return jnp.clip(t, 0.0, 1.0)


class _AdainWhere(_Where):
    """Levels of the decoder (whose sizes are 8x the relu4_1 map's, not the encoder's)."""

    def refill(self, x, level, mode):
        if isinstance(level, str):
            s = int(level[1:])
            return _Where(self.origin, {s: self.extents[f"d{s}"]}).refill(x, s, mode)
        return super().refill(x, level, mode)


@functools.lru_cache(maxsize=8)
def _adain_program(geo: Geometry, upto: int | None) -> Callable:
    def run(params, x, origin, extent, stats, target):
        e = {1: extent}
        for s in (2, 4, 8):
            e[s] = -(-e[s // 2] // 2)  # ceil-mode pooling
        for s in (4, 2, 1):
            e[f"d{s}"] = e[8] * (8 // s)
        e["d8"] = e[8]
        where = _AdainWhere(origin, e)
        try:
            return _adain(params, x, where, geo, target, stats, upto)
        except _Reached as r:
            return r.value

    return jax.jit(run)


# ---------------------------------------------------------------------------------------------
# Driving the passes.


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one image is tiled: the geometry and windows per compiled batch."""

    geometry: Geometry
    batch: int


def plan(
    kind: str,
    config: NetConfig | None,
    shape: tuple[int, int],
    max_memory: int,
    tile: int | None = None,
    batch_size: int = 8,
) -> Plan:
    """The tiling of an image of ``shape`` within ``max_memory`` bytes: the given ``tile``,
    or the largest (up to :data:`MAX_TILE`, at most the image) whose window fits what the
    whole-image arrays leave; then as many windows a batch (up to ``batch_size``) as fit.

    Raises:
        ValueError: the image's own arrays and the smallest tile do not fit ``max_memory``.
    """
    h, w = shape
    per = BYTES_PER_WINDOW_PIXEL["adain" if kind == "adain" else "johnson"]
    left = max_memory - BYTES_PER_IMAGE_PIXEL * h * w
    smallest = min_tile(kind, config)
    if tile is None:
        g0 = geometry(kind, config, smallest)
        side = math.isqrt(max(left, 0) // per) - 2 * g0.halo
        tile = min(MAX_TILE, side, -(-max(h, w) // g0.align) * g0.align)
        tile = max(smallest, tile // 64 * 64 if tile >= 128 else tile // g0.align * g0.align)
    else:  # no larger than the image (a larger core only widens the window)
        align = geometry(kind, config, smallest).align
        tile = min(tile, max(smallest, -(-max(h, w) // align) * align))
    geo = geometry(kind, config, tile)
    need = geo.window**2 * per
    if need > left:
        raise ValueError(
            f"{w}x{h}: even tiled ({geo.tile} px tiles, {geo.window} px windows) it needs about "
            f"{(need + BYTES_PER_IMAGE_PIXEL * h * w) / 2**30:.2f} GiB, over the memory limit of "
            f"{max_memory / 2**30:.2f} GiB"
        )
    tiles = len(_cores(h, geo.tile)) * len(_cores(w, geo.tile))
    return Plan(geo, max(1, min(batch_size, tiles, left // need)))


def _windows(shape: tuple[int, int], geo: Geometry) -> list[tuple[int, int]]:
    h, w = shape
    return [(y, x) for y in _cores(h, geo.tile) for x in _cores(w, geo.tile)]


def _batches(cores: list, batch: int):
    for start in range(0, len(cores), batch):
        chunk = cores[start : start + batch]
        yield chunk, chunk + [chunk[-1]] * (batch - len(chunk))  # one batch shape


def _gather(run_stats: Callable, image, extent, cores, p: Plan, progress) -> tuple:
    """One statistics pass: (mean, var, count) over the image, float64."""
    g = p.geometry
    acc = None
    for chunk, full in _batches(cores, p.batch):
        x = np.stack([_window(image, y - g.halo, xx - g.halo, g.window) for y, xx in full])
        origin = np.array([[y - g.halo, xx - g.halo] for y, xx in full], np.int32)
        count, mean, m2 = run_stats(x, origin, extent)
        n = len(chunk)
        acc = combine(np.asarray(count)[:n], np.asarray(mean)[:n], np.asarray(m2)[:n], acc)
        progress()
    return acc


def _stitch(run_out: Callable, image, extent, shape, cores, p: Plan, progress) -> np.ndarray:
    """The final pass: every window's core (plus half the overlap on interior sides), blended
    by complementary ramps into the output."""
    g = p.geometry
    h, w = shape
    out = np.zeros((h, w, 3), np.float32)
    half = g.overlap // 2
    for chunk, full in _batches(cores, p.batch):
        x = np.stack([_window(image, y - g.halo, xx - g.halo, g.window) for y, xx in full])
        origin = np.array([[y - g.halo, xx - g.halo] for y, xx in full], np.int32)
        y_out = np.asarray(run_out(x, origin, extent))
        for j, (cy, cx) in enumerate(chunk):
            y0, y1 = max(cy - half, 0), min(cy + g.tile + half, h)
            x0, x1 = max(cx - half, 0), min(cx + g.tile + half, w)
            wy = _ramp(cy, min(cy + g.tile, h), y0, y1, g.overlap)
            wx = _ramp(cx, min(cx + g.tile, w), x0, x1, g.overlap)
            oy, ox = cy - g.halo, cx - g.halo
            patch = y_out[j, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            out[y0:y1, x0:x1] += patch * (wy[:, None, None] * wx[None, :, None])
        progress()
    return out


def _progress_bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", disable=not enabled, desc=desc, leave=False)


def apply_johnson(
    params: Any,
    config: NetConfig,
    image: np.ndarray,
    p: Plan,
    *,
    style: np.ndarray | None = None,
    programs: str = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Johnson's network (one or several styles) on one HWC [0, 1] image, tiled by ``p``:
    equal to :func:`jaxstyle.nets.transformer_net.stylize` on the whole image.

    Args:
        style: a multi-style network's style weights (``None`` for one style).
        programs: ``"per-layer"``: pass k runs a program that stops at norm layer k (the least
            work, about 7.4 full-network passes for the full network, but one compile per norm
            layer); ``"one"``: every pass runs the whole network and gathers every layer's
            statistics (one compile, norm layers + 1 full passes); ``"auto"``: per-layer when
            a pass has at least :data:`PER_LAYER_FROM` batches of windows (large images, where
            work outweighs compiling), else one.
        progress: a progress bar (batches of windows over all passes) on stderr.
    """
    g = p.geometry
    h, w = image.shape[:2]
    extent = np.array([-(-h // 4) * 4, -(-w // 4) * 4], np.int32)  # the network's image
    cores = _windows(tuple(extent), g)
    style_arr = None if style is None else jnp.asarray(style, jnp.float32)
    layers = norm_count("johnson", config)
    channels = _norm_channels(config)
    batches = -(-len(cores) // p.batch)
    if programs == "auto":
        programs = "per-layer" if batches >= PER_LAYER_FROM else "one"
    if programs not in ("one", "per-layer"):
        raise ValueError(f"programs must be auto, one or per-layer, got {programs!r}")
    bar = _progress_bar(batches * (layers + 1), progress, "tiles")
    stats: list[tuple[jax.Array, jax.Array]] = []
    one = _johnson_program(config, g, ALL)
    for k in range(layers):
        fixed = tuple(stats) + tuple(
            (jnp.zeros(channels[j]), jnp.ones(channels[j])) for j in range(k, layers)
        )
        if programs == "one":

            def run_stats(x, origin, ext, fixed=fixed, k=k):
                return one(params, x, origin, ext, fixed, style_arr)[0][k]
        else:
            fn = _johnson_program(config, g, k)

            def run_stats(x, origin, ext, fn=fn, fixed=fixed):
                return fn(params, x, origin, ext, fixed, style_arr)

        n, mean, m2 = _gather(run_stats, image, extent, cores, p, lambda: bar.update(1))
        stats.append((jnp.asarray(mean, jnp.float32), jnp.asarray(m2 / n, jnp.float32)))
    fixed = tuple(stats)
    if programs == "one":

        def run_out(x, origin, ext):
            return one(params, x, origin, ext, fixed, style_arr)[1]
    else:
        fn = _johnson_program(config, g, None)

        def run_out(x, origin, ext):
            return fn(params, x, origin, ext, fixed, style_arr)

    out = _stitch(run_out, image, extent, (h, w), cores, p, lambda: bar.update(1))
    bar.close()
    return out


#: :func:`apply_johnson`'s ``programs="auto"`` compiles one program per norm layer from this
#: many batches of windows a pass.
PER_LAYER_FROM = 4


def _norm_channels(config: NetConfig) -> list[int]:
    c1, c2, c3 = config.channels
    return [c1, c2, c3, *[c3] * (2 * config.num_res), c2, c1]


def apply_adain(
    params: Any,
    image: np.ndarray,
    mean: Any,
    std: Any,
    alpha: float,
    p: Plan,
    *,
    progress: bool = False,
) -> np.ndarray:
    """The AdaIN network on one HWC [0, 1] image with the styles' mixed statistics
    (:func:`jaxstyle.nets.adain.weighted_stats`), tiled by ``p``: equal to
    :func:`jaxstyle.nets.adain.stylize_with_stats` on the whole image."""
    from jaxstyle.nets import adain

    g = p.geometry
    h, w = image.shape[:2]
    extent = np.array([h, w], np.int32)
    cores = _windows((h, w), g)
    batches = -(-len(cores) // p.batch)
    bar = _progress_bar(2 * batches, progress, "tiles")
    target = (jnp.asarray(mean).reshape(-1), jnp.asarray(std).reshape(-1), jnp.float32(alpha))
    c = target[0].shape[0]
    dummy = (jnp.zeros(c), jnp.ones(c))
    fn = _adain_program(g, 0)
    n, c_mean, m2 = _gather(
        lambda x, o, e: fn(params, x, o, e, dummy, target),
        image,
        extent,
        cores,
        p,
        lambda: bar.update(1),
    )
    c_std = np.sqrt(m2 / max(n - 1, 1) + adain.EPS)  # unbiased, as adain.mean_std
    stats = (jnp.asarray(c_mean, jnp.float32), jnp.asarray(c_std, jnp.float32))
    fn = _adain_program(g, None)
    out = _stitch(
        lambda x, o, e: fn(params, x, o, e, stats, target),
        image,
        extent,
        (h, w),
        cores,
        p,
        lambda: bar.update(1),
    )
    bar.close()
    return out


def largest_intermediate(fn: Callable, *args) -> int:
    """The element count of the largest array any step of ``fn(*args)`` makes (from its
    jaxpr, nested ones included): what bounds a tile program's memory whatever the image."""

    from jax.extend import core as jax_core

    def walk(jaxpr) -> int:
        big = 0
        for eqn in jaxpr.eqns:
            for v in eqn.outvars:
                big = max(big, int(np.prod(getattr(v.aval, "shape", ()))))
            for sub in jax_core.jaxprs_in_params(eqn.params):
                big = max(big, walk(sub))
        return big

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


# ---------------------------------------------------------------------------------------------
# Memory limits as users write them.

#: ``--max-memory``'s default on CPU: what a laptop can spare (capped by
#: :func:`jaxstyle.backend.memory_budget` on smaller machines; a GPU's default is its budget).
DEFAULT_MAX_MEMORY = 2 << 30
_UNITS = {"": 2**20, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
          "tib": 2**40, "b": 1}  # fmt: skip


def parse_bytes(text: str | int | float) -> int:
    """A memory size: a number of MiB (``1500``), or a number and a unit (``2GiB``, ``1.5G``,
    ``800MB``; k/M/G/T alone are binary).

    Raises:
        ValueError: not a size, or not positive and finite.
    """
    import re

    if isinstance(text, bool):
        raise ValueError(f"not a memory size: {text!r}")
    if isinstance(text, int | float):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"not a memory size: {text!r} (e.g. 2GiB, 800MiB, or MiB alone)")
        value, unit = float(m.group(1)), m.group(2).lower()
    size = value * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return int(size)
