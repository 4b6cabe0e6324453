"""Convolutions written in the forms XLA:CPU runs fastest, chosen by shape.

XLA:CPU's convolution is several times slower than PyTorch's oneDNN on the shapes of Johnson et
al.'s network: 9x9 kernels with 3 input or 3 output channels, 3x3 convolutions with 128
channels on small maps, and 3x3 convolutions after a nearest-neighbour x2 upsampling. Each
function here computes the function of ``lax.conv_general_dilated`` on a padded input (up to
float rounding) in a form that spends its time in XLA's matmul kernel:

* :func:`conv3x3_winograd`: Winograd's F(2x2, 3x3), 2.25x fewer multiplications;
  :func:`winograd_same3x3` (VGG's padded form) has a Winograd gradient to its input too.
* :func:`conv_space_to_depth`: a 9x9 kernel with 3 input channels as a 3x3 convolution over
  4x4-pixel tiles (48 -> 512 channels), itself run by Winograd.
* :func:`conv_few_out`: few output channels: the input times all k*k kernel taps at once, then
  the k*k shifted output planes summed.
* :func:`upsample_conv3x3`: nearest x2 upsampling, reflection padding of 1 and a 3x3
  convolution, as four 2x2 convolutions on the low-resolution input (one per output phase) with
  summed kernel taps: 16 instead of 36 multiply-adds per low-resolution pixel and channel pair;
  or those four as one 3x3 convolution with 4x the output channels (:func:`upsample_subpixel`,
  run by XLA or Winograd), faster where the channels are few.

A convolution's gradient may run in another form than its values (:func:`jax.custom_vjp`):
autodiff through tile transforms and shifted sums is slow. :func:`conv2d` (Johnson's network),
:func:`conv3x3_same` (VGG) and :func:`upsample_conv3x3` pick both forms on CPU
(:mod:`jaxstyle.autotune`, or :func:`fixed_forms`); on GPU/TPU they are XLA's convolution
(:func:`jaxstyle.backend.conv_forms` overrides the choice while a program is exported for
another platform).

Measured with ``experiments/bench_conv.py`` (2 CPU cores, 256 px, batch 4; forward /
forward+backward in ms, XLA's convolution -> this module [PyTorch 2.13]): 9x9 3->32: 409 / 412
-> 110 / 241 [43 / 112]; 9x9 32->3: 980 / 1291 -> 153 / 460 [111 / 355]; 3x3 128->128 at 64
px: 76 / 203 -> 44 / 166 [23 / 76]; upsample + 3x3 128->64: 185 / 464 -> 85 / 176 [70 / 220];
upsample + 3x3 64->32: 311 / 811 -> 168 / 392 [156 / 523]. The whole network:
``experiments/bench_johnson.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import backend

DIMS = ("NHWC", "HWIO", "NHWC")


def xla_conv(xp: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """'VALID' convolution of an already padded NHWC input with an HWIO kernel."""
    return jax.lax.conv_general_dilated(
        xp, kernel, (stride, stride), "VALID", dimension_numbers=DIMS
    )


def _tap_matrix(kernel: jax.Array) -> jax.Array:
    """HWIO kernel -> (cin, k*k*cout), columns tap-major."""
    k, _, cin, cout = kernel.shape
    return kernel.reshape(k * k, cin, cout).transpose(1, 0, 2).reshape(cin, k * k * cout)


def conv_few_out(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'VALID' convolution for outputs with few channels (summed shifted products)."""
    k, _, _, cout = kernel.shape
    _, hp, wp, _ = xp.shape
    h, w = hp - k + 1, wp - k + 1
    z = jnp.einsum("nhwc,ck->nhwk", xp, _tap_matrix(kernel))
    return sum(
        z[:, dy : dy + h, dx : dx + w, (dy * k + dx) * cout : (dy * k + dx + 1) * cout]
        for dy in range(k)
        for dx in range(k)
    )


def _winograd_bt(v: list) -> list:
    """B^T v for B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]."""
    return [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]]


_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
#: G g G^T of a 3x3 kernel g, flattened: (16 taps, 9 kernel taps); A^T m A likewise (4, 16).
_KRON_G = np.kron(_G, _G)
_KRON_AT = np.kron(_AT, _AT)
#: Tap t = 4i + j of a transformed kernel -> that tap of the transformed flipped kernel: G
#: applied to a reversed 3-vector is G's result with rows 0 and 3 swapped.
_FLIPPED_TAPS = [4 * (3, 1, 2, 0)[i] + (3, 1, 2, 0)[j] for i in range(4) for j in range(4)]


def _winograd_kernel(kernel: jax.Array, flipped: bool = False) -> jax.Array:
    """G g G^T of every (cin, cout) 3x3 kernel g (of the kernel flipped in space with
    ``flipped``), as (16, cin, cout): one (16, 9) matmul. Written as sums it compiled 15x
    slower (16 fusions) and ran 3x slower (2.6 against 0.9 ms for a 512->512 kernel)."""
    m = _KRON_G[_FLIPPED_TAPS] if flipped else _KRON_G
    _, _, cin, cout = kernel.shape
    return jnp.dot(jnp.asarray(m, kernel.dtype), kernel.reshape(9, -1)).reshape(16, cin, cout)


def conv3x3_winograd(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'VALID' 3x3 convolution by Winograd's F(2x2, 3x3) (Lavin & Gray 2016).

    16 instead of 36 multiplications per 2x2 output tile and channel pair, as 16 batched
    matmuls. The output height and width must be even. The input tiles (4x4 at stride 2) are
    transformed one axis at a time (rows, then columns: half the reads of transforming each
    tile whole, 1.5-2x faster at 64-256 px); the kernel and output transforms are matmuls
    with the transform matrices (fewer ops to compile: a 3x3 256->256 site compiled in 0.1 s
    instead of 0.34). Autodiff through the transforms is slow; :func:`winograd_same3x3` has
    a gradient of its own.
    """
    return _winograd(xp, _winograd_kernel(kernel), "tco")


def _winograd(xp: jax.Array, u: jax.Array, u_axes: str) -> jax.Array:
    """:func:`conv3x3_winograd` with the kernel already transformed: ``u`` is (16, cin, cout)
    for ``u_axes="tco"``, (16, cout, cin) for ``"toc"`` (the matmul reads it transposed)."""
    n, hp, wp, cin = xp.shape
    h, w = hp - 2, wp - 2
    # Rows: the 4 rows of every tile (stride 2), combined by B^T.
    xr = xp.reshape(n, hp // 2, 2, wp, cin)
    r = jnp.stack(_winograd_bt([xr[:, a // 2 : a // 2 + h // 2, a % 2] for a in range(4)]))
    # Columns, the same way: (4 rows, 4 columns, n, h/2, w/2, cin).
    rc = r.reshape(4, n, h // 2, wp // 2, 2, cin)
    v = jnp.stack(_winograd_bt([rc[:, :, :, b // 2 : b // 2 + w // 2, b % 2] for b in range(4)]), 1)
    v = v.reshape(16, n, h // 2, w // 2, cin)
    m = jnp.einsum(f"tnhwc,{u_axes}->tnhwo", v, u)
    # A^T m A for every tile: (2 rows, 2 columns, n, h/2, w/2, cout), then the tiles in place.
    y = jnp.dot(jnp.asarray(_KRON_AT, m.dtype), m.reshape(16, -1))
    y = y.reshape(2, 2, n, h // 2, w // 2, -1).transpose(2, 3, 0, 4, 1, 5)
    return y.reshape(n, h, w, -1)


@jax.custom_vjp
def winograd_same3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VGG's 3x3 'same' convolution (zero padding 1) by Winograd, and its gradient to the input
    by Winograd too: that gradient is the same convolution of the output gradient with the
    kernel flipped and its channels swapped. The kernel's gradient is XLA's."""
    return conv3x3_winograd(_pad1(x), kernel)


def _winograd_same3x3_fwd(x, kernel):
    return winograd_same3x3(x, kernel), (x, kernel)


def _winograd_same3x3_bwd(res, g):
    x, kernel = res
    # The flipped kernel's channels swap in the matmul, never in memory (transposing the
    # kernel first took 44 ms for a 512->512 kernel).
    dx = _winograd(_pad1(g), _winograd_kernel(kernel, flipped=True), "toc")
    (dk,) = jax.vjp(lambda k: _same_xla(x, k), kernel)[1](g)
    return dx, dk


winograd_same3x3.defvjp(_winograd_same3x3_fwd, _winograd_same3x3_bwd)


def conv_space_to_depth(xp: jax.Array, kernel: jax.Array, block: int = 4) -> jax.Array:
    """Stride-1 'VALID' k x k convolution as a 3x3-ish convolution on ``block``-pixel blocks.

    The input is cut into block x block tiles stacked on channels (space-to-depth), the kernel
    is rearranged so that each output tile is a small convolution over neighbouring input tiles,
    and the output tiles are put back (depth-to-space). For 9x9 kernels with 3 input or output
    channels and ``block=4`` this turns them into 3x3 convolutions with 48 and 512 channels,
    which run as :func:`conv2d` (Winograd on CPU), at 1.8x the multiply-adds of the direct form.
    The output height and width must be multiples of ``block``.
    """
    k, _, cin, cout = kernel.shape
    n, hp, wp, _ = xp.shape
    h, w, s = hp - k + 1, wp - k + 1, block
    taps = (s + k - 2) // s + 1  # input tiles each output tile reads, per axis
    hb, wb = h // s + taps - 1, w // s + taps - 1
    xp = jnp.pad(xp, ((0, 0), (0, hb * s - hp), (0, wb * s - wp), (0, 0)))
    x2 = xp.reshape(n, hb, s, wb, s, cin).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb, wb, -1)
    # kernel2[P, Q, (u, v, c), (a, b, o)] = kernel[s*P + u - a, s*Q + v - b, c, o] (0 outside).
    off = s * jnp.arange(taps)[:, None, None] + jnp.arange(s)[None, :, None]
    off = off - jnp.arange(s)[None, None, :]  # (P, u, a)
    valid = (off >= 0) & (off < k)
    idx = jnp.clip(off, 0, k - 1).ravel()
    ky = jnp.take(kernel, idx, axis=0).reshape(taps, s, s, k, cin, cout)
    ky = jnp.where(valid[..., None, None, None], ky, 0)  # (P, u, a, kx, c, o)
    kyx = jnp.take(ky, idx, axis=3).reshape(taps, s, s, taps, s, s, cin, cout)
    kyx = jnp.where(valid[None, None, None, :, :, :, None, None], kyx, 0)  # (P,u,a,Q,v,b,c,o)
    k2 = kyx.transpose(0, 3, 1, 4, 6, 2, 5, 7).reshape(taps, taps, s * s * cin, s * s * cout)
    y2 = conv2d(x2, k2.astype(xp.dtype))
    y = y2.reshape(n, h // s, w // s, s, s, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h, w, cout)


def _phase_taps(kernel: jax.Array, axis: int, phase: int) -> jax.Array:
    """The 3 taps along ``axis`` of a 3x3 kernel folded into 2 for one upsampling phase."""
    t0, t1, t2 = (jnp.take(kernel, i, axis=axis) for i in range(3))
    a, b = (t0, t1 + t2) if phase == 0 else (t0 + t1, t2)
    return jnp.stack([a, b], axis=axis)


def im2col_conv(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'VALID' convolution as one matmul over the k*k shifted copies of the input."""
    k, _, cin, cout = kernel.shape
    n, hp, wp, _ = xp.shape
    h, w = hp - k + 1, wp - k + 1
    cols = jnp.concatenate([xp[:, i : i + h, j : j + w, :] for i in range(k) for j in range(k)], -1)
    return jnp.einsum("nhwk,ko->nhwo", cols, kernel.reshape(k * k * cin, cout))


def _upsample_phases(x: jax.Array, kernel: jax.Array, inner) -> jax.Array:
    """``conv3x3(reflect_pad(nearest_upsample_x2(x), 1))`` without forming the upsampled image.

    Output row 2m reads upsampled rows 2m-1, 2m, 2m+1 = x rows m-1, m, m (tap 0 on m-1, taps
    1+2 on m); row 2m+1 reads x rows m, m, m+1. At the borders, reflection padding of the
    upsampled image equals edge padding of x. Same for columns. ``inner`` runs the four 2x2
    'VALID' convolutions.
    """
    n, h, w, cin = x.shape
    xe = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = []
    for py in range(2):
        ky = _phase_taps(kernel, 0, py)
        cols = [
            inner(xe[:, py : py + h + 1, px : px + w + 1, :], _phase_taps(ky, 1, px))
            for px in range(2)
        ]
        rows.append(jnp.stack(cols, axis=3))  # (n, h, w, 2, cout)
    y = jnp.stack(rows, axis=2)  # (n, h, 2, w, 2, cout)
    return y.reshape(n, 2 * h, 2 * w, -1)


def _subpixel_kernel(kernel: jax.Array) -> jax.Array:
    """The four phases' 2x2 kernels (:func:`_phase_taps`) in one 3x3 kernel with 4x the output
    channels: phase ``(py, px)`` at rows ``py..py+1`` and columns ``px..px+1``, zero elsewhere;
    output channels ordered ``(py, px, cout)``."""
    cin, cout = kernel.shape[2], kernel.shape[3]
    k = jnp.zeros((3, 3, cin, 2, 2, cout), kernel.dtype)
    for py in range(2):
        ky = _phase_taps(kernel, 0, py)
        for px in range(2):
            k = k.at[py : py + 2, px : px + 2, :, py, px, :].set(_phase_taps(ky, 1, px))
    return k.reshape(3, 3, cin, 4 * cout)


def upsample_subpixel(x: jax.Array, kernel: jax.Array, inner) -> jax.Array:
    """:func:`_upsample_phases` as one 3x3 'VALID' convolution of the edge-padded low-resolution
    input with 4x the output channels (:func:`_subpixel_kernel`), then depth to space: 2.25x
    the multiplications of the four 2x2 convolutions, but one wide convolution, which XLA or
    Winograd (:func:`conv3x3_winograd`, 2.25x fewer) runs at a higher rate where the channels
    are few (at 128x128, 64->32: 14.7 ms against the phases' 34.9, measured on 2 cores).
    ``inner`` runs the convolution."""
    n, h, w, _ = x.shape
    cout = kernel.shape[3]
    xe = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    y = inner(xe, _subpixel_kernel(kernel)).reshape(n, h, w, 2, 2, cout)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, cout)


def upsample_explicit(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The definition: nearest x2 upsampling, reflection padding of 1, XLA's 3x3 convolution."""
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return xla_conv(jnp.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"), kernel)


def shifted_conv(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'VALID' convolution as a sum of k*k matmuls, one per kernel tap."""
    k, _, _, _ = kernel.shape
    _, hp, wp, _ = xp.shape
    h, w = hp - k + 1, wp - k + 1
    return sum(
        jnp.einsum("nhwc,co->nhwo", xp[:, dy : dy + h, dx : dx + w, :], kernel[dy, dx])
        for dy in range(k)
        for dx in range(k)
    )


# ---------------------------------------------------------------------------------------------
# The forms of each kind of site, and the rules used when they are not measured.
#
# A *site* is one convolution of a network at one shape (:class:`jaxstyle.autotune.Site`):
# ``conv`` (a 'VALID' convolution of a padded input, any kernel and stride: Johnson's and
# AdaIN's networks), ``same3x3`` (VGG's zero-padded 3x3) or ``upsample`` (nearest x2, reflection
# padding and a 3x3). Every form of a kind computes the same function of ``(x, kernel)``.


def _pad1(x: jax.Array) -> jax.Array:
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _same_xla(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DIMS)


#: kind -> form name -> fn(x, kernel, stride).
FORMS: dict[str, dict[str, Callable[..., jax.Array]]] = {
    "conv": {
        "xla": xla_conv,
        "winograd": lambda xp, k, s: conv3x3_winograd(xp, k),
        "space_to_depth": lambda xp, k, s: conv_space_to_depth(xp, k),
        "few_out": lambda xp, k, s: conv_few_out(xp, k),
        "im2col": lambda xp, k, s: im2col_conv(xp, k),
        "shifted": lambda xp, k, s: shifted_conv(xp, k),
    },
    "same3x3": {
        "xla": lambda x, k, s: _same_xla(x, k),
        "winograd": lambda x, k, s: winograd_same3x3(x, k),
        "im2col": lambda x, k, s: im2col_conv(_pad1(x), k),
        "shifted": lambda x, k, s: shifted_conv(_pad1(x), k),
    },
    "upsample": {
        "phase_xla": lambda x, k, s: _upsample_phases(x, k, xla_conv),
        "phase_im2col": lambda x, k, s: _upsample_phases(x, k, im2col_conv),
        "subpixel_xla": lambda x, k, s: upsample_subpixel(x, k, xla_conv),
        "subpixel_winograd": lambda x, k, s: upsample_subpixel(x, k, conv3x3_winograd),
        "explicit": lambda x, k, s: upsample_explicit(x, k),
    },
}
#: Suffix of a form run on one image of the batch at a time (:func:`_per_image`).
PER_IMAGE = "/1"
#: Largest batch whose per-image forms are candidates (each image is its own op in the program).
PER_IMAGE_MAX_BATCH = 16


def _per_image(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """``fn`` on each image of the batch in turn, the results concatenated. XLA:CPU ran a
    batch of 8 at a 3x3 128->128 site about twice as slowly per image as a batch of 1
    (measured at 64 px: XLA's convolution 159 ms against 89 ms as 8 single images, Winograd
    117 against 62), so the tuner times this variant of every form where the batch is larger
    than one; its gradient is the per-image gradients, by autodiff."""

    def run(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
        return jnp.concatenate([fn(x[i : i + 1], kernel, stride) for i in range(x.shape[0])])

    return run


#: The forms of each kind as written above, without their per-image variants.
_BASE_FORMS = {kind: tuple(table) for kind, table in FORMS.items()}
for _table in FORMS.values():
    _table.update({name + PER_IMAGE: _per_image(fn) for name, fn in list(_table.items())})

#: The form every kind is checked against (values and gradients).
REFERENCE = {"conv": "xla", "same3x3": "xla", "upsample": "explicit"}
#: Forms the tuner times as a backward pass (the gradient of the form). Winograd only where it
#: has a gradient of its own (:func:`winograd_same3x3`, VGG): autodiff through its tile
#: transforms was 2-4x slower than XLA's convolution gradient, and compiling it costs tuning
#: time.
BACKWARD_FORMS = {
    "conv": ("xla", "space_to_depth", "im2col", "shifted"),
    "same3x3": ("xla", "winograd", "im2col", "shifted"),
    "upsample": ("phase_xla", "phase_im2col", "subpixel_xla", "explicit"),
}
#: A form that copies the input k*k times (im2col) is only a candidate while that copy stays
#: under this many bytes (it is timed at the real shape, and a 1 Mpx VGG window would need GBs).
IM2COL_MAX_BYTES = 256 * 2**20


def _dims(site) -> tuple[int, int, int, int, int, int]:
    """(output h, output w, cin, cout, k, stride) of a site."""
    _, h, w, cin = site.x_shape
    k, cout = site.k_shape[0], site.k_shape[3]
    if site.kind == "conv":
        h, w = (h - k) // site.stride + 1, (w - k) // site.stride + 1
    elif site.kind == "upsample":
        h, w = 2 * h, 2 * w
    return h, w, cin, cout, k, site.stride


def valid_forms(site, backward: bool = False) -> list[str]:
    """The forms that can compute ``site`` (as a backward pass with ``backward``)."""
    h, w, cin, cout, k, stride = _dims(site)
    n = site.x_shape[0]
    copy_bytes = n * h * w * k * k * cin * 4
    ok = {"xla", "explicit", "phase_xla", "subpixel_xla"}
    if stride == 1:
        if copy_bytes <= IM2COL_MAX_BYTES:
            ok |= {"im2col", "phase_im2col"}
        if k <= 3:  # k*k separate matmuls: 81 for a 9x9 kernel never won, and compile slowly
            ok.add("shifted")
        if k == 3 and h % 2 == 0 and w % 2 == 0:
            ok.add("winograd")
        if k == 3 and h % 4 == 0 and w % 4 == 0:  # (an upsampling site's low resolution even)
            ok.add("subpixel_winograd")
        if k > 3 and h % 4 == 0 and w % 4 == 0 and min(cin, cout) <= 4:
            ok.add("space_to_depth")
        if k > 1 and cout <= 16:
            ok.add("few_out")
    names = BACKWARD_FORMS[site.kind] if backward else _BASE_FORMS[site.kind]
    valid = [f for f in names if f in ok]
    if 1 < n <= PER_IMAGE_MAX_BATCH:
        valid += [f + PER_IMAGE for f in valid]
    return valid


def fixed_forms(site) -> tuple[str, str]:
    """(forward, backward) by the shape rules measured on one machine (2 AVX2 cores; see the
    module docstring): what runs with autotuning off, or on shapes not known at trace time."""
    _, hp, wp, cin = site.x_shape
    k, cout = site.k_shape[0], site.k_shape[3]
    if site.kind == "upsample":
        form = "phase_im2col" if cin <= 64 else "phase_xla"
        return form, form
    if site.kind == "same3x3":
        if cin <= 4:
            return "im2col", "im2col"
        if hp * wp <= 32 * 32 and cin >= 256:
            return "shifted", "shifted"
        return "xla", "xla"
    if site.stride == 1:
        tiles_of_4 = (hp - k + 1) % 4 == 0 and (wp - k + 1) % 4 == 0
        if k > 3 and cin <= 4 and tiles_of_4:
            return "space_to_depth", "space_to_depth"
        if k > 3 and cout <= 4:
            return "few_out", "space_to_depth" if tiles_of_4 else "xla"
        if k == 3 and cin >= 32 and hp % 2 == 0 and wp % 2 == 0:
            return "winograd", "xla"
    return "xla", "xla"


def _run(kind: str, x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """A site in its chosen forms: the forward form's values, the backward form's gradient.

    Tuned (:mod:`jaxstyle.autotune`), the backward form is chosen only when a gradient is
    traced, so a forward-only program (``apply``) never times backward passes."""
    from jaxstyle import autotune

    site = autotune.Site(kind, tuple(x.shape), tuple(kernel.shape), stride, str(x.dtype))
    if autotune.tunes(site):
        return _tuned(x, kernel, site, autotune.choose(site, "forward"), None)
    fwd, bwd = fixed_forms(site)
    if fwd == bwd:
        return FORMS[kind][fwd](x, kernel, stride)
    return _tuned(x, kernel, site, fwd, bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _tuned(x, kernel, site, fwd, bwd):
    return FORMS[site.kind][fwd](x, kernel, site.stride)


def _tuned_fwd(x, kernel, site, fwd, bwd):
    return FORMS[site.kind][fwd](x, kernel, site.stride), (x, kernel)


def _tuned_bwd(site, fwd, bwd, res, g):
    if bwd is None:  # measured, now that a gradient is wanted
        from jaxstyle import autotune

        bwd = autotune.choose(site, "backward")

    def form(a, b):
        return FORMS[site.kind][bwd](a, b, site.stride)

    return jax.vjp(form, *res)[1](g)


_tuned.defvjp(_tuned_fwd, _tuned_bwd)


def upsample_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``conv3x3(reflect_pad(nearest_upsample_x2(x), 1))``, in the forms chosen for its shape:
    on CPU four 2x2 convolutions on the low-resolution input, one per output phase
    (:func:`_upsample_phases`: 16 instead of 36 multiply-adds per low-resolution pixel and
    channel pair), or the definition; elsewhere the phases with XLA's convolutions."""
    if not backend.cpu_conv_forms():
        return FORMS["upsample"]["phase_xla"](x, kernel, 1)
    return _run("upsample", x, kernel)


def conv2d(xp: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """'VALID' convolution of a padded NHWC input, in the form chosen for its shape
    (:mod:`jaxstyle.autotune`). Off CPU (GPU/TPU) it is always XLA's convolution, which their
    compilers tile and autotune themselves."""
    if not backend.cpu_conv_forms():
        return xla_conv(xp, kernel, stride)
    return _run("conv", xp, kernel, stride)


def conv3x3_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VGG's 3x3 'same' convolution (zero padding 1, stride 1), in the form chosen for its shape
    (:mod:`jaxstyle.autotune`). Off CPU it is always XLA's convolution."""
    if not backend.cpu_conv_forms():
        return _same_xla(x, kernel)
    return _run("same3x3", x, kernel)
