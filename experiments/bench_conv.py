"""python -m experiments.bench_conv [--size 256] [--batch 4]   (about 2 minutes on 2 CPU cores)

The convolutions of Johnson et al.'s transformation network, one layer at a time, in three
implementations measured side by side: XLA's convolution (``lax.conv_general_dilated``),
jaxstyle's CPU form (``jaxstyle.nets.conv``: Winograd, space-to-depth, shifted sums, per-phase
upsampling, whichever ``conv2d`` picks for the shape) and PyTorch 2.13's ``Conv2d``. Each layer
includes its reflection padding (and the x2 nearest upsampling for the two upsampling layers);
forward and forward+backward (the gradient to the input and the kernel; to the kernel only for
the first layer, whose input is the data) in milliseconds, medians after a warm-up.

Needs the optional torch extra (``pip install ".[torch]"``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from experiments.lib import timing
from jaxstyle.nets import conv

#: name, cin, cout, kernel, stride, input side as a fraction of --size, upsample, needs dx
LAYERS = [
    ("conv1 9x9 3->32", 3, 32, 9, 1, 1, False, False),
    ("conv2 3x3/2 32->64", 32, 64, 3, 2, 1, False, True),
    ("conv3 3x3/2 64->128", 64, 128, 3, 2, 2, False, True),
    ("res 3x3 128->128", 128, 128, 3, 1, 4, False, True),
    ("deconv1 up 128->64", 128, 64, 3, 1, 4, True, True),
    ("deconv2 up 64->32", 64, 32, 3, 1, 2, True, True),
    ("deconv3 9x9 32->3", 32, 3, 9, 1, 1, False, True),
]


def reflect(x, p):
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


def xla_layer(k, stride, upsample):
    def f(x, w):
        if upsample:
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv.xla_conv(reflect(x, k // 2), w, stride)

    return f


def jaxstyle_layer(k, stride, upsample):
    def f(x, w):
        if upsample:
            return conv.upsample_conv3x3(x, w)
        return conv.conv2d(reflect(x, k // 2), w, stride)

    return f


def median_ms(fn, repeats):
    return 1e3 * timing.median_time(fn, repeats)


def time_jax(f, x, w, need_dx, repeats):
    g = jax.random.normal(jax.random.PRNGKey(2), jax.eval_shape(f, x, w).shape)

    def fwd_bwd(x, w, g):
        y, vjp = jax.vjp(f, x, w)
        dx, dw = vjp(g)
        return (jnp.sum(y), dx, dw) if need_dx else (jnp.sum(y), dw)

    fwd, both = jax.jit(f), jax.jit(fwd_bwd)
    return (
        median_ms(lambda: jax.block_until_ready(fwd(x, w)), repeats),
        median_ms(lambda: jax.block_until_ready(both(x, w, g)), repeats),
    )


def time_torch(n, cin, cout, k, stride, side, upsample, need_dx, repeats):
    import torch

    pad = torch.nn.ReflectionPad2d(k // 2)
    layer = torch.nn.Conv2d(cin, cout, k, stride)
    x = torch.randn(n, cin, side, side, requires_grad=need_dx)

    def f():
        xi = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") if upsample else x
        return layer(pad(xi))

    with torch.no_grad():
        g = torch.randn_like(f())

    def fwd():
        with torch.no_grad():
            f()

    def both():
        layer.zero_grad()
        x.grad = None
        (f() * g).sum().backward()

    return median_ms(fwd, repeats), median_ms(both, repeats)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.bench_conv", description=__doc__.split("\n\n")[1]
    )
    ap.add_argument("--size", type=int, default=256, help="image side")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    print(f"{args.batch} images of {args.size} px; ms forward / forward+backward")
    print(f"{'layer':22s} {'XLA conv':>16s} {'jaxstyle.nets.conv':>16s} {'PyTorch':>16s}")
    key = jax.random.PRNGKey(0)
    for name, cin, cout, k, stride, div, upsample, need_dx in LAYERS:
        side = args.size // div
        x = jax.random.normal(key, (args.batch, side, side, cin))
        w = jax.random.normal(key, (k, k, cin, cout)) * 0.05
        cells = [
            time_jax(make(k, stride, upsample), x, w, need_dx, args.repeats)
            for make in (xla_layer, jaxstyle_layer)
        ]
        cells.append(
            time_torch(args.batch, cin, cout, k, stride, side, upsample, need_dx, args.repeats)
        )
        print(f"{name:22s} " + " ".join(f"{a:7.1f} / {b:6.1f}" for a, b in cells), flush=True)


if __name__ == "__main__":
    main()
