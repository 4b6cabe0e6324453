"""python -m experiments.bench_adain [--size 512] [--batch 1] [--repeats 3]   (a minute, 2 cores)

AdaIN inference (VGG19 encoder to relu4_1, AdaIN, decoder), jaxstyle against PyTorch in one run
on the same random network in the layout of naoto0804/pytorch-AdaIN
(``experiments/lib/torch_adain.py``): ``--batch`` content images and one style image of
``--size`` x ``--size``, median seconds over ``--repeats`` runs after a warm-up (jaxstyle's
compile time reported apart). Prints one JSON line. Needs `pip install ".[torch]"`.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from experiments.lib import timing


def torch_params(vgg, dec) -> dict:
    """The PyTorch modules' weights as :mod:`jaxstyle.nets.adain` parameters."""
    from jaxstyle.weights.adain import convert_part

    def state(m):
        return {k: v.numpy() for k, v in m.state_dict().items()}

    return {
        "vgg": convert_part(state(vgg), "vgg")[0],
        "decoder": convert_part(state(dec), "decoder")[0],
    }


def run(size: int, repeats: int, batch: int = 1) -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    from experiments.lib.torch_adain import adain_modules, style_transfer, to_nchw
    from jaxstyle.nets import adain

    vgg, dec = adain_modules()
    params = jax.tree_util.tree_map(jnp.asarray, torch_params(vgg, dec))
    rng = np.random.default_rng(0)
    content = rng.random((batch, size, size, 3), np.float32)
    style = rng.random((1, size, size, 3), np.float32)

    def jax_fn():
        return adain.stylize(params, content, [style]).block_until_ready()

    t = time.perf_counter()
    jax_fn()
    compile_s = time.perf_counter() - t
    jax_s = timing.median_time(jax_fn, repeats)
    tc, ts = to_nchw(content), to_nchw(style)
    torch_s = timing.median_time(lambda: style_transfer(vgg, dec, tc, [ts]), repeats)
    from experiments.bench_johnson import cost_flops

    mean, std = adain.weighted_stats(params, [style])
    program = adain.stylize_with_stats.lower(params, content, mean, std, jnp.float32(1.0))
    return {
        "size": size,
        "batch": batch,
        "xla_flops": cost_flops(program.compile()),
        "jaxstyle_s": jax_s,
        "jaxstyle_first_call_s": round(compile_s, 1),
        "torch_s": torch_s,
        "jaxstyle_over_torch": round(jax_s / torch_s, 2),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "jax_backend": jax.default_backend(),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print(json.dumps(run(args.size, args.repeats, args.batch)))


if __name__ == "__main__":
    main()
