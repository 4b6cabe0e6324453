"""Convolutions written in the forms XLA:CPU runs fastest, chosen by shape.

XLA:CPU's convolution is several times slower than PyTorch's oneDNN on the shapes of Johnson et
al.'s network: 9x9 kernels with 3 input or 3 output channels, 3x3 convolutions with 128
channels on small maps, and 3x3 convolutions after a nearest-neighbour x2 upsampling. Each
function here computes the function of ``lax.conv_general_dilated`` on a padded input (up to
float rounding) in a form that spends its time in XLA's matmul kernel:

* :func:`conv3x3_winograd`: Winograd's F(2x2, 3x3), 2.25x fewer multiplications.
* :func:`conv_space_to_depth`: a 9x9 kernel with 3 input channels as a 3x3 convolution over
  4x4-pixel tiles (48 -> 512 channels), itself run by Winograd.
* :func:`conv_few_out`: few output channels: the input times all k*k kernel taps at once, then
  the k*k shifted output planes summed.
* :func:`upsample_conv3x3`: nearest x2 upsampling, reflection padding of 1 and a 3x3
  convolution, as four 2x2 convolutions on the low-resolution input (one per output phase) with
  summed kernel taps: 16 instead of 36 multiply-adds per low-resolution pixel and channel pair.

Gradients that autodiff makes slow (through tile transforms and shifted sums) are replaced with
:func:`jax.custom_vjp` by the gradient of an equivalent form. :func:`conv2d` (Johnson's network) and
:func:`conv3x3_same` (VGG) pick the form on CPU, asking :mod:`jaxstyle.backend`; on GPU/TPU they
are XLA's convolution (:func:`jaxstyle.backend.conv_forms` overrides the choice while a
program is exported for another platform).

Measured with ``experiments/bench_conv.py`` (2 CPU cores, 256 px, batch 4; forward /
forward+backward in ms, XLA's convolution -> this module [PyTorch 2.13]): 9x9 3->32: 409 / 412
-> 110 / 241 [43 / 112]; 9x9 32->3: 980 / 1291 -> 153 / 460 [111 / 355]; 3x3 128->128 at 64
px: 76 / 203 -> 44 / 166 [23 / 76]; upsample + 3x3 128->64: 185 / 464 -> 85 / 176 [70 / 220];
upsample + 3x3 64->32: 311 / 811 -> 168 / 392 [156 / 523]. The whole network:
``experiments/bench_johnson.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def _few_out_forward(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    k, _, _, cout = kernel.shape
    _, hp, wp, _ = xp.shape
    h, w = hp - k + 1, wp - k + 1
    z = jnp.einsum("nhwc,ck->nhwk", xp, _tap_matrix(kernel))
    return sum(
        z[:, dy : dy + h, dx : dx + w, (dy * k + dx) * cout : (dy * k + dx + 1) * cout]
        for dy in range(k)
        for dx in range(k)
    )


@jax.custom_vjp
def conv_few_out(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'VALID' convolution for outputs with few channels (summed shifted products)."""
    return _few_out_forward(xp, kernel)


def _few_out_fwd(xp, kernel):
    return _few_out_forward(xp, kernel), (xp, kernel)


def _tiles_of_4(xp: jax.Array, k: int) -> bool:
    """Whether a k x k 'VALID' output of ``xp`` splits into 4x4 tiles (space-to-depth)."""
    return (xp.shape[1] - k + 1) % 4 == 0 and (xp.shape[2] - k + 1) % 4 == 0


def _few_out_bwd(res, g):
    xp, kernel = res
    form = conv_space_to_depth if _tiles_of_4(xp, kernel.shape[0]) else xla_conv
    return jax.vjp(form, xp, kernel)[1](g)


conv_few_out.defvjp(_few_out_fwd, _few_out_bwd)


def _winograd_forward(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    n, hp, wp, cin = xp.shape
    h, w = hp - 2, wp - 2
    # Input tiles of 4x4 at stride 2, transformed by B^T d B, one plane per tile position.
    d = [[xp[:, a : a + h : 2, b : b + w : 2, :] for b in range(4)] for a in range(4)]

    def bt(v):  # B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        return [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]]

    cols = [bt([d[a][b] for a in range(4)]) for b in range(4)]
    v = [bt([cols[b][i] for b in range(4)]) for i in range(4)]
    v = jnp.stack([v[i][j] for i in range(4) for j in range(4)])  # (16, n, h/2, w/2, cin)
    g = jnp.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], kernel.dtype)
    u = jnp.einsum("ia,jb,abco->ijco", g, g, kernel).reshape(16, cin, -1)
    m = jnp.einsum("tnhwc,tco->tnhwo", v, u)

    def at(v):  # A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
        return [v[0] + v[1] + v[2], v[1] - v[2] - v[3]]

    rows = [at([m[4 * i + j] for i in range(4)]) for j in range(4)]
    out = [[at([rows[j][p] for j in range(4)])[q] for q in range(2)] for p in range(2)]
    y = jnp.stack([jnp.stack(out[p], axis=3) for p in range(2)], axis=2)  # (n, h/2, 2, w/2, 2, o)
    return y.reshape(n, h, w, -1)


@jax.custom_vjp
def conv3x3_winograd(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'VALID' 3x3 convolution by Winograd's F(2x2, 3x3) (Lavin & Gray 2016).

    16 instead of 36 multiplications per 2x2 output tile and channel pair, as 16 batched
    matmuls. The output height and width must be even. The gradient is XLA's convolution
    gradient: autodiff through the tile transforms was 2-4x slower than it.
    """
    return _winograd_forward(xp, kernel)


def _winograd_fwd(xp, kernel):
    return _winograd_forward(xp, kernel), (xp, kernel)


def _winograd_bwd(res, g):
    return jax.vjp(xla_conv, *res)[1](g)


conv3x3_winograd.defvjp(_winograd_fwd, _winograd_bwd)


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


def upsample_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``conv3x3(reflect_pad(nearest_upsample_x2(x), 1))`` without forming the upsampled image.

    Output row 2m reads upsampled rows 2m-1, 2m, 2m+1 = x rows m-1, m, m (tap 0 on m-1, taps
    1+2 on m); row 2m+1 reads x rows m, m, m+1. At the borders, reflection padding of the
    upsampled image equals edge padding of x. Same for columns.
    """
    n, h, w, cin = x.shape
    # The 2x2 convolutions as one im2col matmul each for up to 64 input channels, XLA's
    # convolution above (measured at 256 px, batches 1-8).
    conv = im2col_conv if backend.cpu_conv_forms() and cin <= 64 else xla_conv
    xe = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = []
    for py in range(2):
        ky = _phase_taps(kernel, 0, py)
        cols = [
            conv(xe[:, py : py + h + 1, px : px + w + 1, :], _phase_taps(ky, 1, px))
            for px in range(2)
        ]
        rows.append(jnp.stack(cols, axis=3))  # (n, h, w, 2, cout)
    y = jnp.stack(rows, axis=2)  # (n, h, 2, w, 2, cout)
    return y.reshape(n, 2 * h, 2 * w, -1)


def conv2d(xp: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """'VALID' convolution of a padded NHWC input, in the form measured fastest for its shape.

    Off CPU (GPU/TPU) it is always XLA's convolution, which their compilers tile well.
    """
    k, _, cin, cout = kernel.shape
    _, hp, wp, _ = xp.shape
    if backend.cpu_conv_forms() and stride == 1:
        if k > 3 and cin <= 4 and _tiles_of_4(xp, k):
            return conv_space_to_depth(xp, kernel)
        if k > 3 and cout <= 4:
            return conv_few_out(xp, kernel)
        if k == 3 and cin >= 32 and hp % 2 == 0 and wp % 2 == 0:
            return conv3x3_winograd(xp, kernel)
    return xla_conv(xp, kernel, stride)


def conv3x3_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VGG's 3x3 'same' convolution (zero padding 1, stride 1), in the form fastest for its shape.

    All forms compute the same function; which one is fastest was measured for forward+backward
    on 2 CPU cores (experiments/bench_vgg.py): XLA's convolution for large feature maps, one
    matmul over im2col patches when there are few input channels (conv1_1), and a sum of nine
    shifted matmuls for small maps with many channels (blocks 4-5 at 256 px), where XLA's
    convolution underuses the matmul kernel. Off CPU it is always XLA's convolution.
    """
    _, h, w, cin = x.shape
    if backend.cpu_conv_forms() and (cin <= 4 or (h * w <= 32 * 32 and cin >= 256)):
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        if cin <= 4:
            return im2col_conv(xp, kernel)
        taps = [xp[:, dy : dy + h, dx : dx + w, :] for dy in range(3) for dx in range(3)]
        return sum(
            jnp.einsum("nhwc,co->nhwo", t, kernel[i // 3, i % 3]) for i, t in enumerate(taps)
        )
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DIMS)
