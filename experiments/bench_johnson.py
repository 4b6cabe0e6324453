"""python -m experiments.bench_johnson [--size 256] [--steps 5]   (about 5 minutes on 2 CPU cores)

Johnson et al. feed-forward style transfer, jaxstyle against PyTorch 2.13 in one run on the same
network (pytorch/examples layout, nearest upsampling, instance norm), the same VGG16 weights and
the same perceptual losses:

* one training step (batch 4: transformer forward, VGG16 on outputs and inputs, backward through
  both, Adam update), median seconds over ``--steps`` steps, plus jaxstyle's compile time;
* inference images per second at batch 1 and batch 8.

Needs `pip install ".[torch]"`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from experiments.lib import timing


def cost_flops(compiled) -> float | None:
    """XLA's FLOP count of a compiled program (``None`` where the backend gives none)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend and version implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def run(
    size: int,
    batch: int,
    steps: int,
    *,
    infer_batches: tuple[int, ...] = (1, 8),
    infer_repeats: int = 5,
    vgg=None,
    torch_side: bool = True,
    num_styles: int = 1,
) -> dict:
    """Times both sides; returns the numbers (plus XLA's FLOP counts of the jax programs).

    ``num_styles`` > 1: the multi-style network (conditional instance norm), each image of the
    batch with its own style and Gram targets, on both sides.
    """
    import jax
    import jax.numpy as jnp

    from jaxstyle import train
    from jaxstyle.configs import TrainConfig
    from jaxstyle.nets.transformer_net import TransformerNet
    from jaxstyle.weights import load_vgg

    rng = np.random.default_rng(0)
    cfg = TrainConfig(image_size=size, batch_size=batch)
    vgg = load_vgg("vgg16") if vgg is None else vgg.with_pooling("max")
    styles = jnp.asarray(rng.random((num_styles, size, size, 3), np.float32))
    # The same pieces as `jaxstyle train` (train.train_and_evaluate), not copies of them.
    if num_styles == 1:
        grams = train.style_grams(vgg, styles[0], cfg.style_layers)
    else:
        grams = train.stacked_style_grams(vgg, list(styles), cfg.style_layers)
    weights = train.loss_weights(cfg)
    batch_u8 = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)

    # jaxstyle training step.
    ncfg = train.net_config(cfg, num_styles)
    tx = train.make_optimizer(cfg)
    state = train.create_train_state(cfg, tx, ncfg)
    jbatch = jnp.asarray(batch_u8)
    t0 = time.perf_counter()
    step = train.make_train_step(cfg, tx, ncfg)
    step = step.lower(state, jbatch, vgg, grams, weights).compile()
    compile_s = time.perf_counter() - t0
    holder = [state]

    def jax_step():
        holder[0], terms = step(holder[0], jbatch, vgg, grams, weights)
        jax.block_until_ready(terms)

    j_step = timing.median_time(jax_step, steps)

    # Inference, jaxstyle side (single-style networks only).
    apply = jax.jit(lambda p, x: TransformerNet(ncfg).apply({"params": p}, x))
    infer_batches = infer_batches if num_styles == 1 else ()
    xs = {b: jnp.asarray(rng.random((b, size, size, 3), np.float32)) for b in infer_batches}
    infer = {}
    for b, x in xs.items():
        tj = timing.median_time(
            lambda x=x: apply(holder[0].params, x).block_until_ready(), infer_repeats
        )
        flops = cost_flops(apply.lower(holder[0].params, x).compile())
        infer[b] = {"jax_seconds": tj, "jax_img_per_s": b / tj, "xla_flops": flops}

    numbers = {
        "size": size,
        "batch": batch,
        "train_step_seconds": {"jax": j_step},
        "train_step_compile_seconds": compile_s,
        "train_step_xla_flops": cost_flops(step),
        "inference": infer,
        "versions": {"jax": jax.__version__},
    }
    if not torch_side:
        return numbers

    import torch

    from experiments.lib.torch_ref import TorchVGG, gram, transformer_net_class

    # PyTorch training step, same network and losses.
    torch.manual_seed(0)
    net = transformer_net_class(num_styles)()
    tvgg = TorchVGG(vgg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    t_style = {
        k: gram(v)
        for k, v in tvgg.features(
            torch.from_numpy(np.asarray(styles).transpose(0, 3, 1, 2)), cfg.style_layers
        ).items()
    }
    xb = torch.from_numpy(batch_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    layers = tuple(dict.fromkeys(cfg.content_layers + cfg.style_layers))
    gen = torch.Generator().manual_seed(0)

    def torch_step():
        opt.zero_grad()
        targets, style = t_style, None
        if num_styles > 1:  # a style per image, as jaxstyle's step
            idx = torch.randint(0, num_styles, (xb.shape[0],), generator=gen)
            style = torch.nn.functional.one_hot(idx, num_styles).float()
            targets = {k: v[idx] for k, v in t_style.items()}
        y = torch.sigmoid(net(xb * 255.0, style))  # same [0,1] -> [0,1] convention as jaxstyle's
        f = tvgg.features(torch.cat([y, xb]), layers)
        n = xb.shape[0]
        content = sum((f[k][:n] - f[k][n:]).pow(2).mean() for k in cfg.content_layers)
        style_l = sum((gram(f[k][:n]) - targets[k]).pow(2).mean() for k in cfg.style_layers)
        loss = cfg.content_weight * content + cfg.style_weight * style_l
        loss.backward()
        opt.step()

    t_step = timing.median_time(torch_step, steps)
    numbers["train_step_seconds"].update(torch=t_step, ratio=j_step / t_step)
    for b, x in xs.items():
        xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            tt = timing.median_time(lambda xt=xt: net(xt * 255.0), infer_repeats)
        infer[b].update(torch_seconds=tt, torch_img_per_s=b / tt)
    numbers["versions"]["torch"] = torch.__version__
    return numbers


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.bench_johnson", description=__doc__.split("\n\n")[1]
    )
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=None, help="folder for the JSON of all numbers")
    args = ap.parse_args(argv)

    numbers = run(args.size, args.batch, args.steps)
    ts = numbers["train_step_seconds"]
    print(f"Johnson at {args.size}px")
    print(
        f"  train step (batch {args.batch}): jaxstyle {ts['jax']:.2f} s, pytorch "
        f"{ts['torch']:.2f} s, ratio {ts['ratio']:.3f}; jaxstyle compile "
        f"{numbers['train_step_compile_seconds']:.1f} s"
    )
    for b, r in numbers["inference"].items():
        print(
            f"  inference batch {b}: jaxstyle {r['jax_img_per_s']:.2f} img/s, pytorch "
            f"{r['torch_img_per_s']:.2f} img/s, ratio (time) "
            f"{r['torch_img_per_s'] / r['jax_img_per_s']:.3f}"
        )
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench_johnson.json").write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
