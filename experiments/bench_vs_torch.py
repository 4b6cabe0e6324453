"""python -m experiments.bench_vs_torch [--out DIR] [--smoke]   (13 minutes on 2 CPU cores)

--smoke (64 px Gatys, 32 px Johnson, 3 L-BFGS iterations, 32 px CLI runs): about 2 minutes.
Both runtimes were measured (JAX 0.10.2).

jaxstyle against PyTorch 2.13 (the optional torch extra: ``pip install ".[torch]"``), the same
workloads side by side in one run, on the same VGG16 weights, images and loss definitions
(``experiments/lib/torch_ref.py``):

* Gatys function evaluation (loss and gradient with respect to the image; default layers
  relu4_2 / relu1_1-relu5_1) at 256 and 512 px (long side, tubingen: 256x192, 512x384);
* Gatys L-BFGS iterations at the same sizes (``experiments.bench_gatys``: jaxstyle's unit
  steps against torch.optim.LBFGS with its strong-Wolfe line search, which needs several
  evaluations per iteration, so seconds per evaluation are compared too);
* Johnson training step (batch 4, 256 px, full network) and inference at 256 px, batch 1 and 8
  (``experiments.bench_johnson``);
* a multi-style training step (the same, with conditional instance norm over
  ``--multistyle-styles`` styles, each image of the batch with its own style; PyTorch's network
  is the same layer for layer, ``experiments/lib/torch_ref.py``);
* AdaIN inference at 512 px, batch 1 and 8, one style (``experiments.bench_adain``, a random
  network in the layout of the PyTorch port; FLOPs from XLA's cost analysis);
* a float32 matrix multiply (2048^3) in each framework, measured in the same run, as the
  machine's attainable rate: every workload's achieved GFLOP/s is given as a fraction of it.

FLOPs per workload are the nominal count of the direct algorithm, the same for both sides: a
k x k convolution costs ``2*H*W*Cin*Cout*k*k`` forward, its backward to the input as much again
(weight gradients a third time, for the trained network only), a Gram matrix ``2*H*W*C^2``
forward and twice that with its backward. Achieved GFLOP/s are that count over the time, so
an algorithm that needs fewer multiplications (jaxstyle's Winograd convolutions on CPU) shows
as a higher rate. XLA's cost analysis of the compiled jaxstyle program
(``compiled.cost_analysis()["flops"]``: the arithmetic it actually runs) is in the
``xla_flops`` column; where no nominal count exists, it is used instead (``flops_source``).

Time to first result: ``jaxstyle stylize`` as a fresh subprocess (Python start, imports, weight
loading, compilation, ``--cli-iterations`` iterations at ``--cli-size`` px), three times: with
an empty persistent compilation cache, again with the cache it filled, and with the cache
disabled (``JAX_ENABLE_COMPILATION_CACHE=false``). Each run gets its own ``$JAXSTYLE_HOME``
whose ``weights/`` links to the cached weights, so the real cache is never touched.

Convolution forms: measured per site on this machine (:mod:`jaxstyle.autotune`) unless
``JAXSTYLE_AUTOTUNE=0``, which runs the fixed shape rules: run it both ways for a before/after.
The first run pays the tuning in its warm-ups, outside the medians (38 more minutes here with
the tuner's first timing policy, which spent longer per form than it does now).
``conv_choices.csv`` and the summary list each site's choice and its time against XLA's
convolution.

Writes ``results.csv`` (one row per workload), ``results.json`` (everything, including the raw
timings and the L-BFGS loss curves), ``sheet.png`` (the L-BFGS outputs of both frameworks),
``loss_curves.png`` (L-BFGS loss against seconds), and ``summary.md``. Timings are medians of
``--repeats`` runs after a warm-up; other work on the machine shows in them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.lib import cli, inputs, outputs, paths, timing
from jaxstyle import autotune

NAME = "bench_vs_torch"


# ---------------------------------------------------------------------------------------------
# Analytic FLOP counts.


def conv_flops(h: int, w: int, cin: int, cout: int, k: int = 3) -> float:
    return 2.0 * h * w * cin * cout * k * k


def vgg_forward_flops(arch: str, h: int, w: int, layers) -> dict[str, float]:
    """Forward FLOPs of the convolutions up to the deepest of ``layers``, and the shapes.

    Returns ``{"conv": flops, "shapes": {layer: (h, w, c)}}`` for one image.
    """
    from jaxstyle.nets.vgg import layer_names, param_shapes

    order = layer_names(arch)
    last = max(order.index(n) for n in layers)
    shapes, total, c = {}, 0.0, 3
    ps = param_shapes(arch)
    for name in order[: last + 1]:
        if name.startswith("conv"):
            cout = ps[name]["kernel"][3]
            total += conv_flops(h, w, c, cout)
            c = cout
        elif name.startswith("pool"):
            h, w = h // 2, w // 2
        shapes[name] = (h, w, c)
    return {"conv": total, "shapes": shapes}


def gatys_eval_flops(arch: str, h: int, w: int, content_layers, style_layers) -> float:
    """Loss and gradient of one image: VGG forward and backward to the input, Gram matrices."""
    v = vgg_forward_flops(arch, h, w, tuple(content_layers) + tuple(style_layers))
    grams = sum(
        2.0 * v["shapes"][n][0] * v["shapes"][n][1] * v["shapes"][n][2] ** 2 for n in style_layers
    )
    return 2.0 * v["conv"] + 2.0 * grams


def transformer_flops(ncfg, h: int, w: int) -> float:
    """Forward FLOPs of Johnson's network (nearest upsampling) for one image."""
    c1, c2, c3 = ncfg.channels
    total = conv_flops(h, w, 3, c1, 9)
    total += conv_flops(h // 2, w // 2, c1, c2) + conv_flops(h // 4, w // 4, c2, c3)
    total += 2 * ncfg.num_res * conv_flops(h // 4, w // 4, c3, c3)
    total += conv_flops(h // 2, w // 2, c3, c2) + conv_flops(h, w, c2, c1)
    return total + conv_flops(h, w, c1, 3, 9)


def train_step_flops(ncfg, size: int, batch: int, content_layers, style_layers) -> float:
    """Network forward + backward (input and weight gradients), VGG on outputs and inputs,
    VGG backward to the outputs, Gram matrices of the outputs with their backward."""
    t = transformer_flops(ncfg, size, size)
    v = vgg_forward_flops("vgg16", size, size, tuple(content_layers) + tuple(style_layers))
    grams = sum(
        2.0 * v["shapes"][n][0] * v["shapes"][n][1] * v["shapes"][n][2] ** 2 for n in style_layers
    )
    return batch * (3 * t + 2 * v["conv"] + v["conv"] + 2 * grams)


# ---------------------------------------------------------------------------------------------
# Workloads.


def bench_matmul(n: int, repeats: int, with_torch: bool) -> dict:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.dot)
    flops = 2.0 * n**3
    out = {"n": n, "flops": flops}
    out["jax_seconds"] = timing.median_time(lambda: mm(ja, jb).block_until_ready(), repeats)
    out["jax_gflops"] = flops / out["jax_seconds"] / 1e9
    if with_torch:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch_seconds"] = timing.median_time(lambda: torch.mm(ta, tb), repeats)
        out["torch_gflops"] = flops / out["torch_seconds"] / 1e9
    return out


def bench_gatys_eval(net, content, style, repeats: int, with_torch: bool) -> dict:
    """One loss-and-gradient evaluation of the default Gatys objective."""
    import jax
    import jax.numpy as jnp

    from experiments.bench_johnson import cost_flops
    from jaxstyle import gatys, losses
    from jaxstyle.configs import GatysConfig

    cfg = GatysConfig()
    cl, sl = tuple(cfg.content_layers), tuple(cfg.style_layers)
    x = jnp.asarray(content)
    ct = net.features(x[None], cl)
    sg = losses.style_targets([net.features(jnp.asarray(style)[None], sl)])
    w = {
        "content": jnp.float32(cfg.content_weight),
        "style": jnp.float32(cfg.style_weight),
        "tv": jnp.float32(cfg.tv_weight),
        "layers": jnp.ones(len(sl), jnp.float32),
        "blend": jnp.ones(1, jnp.float32),
    }

    def objective(x, net, ct, sg, w):
        return gatys.objective(x, net, ct, sg, w, cl, sl)

    f = jax.jit(jax.value_and_grad(objective, has_aux=True))
    compiled = f.lower(x, net, ct, sg, w).compile()
    h, wd = content.shape[:2]
    out = {
        "height": h,
        "width": wd,
        "jax_seconds": timing.median_time(
            lambda: jax.block_until_ready(compiled(x, net, ct, sg, w)), repeats
        ),
        "xla_flops": cost_flops(compiled),
        "analytic_flops": gatys_eval_flops(net.arch, h, wd, cl, sl),
    }
    if with_torch:
        import torch

        from experiments.lib.torch_ref import TorchVGG, gatys_objective, to_torch

        loss_fn = gatys_objective(TorchVGG(net), to_torch(content), to_torch(style), cfg)
        xt = to_torch(content).clone().requires_grad_(True)

        def step():
            xt.grad = None
            total, _ = loss_fn(xt)
            total.backward()

        out["torch_seconds"] = timing.median_time(step, repeats)
        out["torch_threads"] = torch.get_num_threads()
    return out


def time_to_first_result(
    content: Path, style: Path, size: int, iterations: int, weights_file: Path
) -> list[dict]:
    """Three fresh ``jaxstyle stylize`` processes: cold cache, warm cache, cache disabled."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="jaxstyle-ttfr-") as tmp:
        tmp = Path(tmp)
        homes = {"cached": tmp / "home-cached", "disabled": tmp / "home-disabled"}
        tuned = autotune.cache_file()
        for home in homes.values():
            (home / "weights").mkdir(parents=True)
            (home / "weights" / weights_file.name).symlink_to(weights_file)
            if tuned.is_file():  # this machine's convolution choices, as a user's run has them
                (home / "autotune").mkdir()
                shutil.copy(tuned, home / "autotune" / tuned.name)
        plan = [
            ("cold cache", "cached", {}),
            ("warm cache", "cached", {}),
            ("cache disabled", "disabled", {"JAX_ENABLE_COMPILATION_CACHE": "false"}),
        ]
        for i, (label, home_key, extra) in enumerate(plan):
            home = homes[home_key]
            env = dict(os.environ, JAXSTYLE_HOME=str(home), **extra)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(paths.REPO), env.get("PYTHONPATH", "")) if p
            )
            log = tmp / f"log{i}.json"
            cmd = [
                sys.executable,
                "-m",
                "jaxstyle.cli",
                "stylize",
                str(content),
                str(style),
                "-o",
                str(tmp / f"out{i}.png"),
                "--size",
                str(size),
                "--iterations",
                str(iterations),
                "--log",
                str(log),
                "-q",
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            summary = json.loads(log.read_text())["summary"]
            cache = home / "xla-cache"
            runs.append(
                {
                    "run": label,
                    "wall_seconds": wall,
                    "compile_seconds": summary["compile_seconds"],
                    "optimisation_seconds": summary["optimisation_seconds"],
                    "cache_files": len(list(cache.iterdir())) if cache.is_dir() else 0,
                }
            )
    return runs


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    cli.add_pair_flags(ap)
    ap.add_argument("--sizes", type=cli.csv_list(int), default=(256, 512), help="Gatys sizes")
    ap.add_argument("--lbfgs-iterations", type=int, default=20)
    ap.add_argument("--johnson-size", type=int, default=256)
    ap.add_argument("--johnson-batch", type=int, default=4)
    ap.add_argument("--infer-batches", type=cli.csv_list(int), default=(1, 8))
    ap.add_argument("--multistyle-styles", type=int, default=5, help="styles of the network")
    ap.add_argument("--adain-size", type=int, default=512)
    ap.add_argument("--adain-batches", type=cli.csv_list(int), default=(1, 8))
    ap.add_argument("--matmul", type=int, default=2048, help="matrix side")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cli-size", type=int, default=256)
    ap.add_argument("--cli-iterations", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true", help="jaxstyle side only")
    args = cli.parse(ap, argv)
    cli.smoke(
        args,
        ap,
        sizes=(64,),
        lbfgs_iterations=3,
        johnson_size=32,
        johnson_batch=2,
        infer_batches=(1, 2),
        multistyle_styles=2,
        adain_size=32,
        adain_batches=(1, 2),
        matmul=256,
        repeats=2,
        cli_size=32,
        cli_iterations=2,
    )
    cp = inputs.find_image(args, "content", args.content)
    sp = inputs.find_image(args, "style", args.style)
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch
        except ImportError:
            print("PyTorch is not installed (pip install '.[torch]'): jaxstyle side only")
            with_torch = False
    from experiments import bench_gatys, bench_johnson
    from jaxstyle import weights as jw
    from jaxstyle.configs import TrainConfig
    from jaxstyle.nets.transformer_net import FULL

    # No persistent compilation cache here: compile times are part of what is reported.
    out = outputs.Outputs(args.out, NAME, args)
    net = inputs.load_net(args)
    env = outputs.run_env()
    if with_torch:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()

    print("matmul ...", flush=True)
    mm = bench_matmul(args.matmul, args.repeats, with_torch)
    rows: list[dict] = []

    def add(workload, size, batch, jax_s, torch_s, xla_flops, analytic, **extra):
        flops = analytic if analytic else xla_flops
        row = {
            "workload": workload,
            "size": size,
            "batch": batch,
            "jax_seconds": jax_s,
            "torch_seconds": torch_s,
            "ratio_jax_torch": jax_s / torch_s if torch_s else None,
            "flops": flops,
            "flops_source": "analytic" if analytic else "xla",
            "analytic_flops": analytic,
            "xla_flops": xla_flops,
            "jax_gflops": flops / jax_s / 1e9,
            "torch_gflops": flops / torch_s / 1e9 if torch_s else None,
        }
        row["jax_vs_matmul"] = row["jax_gflops"] / mm["jax_gflops"]
        if torch_s:
            row["torch_vs_matmul"] = row["torch_gflops"] / mm["torch_gflops"]
        row.update(extra)
        rows.append(row)
        return row

    sheet, panels, lbfgs = [], [], {}
    for size in args.sizes:
        content, style = inputs.load(cp, size), inputs.load(sp, size)
        print(f"Gatys evaluation at {size} px ...", flush=True)
        ev = bench_gatys_eval(net, content, style, args.repeats, with_torch)
        eval_row = add(
            "gatys_evaluation",
            size,
            1,
            ev["jax_seconds"],
            ev.get("torch_seconds"),
            ev["xla_flops"],
            ev["analytic_flops"],
        )
        if not with_torch:
            continue
        print(f"Gatys L-BFGS at {size} px ...", flush=True)
        numbers, extras = bench_gatys.run(str(cp), str(sp), size, args.lbfgs_iterations, net)
        lbfgs[size] = numbers
        j, t = numbers["jax"], numbers["torch"]
        add(
            "gatys_lbfgs_iteration",
            size,
            1,
            j["s_per_iteration"],
            t["s_per_iteration"],
            eval_row["flops"] * j["function_evaluations"] / j["iterations"],
            ev["analytic_flops"] * j["function_evaluations"] / j["iterations"],
            torch_evaluations_per_iteration=t["function_evaluations"] / t["iterations"],
            ratio_per_evaluation=j["s_per_evaluation"] / t["s_per_evaluation"],
        )
        sheet.append(
            [
                (content, f"content {cp.stem}, {size} px"),
                (style, f"style {sp.stem}"),
                (
                    extras["jax"],
                    f"jaxstyle: {j['iterations']} its, {j['s_per_iteration']:.3f} s/it\n"
                    f"loss {outputs.fmt(j['final_loss_clipped'])}",
                ),
                (
                    extras["torch"],
                    f"pytorch: {t['iterations']} its, {t['s_per_iteration']:.3f} s/it\n"
                    f"loss {outputs.fmt(t['final_loss_clipped'])}",
                ),
            ]
        )
        panels.append(
            {
                "title": f"L-BFGS at {size} px",
                "xlabel": "seconds (compilation excluded)",
                "series": [
                    {"label": k, "x": c["seconds"], "y": c["loss"]}
                    for k, c in extras["curves"].items()
                ],
            }
        )
        numbers["curves"] = extras["curves"]

    print("Johnson train step and inference ...", flush=True)
    jn = bench_johnson.run(
        args.johnson_size,
        args.johnson_batch,
        args.repeats,
        infer_batches=tuple(args.infer_batches),
        infer_repeats=args.repeats,
        vgg=net,
        torch_side=with_torch,
    )
    tcfg = TrainConfig()
    ts = jn["train_step_seconds"]
    add(
        "johnson_train_step",
        args.johnson_size,
        args.johnson_batch,
        ts["jax"],
        ts.get("torch"),
        jn["train_step_xla_flops"],
        train_step_flops(
            FULL, args.johnson_size, args.johnson_batch, tcfg.content_layers, tcfg.style_layers
        ),
        jax_compile_seconds=jn["train_step_compile_seconds"],
    )
    for b, r in jn["inference"].items():
        add(
            "johnson_inference",
            args.johnson_size,
            b,
            r["jax_seconds"],
            r.get("torch_seconds"),
            r["xla_flops"],
            b * transformer_flops(FULL, args.johnson_size, args.johnson_size),
        )

    print("multi-style train step ...", flush=True)
    ms = bench_johnson.run(
        args.johnson_size,
        args.johnson_batch,
        args.repeats,
        vgg=net,
        torch_side=with_torch,
        num_styles=args.multistyle_styles,
    )
    ts = ms["train_step_seconds"]
    add(
        "multistyle_train_step",
        args.johnson_size,
        args.johnson_batch,
        ts["jax"],
        ts.get("torch"),
        ms["train_step_xla_flops"],
        train_step_flops(
            FULL, args.johnson_size, args.johnson_batch, tcfg.content_layers, tcfg.style_layers
        ),
        styles=args.multistyle_styles,
        jax_compile_seconds=ms["train_step_compile_seconds"],
    )
    if with_torch:
        from experiments import bench_adain

        for b in args.adain_batches:
            print(f"AdaIN inference at {args.adain_size} px, batch {b} ...", flush=True)
            ad = bench_adain.run(args.adain_size, args.repeats, b)
            add(
                "adain_inference",
                args.adain_size,
                b,
                ad["jaxstyle_s"],
                ad["torch_s"],
                ad["xla_flops"],
                None,
                jax_compile_seconds=ad["jaxstyle_first_call_s"],
            )

    print("time to first result (3 CLI runs) ...", flush=True)
    weights_file = Path(args.weights).resolve() if args.weights else jw.cache_path("vgg16")
    ttfr = time_to_first_result(cp, sp, args.cli_size, args.cli_iterations, weights_file)

    if sheet:
        out.sheet("sheet.png", sheet, f"L-BFGS, {args.lbfgs_iterations} iterations")
    if panels:
        out.plot("loss_curves.png", panels, "Gatys L-BFGS: jaxstyle vs PyTorch")
    mm_row = {
        "framework": "jax",
        "gflops": mm["jax_gflops"],
        "seconds": mm["jax_seconds"],
    }
    mm_rows = [mm_row] + (
        [{"framework": "torch", "gflops": mm["torch_gflops"], "seconds": mm["torch_seconds"]}]
        if with_torch
        else []
    )
    choices = autotune.used()
    out.csv("results.csv", rows)
    out.csv("time_to_first_result.csv", ttfr)
    if choices:
        out.csv("conv_choices.csv", choices)
    out.json(
        "results.json",
        {
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "matmul": mm,
            "matmul_by_framework": mm_rows,  # the summary's table
            "workloads": rows,
            "lbfgs": lbfgs,
            "johnson": jn,
            "time_to_first_result": ttfr,
            "conv_choices": choices,
            "env": env,
        },
    )
    for r in rows:
        print(
            f"  {r['workload']:24s} {r['size']:4d}px b{r['batch']}: jax {r['jax_seconds']:.4f} s"
            + (
                f", torch {r['torch_seconds']:.4f} s, ratio {r['ratio_jax_torch']:.3f}"
                if r["torch_seconds"]
                else ""
            )
            + f"; {r['flops'] / 1e9:.2f} GFLOP ({r['flops_source']}), jax "
            f"{r['jax_gflops']:.1f} GFLOP/s = {r['jax_vs_matmul']:.0%} of matmul"
        )
    for r in choices:
        print(f"  {r['site']:40s} forward {r['forward']:14s} backward {r['backward']}")
    for r in ttfr:
        print(
            f"  CLI {r['run']:15s} {r['wall_seconds']:.1f} s (compile {r['compile_seconds']:.1f} s)"
        )

    cold, warm, off = ttfr
    if autotune.enabled():
        tuned = (
            "## Convolution forms chosen on this machine (`jaxstyle.autotune`)\n\n"
            "Per site (kind, kernel, channels, input shape), the form run forward and backward "
            "and its time against XLA's convolution's at that site, from the tuning "
            f"measurements (`{autotune.cache_file()}`; ms).\n\n"
            + outputs.md_table(
                choices,
                [
                    "site",
                    "forward",
                    "forward_ms",
                    "xla_forward_ms",
                    "backward",
                    "backward_ms",
                    "xla_backward_ms",
                ],
            )  # fmt: skip
        )
    else:
        tuned = f"## Convolution forms\n\nFixed shape rules ({autotune.ENV}=0): not measured."
    out.summary(
        "jaxstyle vs PyTorch: the same workloads in one run",
        [
            f"{env['machine']}; convolution forms "
            + ("measured per site (autotune)" if autotune.enabled() else "by fixed rules")
            + (f"; torch {env['torch']} with {env['torch_threads']} threads" if with_torch else "")
            + f". Medians of {args.repeats} runs after a warm-up. `ratio_jax_torch` is jaxstyle's "
            "time over PyTorch's (below 1: jaxstyle faster).",
            f"## Matrix multiply ({args.matmul}^3, float32)\n\n"
            + outputs.md_table(mm_rows, ["framework", "gflops", "seconds"]),
            "## Workloads\n\n"
            + outputs.md_table(
                rows,
                [
                    "workload",
                    "size",
                    "batch",
                    "jax_seconds",
                    "torch_seconds",
                    "ratio_jax_torch",
                    "flops",
                    "flops_source",
                    "xla_flops",
                    "jax_gflops",
                    "torch_gflops",
                    "jax_vs_matmul",
                    "torch_vs_matmul",
                ],
            )
            + "\nFor `gatys_lbfgs_iteration`, PyTorch's strong-Wolfe line search evaluates the "
            "function several times per iteration (`torch_evaluations_per_iteration` in the "
            "CSV) and `ratio_per_evaluation` compares the cost per evaluation; the FLOPs are "
            "jaxstyle's (one evaluation per iteration). Sizes are the long side.",
            f"## Time to first result (`jaxstyle stylize`, {args.cli_size} px, "
            f"{args.cli_iterations} iterations, fresh process)\n\n"
            + outputs.md_table(
                ttfr,
                ["run", "wall_seconds", "compile_seconds", "optimisation_seconds", "cache_files"],
            )
            + f"\nThe persistent compilation cache saves "
            f"{outputs.fmt(cold['wall_seconds'] - warm['wall_seconds'])} s of "
            f"{outputs.fmt(cold['wall_seconds'])} s on the second run; with it disabled a run "
            f"takes {outputs.fmt(off['wall_seconds'])} s.",
            tuned,
        ],
    )
    print(f"wrote {out.dir}: " + ", ".join(sorted(set(out.written))))
    return {"rows": rows, "ttfr": ttfr, "matmul": mm}


if __name__ == "__main__":
    main()
