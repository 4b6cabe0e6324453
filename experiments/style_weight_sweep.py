"""python -m experiments.style_weight_sweep [--out DIR] [--smoke]   (3 minutes on 2 CPU cores)

--smoke (one pair, 64 px, 2 iterations): about 25 s.
Both runtimes were measured (JAX 0.10.2).

The report's Figures 3-6: content weight 1, style weight 1,000 / 2,000 / 5,000 / 10,000, 15
iterations, content layer conv4_2, style layers conv1_1, conv1_2, conv2_1, conv2_2, average
pooling (the report used it "for all our results"), initialised from the content image, on four
content/style pairs (one row each) at 256 px.

The report's weights are in its own loss units; they are mapped to ours with one factor k
measured on these images (``experiments/lib/report.py`` explains how; ``--scale`` sets it), and
every output is labelled with both. The report's "iterations" are most likely torch LBFGS ``step()``
calls of up to 20 iterations each: ``--iterations 300`` is the report's Ite=15 in our units
(about 20x the default runtime). ``--pooling max``, ``--net vgg19 --weights FILE`` and
``--content/--style`` change the rest.

With ``--scale 1`` the weights are ours, unmapped: README's choice of the default style weight
(1, 10, 100 with the library's layers) is ``--scale 1 --report-weights 1,10,100 --content
tubingen --style starry_night --content-layers relu4_2 --style-layers
relu1_1,relu2_1,relu3_1,relu4_1,relu5_1 --pooling max --iterations 500 --size 512``.

Writes ``sheet.png`` (content, style, outputs per row), ``results.csv`` (final losses per run,
and how far each output moved from the previous weight's: where a trend can show at all),
``results.json`` (those plus per-iteration losses and the weight mapping), ``loss_curves.png``
and ``summary.md``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.lib import analysis, cli, inputs, outputs, report

NAME = "style_weight_sweep"


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    ap.add_argument(
        "--content",
        nargs="+",
        default=[c for c, _ in report.DEFAULT_PAIRS],
        help="content images: names in --content-dir, or paths",
    )
    ap.add_argument(
        "--style",
        nargs="+",
        default=[s for _, s in report.DEFAULT_PAIRS],
        help="one per content image, or one for all",
    )
    ap.add_argument(
        "--report-weights", type=cli.csv_list(float), default=(1000.0, 2000.0, 5000.0, 10000.0)
    )
    # The report's Figure 3-6 settings; the style weight is what the script sweeps.
    cli.gatys_flags(
        ap,
        ("net", "size", "iterations", "content_weight", "content_layers", "style_layers")
        + ("pooling", "init"),
        size=256,
        iterations=15,
        content_layers=report.REPORT_CONTENT_LAYERS,
        style_layers=report.REPORT_STYLE_LAYERS,
        pooling="avg",
    )
    report.add_mapping_flags(ap)
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=64, iterations=2, content=["tubingen"], style=["starry_night"])
    if len(args.style) not in (1, len(args.content)):
        ap.error("give one --style, or one per --content image")
    styles = args.style * len(args.content) if len(args.style) == 1 else args.style
    files = [
        (inputs.find_image(args, "content", c), inputs.find_image(args, "style", s))
        for c, s in zip(args.content, styles, strict=True)
    ]

    from jaxstyle import gatys

    inputs.enable_compile_cache()
    out = outputs.Outputs(args.out, NAME, args)
    net = inputs.load_net(args, args.pooling)
    pairs = []
    for cp, sp in files:
        content = inputs.load(cp, args.size)
        pairs.append((f"{cp.stem}+{sp.stem}", content, inputs.load(sp, args.size)))
    mapping = report.scale_for(args, net, pairs, args.content_layers, args.style_layers)
    k = mapping["k"]

    base = cli.gatys_config(args, progress_every=max(1, args.iterations))
    mapped = {w: report.map_weight(w, k, args.weight_map) for w in args.report_weights}
    rows, curves, sheet = [], {}, []
    for name, content, style in pairs:
        sheet_row = [(content, f"content\n{name.split('+')[0]}"), (style, "style")]
        prev = None
        for w_rep in args.report_weights:
            w = mapped[w_rep]
            cfg = dataclasses.replace(base, style_weight=w)
            res = gatys.stylize([content], [style], net, cfg, progress=False)
            s = res.log["summary"]
            row = {
                "pair": name,
                "report_style_weight": w_rep,
                "style_weight": w,
                "content_weight": args.content_weight,
                "iterations": s["iterations"],
                "function_evaluations": s["function_evaluations"],
                "restarts": s["restarts"],
                "content_loss": s["content"],
                "style_loss": s["style"],
                "total_loss": s["total"],
                # How much the output moved from the previous weight's (pixels in [0, 1]):
                # where a trend can be seen at all.
                "change_from_previous": (
                    None if prev is None else float(np.mean(np.abs(res.images[0] - prev)))
                ),
                "seconds": s["optimisation_seconds"],
                "compile_seconds": s["compile_seconds"],
            }
            rows.append(row)
            prev = res.images[0]
            curves[f"{name}@{w_rep:g}"] = {
                key: analysis.curve(res.log["iterations"], key)[1]
                for key in ("total", "content", "style")
            }
            out.image(f"outputs/{name}_sw{w_rep:g}.png", res.images[0])
            sheet_row.append(
                (
                    res.images[0],
                    f"report sw {w_rep:g} = ours {w:g}\n"
                    f"content {outputs.fmt(s['content'])}\nstyle {outputs.fmt(s['style'])}",
                )
            )
        sheet.append(sheet_row)

    settings = {
        "content_layers": args.content_layers,
        "style_layers": args.style_layers,
        "iterations": args.iterations,
        "size": args.size,
        "pooling": args.pooling,
        "init": args.init,
        "net": net.arch,
        "convention": net.convention,
        "weight_map": args.weight_map,
    }
    out.sheet(
        "sheet.png",
        sheet,
        f"style weight sweep: {net.arch} {args.pooling} pooling, {args.iterations} iterations, "
        f"content {','.join(args.content_layers)}, style {','.join(args.style_layers)}",
    )
    out.csv("results.csv", rows)
    out.plot(
        "loss_curves.png",
        [
            {
                "title": f"{name}: total loss",
                "series": [
                    {
                        "label": f"report {w:g} (ours {mapped[w]:g})",
                        "x": list(range(1, len(curves[f"{name}@{w:g}"]["total"]) + 1)),
                        "y": curves[f"{name}@{w:g}"]["total"],
                    }
                    for w in args.report_weights
                ],
            }
            for name, _, _ in pairs
        ],
        "Gatys L-BFGS, one curve per style weight",
    )

    # What the numbers say, computed rather than asserted.
    findings = []
    for name, _, _ in pairs:
        rs = [r for r in rows if r["pair"] == name]
        c = [r["content_loss"] for r in rs]
        s = [r["style_loss"] for r in rs]
        findings.append(
            {
                "pair": name,
                "content_loss_vs_weight": analysis.trend(c),
                "style_loss_vs_weight": analysis.trend(s),
                "content_loss_ratio_last_first": c[-1] / c[0] if c[0] > 0 else float("inf"),
                "style_loss_ratio_last_first": s[-1] / s[0] if s[0] > 0 else float("inf"),
                "largest_change_at": max(
                    rs[1:], key=lambda r: r["change_from_previous"], default=rs[0]
                )["report_style_weight"],
                "largest_change": max((r["change_from_previous"] for r in rs[1:]), default=0.0),
            }
        )
    out.json(
        "results.json",
        {
            "settings": settings,
            "mapping": mapping,
            "results": rows,
            "findings": findings,
            "curves": curves,
            "env": outputs.run_env(),
        },
    )
    agree = all(
        f["content_loss_vs_weight"] == "rises" and f["style_loss_vs_weight"] == "falls"
        for f in findings
    )
    flat = any("flat" in (f["content_loss_vs_weight"], f["style_loss_vs_weight"]) for f in findings)
    out.summary(
        "Style weight sweep (report Figures 3-6)",
        [
            f"Settings: content weight {args.content_weight:g}, content layers "
            f"{', '.join(args.content_layers)}, style layers {', '.join(args.style_layers)}, "
            f"{args.iterations} L-BFGS iterations at {args.size} px, {net.arch} "
            f"({net.convention} weights), {args.pooling} pooling, init {args.init}.",
            "## Weight mapping\n\n"
            + report.MAPPING_NOTE
            + f"\n\nMeasured k = {outputs.fmt(k)}"
            + (" (given by --scale)." if mapping["given"] else " (geometric mean over the pairs):")
            + "\n\n"
            + (
                outputs.md_table(mapping["per_pair"], ["pair", "k", "content_ours", "style_ours"])
                if mapping["per_pair"]
                else ""
            ),
            "## Results\n\n"
            + outputs.md_table(
                rows,
                [
                    "pair",
                    "report_style_weight",
                    "style_weight",
                    "content_loss",
                    "style_loss",
                    "total_loss",
                    "change_from_previous",
                    "restarts",
                    "seconds",
                ],
            ),
            "## Findings\n\n"
            + outputs.md_table(
                findings,
                [
                    "pair",
                    "content_loss_vs_weight",
                    "style_loss_vs_weight",
                    "content_loss_ratio_last_first",
                    "style_loss_ratio_last_first",
                    "largest_change_at",
                    "largest_change",
                ],
            )
            + "\n`largest_change` is the largest mean absolute change of the output (pixels in "
            "[0, 1]) from one weight of the sweep to the next, `largest_change_at` the (report) "
            "weight it was reached at.\n\nThe report: the smaller the content/style ratio, "
            "the more the output follows the style. "
            + (
                "Confirmed on every pair: a higher style weight gives a lower style loss and a "
                "higher content loss."
                if agree
                else "Not confirmed on every pair (see the table)."
                + (
                    " Where the losses are flat the weight made no difference yet: from a "
                    "content initialisation the content loss starts at 0, so the first steps "
                    "follow the style gradient alone, and L-BFGS is invariant to scaling the "
                    "objective; run more iterations."
                    if flat
                    else ""
                )
            ),
            "## Iterations\n\n" + report.REPORT_ITERATIONS_NOTE,
        ],
    )
    print(f"wrote {out.dir}: " + ", ".join(sorted(set(out.written))))
    return {"rows": rows, "mapping": mapping}


if __name__ == "__main__":
    main()
