"""python -m experiments.figure11_noise [--out DIR] [--smoke]   (10 minutes on 2 CPU cores)

--smoke (64 px, 2 and 4 iterations): about 30 s.
Both runtimes were measured (JAX 0.10.2).

The report's Figure 11: content conv2_2, style conv1_1-conv3_2, style weight 5,000, content
weight 1, Ite=15 gave "a low loss but a lot of random noise" (total loss 1.5873).
``layer_choice.py`` runs that setting our way (content initialisation, 15 iterations, ImageNet
input normalisation, the weight mapped by k) and gets a clean image. This changes one thing at a
time, in a 2x2x2 grid, to find which difference brings the noise:

* input handling: ``ours`` (the weights' own convention, weight mapped by k) or ``report``: the
  report fed RGB in [0, 1] without the mean/std normalisation its VGG was trained with. It is
  emulated on our VGG16 through the ``normalised`` convention's 1x1 input map (``255 * std * x``
  in BGR, no mean: ``experiments/lib/report.py``), with the report's weight as it is (its
  losses are still in our network's units, not the report's);
* initialisation: the content image, or uniform noise (the report: "white noise (or the
  content image or the style image)");
* iterations: 15, or 300 (``--long``; the report's Ite=15 counted as torch ``LBFGS.step()``
  calls of up to 20 iterations).

The network (VGG16 here, VGG19 in the report) cannot be varied: no VGG19 ImageNet weights can be
had on this machine. Noise is measured as the output's total variation over the content image's
(``tv_ratio``), and as the mean absolute difference between the output and its 3x3 median
(``speckle``, which ignores edges that the content image has too).

Writes ``sheet.png``, ``results.csv``, ``results.json``, ``loss_curves.png`` and ``summary.md``.
"""

from __future__ import annotations

import itertools

import numpy as np

from experiments.lib import analysis, cli, inputs, outputs, report

NAME = "figure11_noise"
CONTENT_LAYERS = ("conv2_2",)
STYLE_LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2")
REPORT_STYLE_WEIGHT = 5000.0
REPORT_FINAL_LOSS = 1.5873


def report_net(net):
    """``net`` fed as the report's VGG was: raw [0, 1] RGB in place of mean/std-normalised input.

    A ``normalised``-convention network whose 1x1 input map is ``report.report_input``.
    """
    import jax.numpy as jnp

    from jaxstyle.nets.vgg import INPUT, TORCHVISION_STD

    if net.convention != "caffe":
        raise ValueError(f"the emulation is written for Caffe weights, not {net.convention!r}")
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for c in range(3):  # RGB channel c -> BGR channel 2 - c, scaled by 255 * std
        kernel[0, 0, c, 2 - c] = 255.0 * TORCHVISION_STD[c]
    affine = {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(3, jnp.float32)}
    return net.replace(params={**net.params, INPUT: affine}, convention="normalised")


def speckle(img: np.ndarray) -> float:
    """Mean absolute difference between ``img`` and its 3x3 median filter (pixels in [0, 1])."""
    h, w = img.shape[:2]
    padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    shifts = [padded[i : i + h, j : j + w] for i in range(3) for j in range(3)]
    return float(np.mean(np.abs(img - np.median(np.stack(shifts), axis=0))))


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    cli.add_pair_flags(ap)
    cli.gatys_flags(ap, ("net", "size", "pooling"), size=256, pooling="avg")
    ap.add_argument("--iterations", type=cli.csv_list(int), default=(15, 300))
    report.add_mapping_flags(ap)
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=64, iterations=(2, 4))
    cp = inputs.find_image(args, "content", args.content)
    sp = inputs.find_image(args, "style", args.style)

    import jax.numpy as jnp

    from jaxstyle import gatys, losses

    inputs.enable_compile_cache()
    out = outputs.Outputs(args.out, NAME, args)
    net = inputs.load_net(args, args.pooling)
    content, style = inputs.load(cp, args.size), inputs.load(sp, args.size)
    pair = f"{cp.stem}+{sp.stem}"
    tv_content = float(losses.tv_loss(jnp.asarray(content)[None])[0])
    speckle_content = speckle(content)
    mapping = report.scale_for(args, net, [(pair, content, style)], CONTENT_LAYERS, STYLE_LAYERS)
    nets = {"ours": net, "report": report_net(net)}
    weights = {
        "ours": report.map_weight(REPORT_STYLE_WEIGHT, mapping["k"], args.weight_map),
        "report": REPORT_STYLE_WEIGHT if args.weight_map == "linear" else REPORT_STYLE_WEIGHT**2,
    }

    rows, curves, sheet = [], {}, []
    for handling, init in itertools.product(("ours", "report"), ("content", "noise")):
        sheet_row = [(content, f"{handling} input, {init} init\ncontent {cp.stem}")]
        for its in args.iterations:
            cfg = cli.gatys_config(
                args,
                content_weight=1.0,
                style_weight=weights[handling],
                content_layers=CONTENT_LAYERS,
                style_layers=STYLE_LAYERS,
                init=init,
                iterations=its,
                progress_every=its,
            )
            res = gatys.stylize([content], [style], nets[handling], cfg, progress=False)
            s = res.log["summary"]
            img = res.images[0]
            tv = float(losses.tv_loss(jnp.asarray(img)[None])[0])
            noise = speckle(img) / speckle_content
            key = f"{handling}_{init}_{its}"
            rows.append(
                {
                    "setting": key,
                    "input": handling,
                    "init": init,
                    "iterations": its,
                    "style_weight": weights[handling],
                    "content_loss": s["content"],
                    "style_loss": s["style"],
                    "total_loss": s["total"],
                    "tv_ratio": tv / tv_content,
                    "speckle_ratio": noise,
                    "restarts": s["restarts"],
                    "seconds": s["optimisation_seconds"],
                }
            )
            curves[key] = analysis.curve(res.log["iterations"], "total")[1]
            out.image(f"outputs/{key}.png", img)
            sheet_row.append(
                (
                    img,
                    f"{its} its: loss {outputs.fmt(s['total'])}\n"
                    f"TV x{tv / tv_content:.2f}, speckle x{noise:.2f}",
                )
            )
        sheet.append(sheet_row)

    out.sheet(
        "sheet.png",
        sheet,
        f"report Figure 11 setting: {pair}, {args.size} px, {net.arch} {args.pooling} pooling",
    )
    out.csv("results.csv", rows)
    out.plot(
        "loss_curves.png",
        [
            {
                "title": f"{handling} input handling: total loss",
                "series": [
                    {
                        "label": r["setting"],
                        "x": list(range(1, len(curves[r["setting"]]) + 1)),
                        "y": curves[r["setting"]],
                    }  # fmt: skip
                    for r in rows
                    if r["input"] == handling
                ],
            }
            for handling in ("ours", "report")
        ],
        "Figure 11 setting: total loss per iteration (units differ between the panels)",
    )
    out.json(
        "results.json",
        {
            "settings": {
                "pair": pair,
                "size": args.size,
                "pooling": args.pooling,
                "iterations": list(args.iterations),
                "net": net.arch,
                "convention": net.convention,
                "weight_map": args.weight_map,
                "tv_content": tv_content,
                "speckle_content": speckle_content,
            },
            "mapping": mapping,
            "results": rows,
            "curves": curves,
            "env": outputs.run_env(),
        },
    )
    by = {r["setting"]: r for r in rows}
    findings = []
    for its in sorted(set(args.iterations)):
        for handling in ("ours", "report"):
            c, n = by[f"{handling}_content_{its}"], by[f"{handling}_noise_{its}"]
            findings.append(
                f"* {handling} input, {its} iterations: speckle x{c['speckle_ratio']:.2f} from "
                f"the content image, x{n['speckle_ratio']:.2f} from noise (TV x"
                f"{c['tv_ratio']:.2f} / x{n['tv_ratio']:.2f}); final loss "
                f"{outputs.fmt(c['total_loss'])} / {outputs.fmt(n['total_loss'])}."
            )
    noisiest = max(rows, key=lambda r: r["speckle_ratio"])
    findings.append(
        f"* The noisiest output is {noisiest['setting']} (speckle x"
        f"{noisiest['speckle_ratio']:.2f} the content image's). The report's final loss "
        f"({REPORT_FINAL_LOSS}) is not comparable with the `report` rows: those have the "
        "report's input handling and weight, but on our Caffe-trained VGG16, whose activations "
        "are on another scale than torchvision's VGG19 (the losses grow with its square and "
        "fourth power)."
    )
    out.summary(
        "Report Figure 11: where the noise comes from",
        [
            f"{pair} at {args.size} px, {net.arch} ({net.convention} weights) with "
            f"{args.pooling} pooling; content {CONTENT_LAYERS[0]}, style "
            f"{STYLE_LAYERS[0]}-{STYLE_LAYERS[-1]}, report style weight "
            f"{REPORT_STYLE_WEIGHT:g} (ours {outputs.fmt(weights['ours'])} with k = "
            f"{outputs.fmt(mapping['k'])}), content weight 1. Content image: TV "
            f"{outputs.fmt(tv_content)}, speckle {outputs.fmt(speckle_content)}.",
            report.MAPPING_NOTE,
            "## Results\n\n"
            + outputs.md_table(
                rows,
                [
                    "setting",
                    "style_weight",
                    "content_loss",
                    "style_loss",
                    "total_loss",
                    "tv_ratio",
                    "speckle_ratio",
                    "restarts",
                ],
            ),
            "## Findings\n\n" + "\n".join(findings),
            "## Iterations\n\n" + report.REPORT_ITERATIONS_NOTE,
        ],
    )
    print(f"wrote {out.dir}: " + ", ".join(sorted(set(out.written))))
    return {"rows": rows}


if __name__ == "__main__":
    main()
