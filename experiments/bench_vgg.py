"""python -m experiments.bench_vgg [--size 256] [--repeats 10]   (about 1 minute on 2 CPU cores)

VGG16 forward + backward to the input image (the Gatys inner step) in jaxstyle and in PyTorch,
measured side by side in one run on the same weights, and printed as a ratio.

The loss is a sum over the Gatys layers (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1, relu4_2) of
the mean squared activation: the same network depth and the same backward pass as a Gatys
iteration, without the Gram matrices (which ``experiments.bench_gatys`` includes).
Needs the optional torch extra (`pip install 'jaxstyle[torch]'`).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments.lib import timing
from jaxstyle.weights import load_vgg

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2")


def jax_step(net, size: int):
    def loss(x, net):
        feats = net.features(x, LAYERS)
        return sum(jnp.mean(f**2) for f in feats.values())

    grad = jax.jit(jax.grad(loss))
    x = jnp.asarray(np.random.default_rng(0).random((1, size, size, 3), np.float32))
    return lambda: grad(x, net).block_until_ready()


def torch_step(net, size: int):
    import torch

    from experiments.lib.torch_ref import TorchVGG

    vgg = TorchVGG(net)
    x = torch.rand(1, 3, size, size, requires_grad=True)

    def step():
        x.grad = None
        feats = vgg.features(x, LAYERS)
        sum(f.pow(2).mean() for f in feats.values()).backward()

    return step


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.bench_vgg", description=__doc__.split("\n\n")[1]
    )
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    import torch

    net = load_vgg("vgg16")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )
    tj = timing.median_time(jax_step(net, args.size), args.repeats)
    tt = timing.median_time(torch_step(net, args.size), args.repeats)
    print(f"VGG16 fwd+bwd to input at {args.size}x{args.size}:")
    print(f"  jaxstyle {tj * 1000:8.1f} ms")
    print(f"  pytorch  {tt * 1000:8.1f} ms")
    print(f"  ratio jaxstyle/pytorch = {tj / tt:.3f}")


if __name__ == "__main__":
    main()
