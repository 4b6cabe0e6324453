"""python -m experiments.bench_gatys [--size 256] [--iterations 100]   (about 5 minutes, 2 cores)

Gatys style transfer, jaxstyle (jaxopt L-BFGS under jit) against PyTorch 2.13
(``torch.optim.LBFGS``) on the same VGG16 weights, images, layers and loss definitions, in one
run: seconds per iteration and per function evaluation, the loss each reaches after the same
number of iterations, and the loss each has reached at equal wall time.

Both use a history of 20. jaxstyle takes unit steps without a line search, projected onto [0, 1]
every step (its default). PyTorch runs with ``line_search_fn="strong_wolfe"``: without a line
search torch.optim.LBFGS diverged on this problem (the loss jumped to 1.8e25 at its second
iteration at 128 px and never recovered). Losses are compared on the final images clipped to
[0, 1]. Each side first runs 2 iterations untimed (the first executions of a program cost
more), as the other benchmarks warm up.
Needs `pip install ".[torch]"`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from experiments.lib import cli, inputs

#: Iterations each side runs before the timed run.
WARMUP = 2


def run(
    content_path: str, style_path: str, size: int, iterations: int, net=None
) -> tuple[dict, dict]:
    """Runs both sides once; returns ``(numbers, extras)``.

    ``numbers`` is what the JSON holds; ``extras`` holds the final images (``"jax"``,
    ``"torch"``: HWC [0, 1]) and the loss curves against seconds (``"curves"``).
    """
    import jax
    import numpy as np
    import torch

    from experiments.lib.torch_ref import TorchVGG, gatys_objective, to_torch
    from jaxstyle import gatys
    from jaxstyle import images as imlib
    from jaxstyle.configs import GatysConfig
    from jaxstyle.weights import load_vgg

    cfg = GatysConfig(size=size, iterations=iterations, progress_every=iterations)
    content = imlib.resize_long_side(imlib.load_image(content_path), size)
    style = imlib.resize_long_side(imlib.load_image(style_path), size)
    net = load_vgg("vgg16") if net is None else net

    # A warm-up of WARMUP iterations on each side first (the same programs: iterations are not
    # part of them), so that neither side's timed run pays its first executions: jaxstyle's
    # first call of its compiled trial program took 0.4 s more than the later ones (256 px).
    warm = dataclasses.replace(cfg, iterations=WARMUP)
    gatys.stylize([content], [style], net, warm, progress=False)

    # jaxstyle.
    res = gatys.stylize([content], [style], net, cfg, progress=False)
    s = res.log["summary"]
    j_iters = [r["total"] for r in res.log["iterations"]]
    j_time = s["optimisation_seconds"]
    j_final = s["total"]

    # PyTorch.
    torch.manual_seed(0)
    vgg = TorchVGG(net)
    loss_fn = gatys_objective(vgg, to_torch(content), to_torch(style), cfg)

    def lbfgs(x, n):
        return torch.optim.LBFGS(
            [x],
            lr=1.0,
            max_iter=n,
            history_size=20,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )

    warm_x = to_torch(content).clone().requires_grad_(True)
    warm_opt = lbfgs(warm_x, WARMUP)

    def warm_closure():
        warm_opt.zero_grad()
        total, _ = loss_fn(warm_x)
        total.backward()
        return total

    warm_opt.step(warm_closure)
    x = to_torch(content).clone().requires_grad_(True)
    opt = lbfgs(x, iterations)
    evals, t_evals = [], []
    t0 = time.perf_counter()

    def closure():
        opt.zero_grad()
        total, _ = loss_fn(x)
        total.backward()
        evals.append(float(total.detach()))
        t_evals.append(time.perf_counter() - t0)
        return total

    opt.step(closure)
    t_time = time.perf_counter() - t0
    t_iters = opt.state[opt._params[0]]["n_iter"]
    with torch.no_grad():
        t_final = float(loss_fn(x.detach().clamp(0, 1))[0])

    # Loss at equal wall time: the best loss each had reached by the time the faster one ended.
    t_eq = min(j_time, t_time)
    j_per_it = j_time / len(j_iters)
    j_at = min(j_iters[: max(1, int(t_eq / j_per_it))])
    t_at = min([v for v, t in zip(evals, t_evals, strict=True) if t <= t_eq] or evals[:1])

    numbers = {
        "size": size,
        "iterations": iterations,
        "jax": {
            "version": jax.__version__,
            "seconds": j_time,
            "iterations": len(j_iters),
            "function_evaluations": s["function_evaluations"],
            "s_per_iteration": j_time / len(j_iters),
            "s_per_evaluation": j_time / s["function_evaluations"],
            "compile_seconds": s["compile_seconds"],
            "final_loss_clipped": j_final,
        },
        "torch": {
            "version": torch.__version__,
            "seconds": t_time,
            "iterations": t_iters,
            "function_evaluations": len(evals),
            "s_per_iteration": t_time / t_iters,
            "s_per_evaluation": t_time / len(evals),
            "final_loss_clipped": t_final,
        },
        "equal_time_seconds": t_eq,
        "loss_at_equal_time": {"jax": j_at, "torch": t_at},
    }
    extras = {
        "jax": res.images[0],
        "torch": x.detach().clamp(0, 1)[0].numpy().transpose(1, 2, 0).astype(np.float32),
        "curves": {
            # jaxstyle records no per-iteration times: its iterations are spread evenly.
            "jax": {"seconds": [j_per_it * (i + 1) for i in range(len(j_iters))], "loss": j_iters},
            "torch": {"seconds": t_evals, "loss": evals},
        },
    }
    return numbers, extras


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.bench_gatys", description=__doc__.split("\n\n")[1]
    )
    cli.add_pair_flags(ap)
    cli.add_image_dir_flags(ap)
    cli.gatys_flags(ap, ("size", "iterations"), size=256, iterations=100)
    ap.add_argument("--out", default=None, help="folder for the JSON of all numbers")
    args = ap.parse_args(argv)
    content = inputs.find_image(args, "content", args.content)
    style = inputs.find_image(args, "style", args.style)

    numbers, _ = run(str(content), str(style), args.size, args.iterations)
    s, t_eq = numbers["jax"], numbers["equal_time_seconds"]
    j_at, t_at = numbers["loss_at_equal_time"]["jax"], numbers["loss_at_equal_time"]["torch"]
    print(f"Gatys at {args.size}px, {args.iterations} L-BFGS iterations (VGG16, same losses)")
    for k in ("jax", "torch"):
        n = numbers[k]
        print(
            f"  {k:6s} {n['s_per_iteration']:.3f} s/iteration  {n['s_per_evaluation']:.3f} "
            f"s/evaluation  ({n['function_evaluations']} evaluations, {n['seconds']:.1f} s)  "
            f"final loss {n['final_loss_clipped']:.4g}"
        )
    print(
        f"  ratio s/iteration jax/torch = "
        f"{numbers['jax']['s_per_iteration'] / numbers['torch']['s_per_iteration']:.3f}"
    )
    print(
        f"  ratio s/evaluation jax/torch = "
        f"{numbers['jax']['s_per_evaluation'] / numbers['torch']['s_per_evaluation']:.3f}"
    )
    print(f"  loss at equal wall time ({t_eq:.1f} s): jax {j_at:.4g}, torch {t_at:.4g}")
    print(f"  jaxstyle compile time {s['compile_seconds']:.1f} s (not in the timings above)")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench_gatys.json").write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
