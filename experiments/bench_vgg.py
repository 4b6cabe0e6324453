"""python experiments/bench_vgg.py [--size 256] [--repeats 10]   (about 1 minute on 2 CPU cores)

VGG16 forward + backward to the input image (the Gatys inner step) in jaxstyle and in PyTorch,
measured side by side in one run on the same weights, and printed as a ratio.

The loss is a sum over the Gatys layers (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1, relu4_2) of
the mean squared activation: the same network depth and the same backward pass as a Gatys
iteration, without the Gram matrices (which the Gatys benchmark in bench_gatys.py includes).
Needs the optional torch extra (`pip install 'jaxstyle[torch]'`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.vgg import load_vgg

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2")


def time_it(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def jax_step(net, size: int):
    def loss(x, net):
        feats = net.features(x, LAYERS)
        return sum(jnp.mean(f**2) for f in feats.values())

    grad = jax.jit(jax.grad(loss))
    x = jnp.asarray(np.random.default_rng(0).random((1, size, size, 3), np.float32))
    return lambda: grad(x, net).block_until_ready()


def torch_step(net, size: int):
    import torch

    torch.manual_seed(0)
    layers, cin = [], 3
    for conv, p in net.params.items():
        c = torch.nn.Conv2d(cin, p["kernel"].shape[-1], 3, padding=1)
        with torch.no_grad():
            c.weight.copy_(torch.from_numpy(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy()))
            c.bias.copy_(torch.from_numpy(np.asarray(p["bias"])))
        c.requires_grad_(False)
        layers.append((conv, c))
        cin = p["kernel"].shape[-1]
    mean = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    block_ends = {"conv1_2", "conv2_2", "conv3_3", "conv4_3"}
    wanted = {n.replace("relu", "conv") for n in LAYERS}

    def loss(x):
        h = x.flip(1) * 255 - mean  # RGB [0,1] -> Caffe BGR, as jaxstyle does inside
        total = 0
        for conv, c in layers:
            h = torch.relu(c(h))
            if conv in wanted:
                total = total + h.pow(2).mean()
            if conv == "conv5_1":
                return total
            if conv in block_ends:
                h = torch.nn.functional.max_pool2d(h, 2)

    x = torch.rand(1, 3, size, size, requires_grad=True)

    def step():
        x.grad = None
        loss(x).backward()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    import torch

    net = load_vgg("vgg16")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )
    tj = time_it(jax_step(net, args.size), args.repeats)
    tt = time_it(torch_step(net, args.size), args.repeats)
    print(f"VGG16 fwd+bwd to input at {args.size}x{args.size}:")
    print(f"  jaxstyle {tj * 1000:8.1f} ms")
    print(f"  pytorch  {tt * 1000:8.1f} ms")
    print(f"  ratio jaxstyle/pytorch = {tj / tt:.3f}")


if __name__ == "__main__":
    main()
