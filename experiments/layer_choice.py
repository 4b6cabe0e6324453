"""python -m experiments.layer_choice [--out DIR] [--smoke]   (1.5 minutes on 2 CPU cores)

--smoke (Figure 9 only, 64 px, 2 iterations): about 20 s.
Both runtimes were measured (JAX 0.10.2).

The report's Figures 7-10: which VGG layers carry content and style. Each figure compares two
settings (content weight 1, 15 iterations, average pooling, content initialisation):

* Figure 7 (style weight 1,000): style conv1_1-conv2_2 vs conv1_1, conv2_1, ..., conv5_1;
  content conv4_2 in both.
* Figure 8 (2,000): style conv1_1-conv3_2 with content conv2_1 vs style conv1_1 ... conv5_1
  with content conv4_1.
* Figure 9 (5,000): the same with content conv2_2 vs conv4_1. Its first setting is also the
  report's Figure 11, whose output had "a lot of random noise" at a low loss; the noise is
  measured here as the output's total variation relative to the content image's.
* Figure 10 (1,000): style conv1_1-conv2_2 vs conv1_1 ... conv5_1, content conv2_1 in both.

Every setting maps the report's style weight to ours with its own factor k (the balance of the
two terms depends on the layers; see ``experiments/lib/report.py``). ``--figures 7,8`` picks
figures; ``--iterations 300`` is the report's Ite=15 counted as torch LBFGS steps of 20
iterations; ``--content/--style`` pick the images (the report does not name them).

Writes ``sheet.png`` (one row per figure: content, style, the two outputs), ``results.csv``,
``results.json`` (with per-iteration losses), ``loss_curves.png`` and ``summary.md``.
"""

from __future__ import annotations

from experiments.lib import analysis, cli, inputs, outputs, report

NAME = "layer_choice"
S4 = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
S6 = (*S4, "conv3_1", "conv3_2")
S5 = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
#: figure -> (report style weight, [(content layers, style layers)] for its two outputs).
FIGURES = {
    7: (1000.0, [(("conv4_2",), S4), (("conv4_2",), S5)]),
    8: (2000.0, [(("conv2_1",), S6), (("conv4_1",), S5)]),
    9: (5000.0, [(("conv2_2",), S6), (("conv4_1",), S5)]),
    10: (1000.0, [(("conv2_1",), S4), (("conv2_1",), S5)]),
}


def short(layers) -> str:
    """``conv1_1,conv1_2,conv2_1,conv2_2`` -> ``conv1_1-conv2_2 (4)``."""
    return layers[0] if len(layers) == 1 else f"{layers[0]}..{layers[-1]} ({len(layers)})"


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    cli.add_pair_flags(ap)
    ap.add_argument("--figures", type=cli.csv_list(int), default=tuple(FIGURES))
    # The report's settings; the layers and the style weight are each figure's.
    cli.gatys_flags(
        ap, ("net", "size", "iterations", "pooling", "init"), size=256, iterations=15, pooling="avg"
    )
    report.add_mapping_flags(ap)
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=64, iterations=2, figures=(9,))
    bad = [f for f in args.figures if f not in FIGURES]
    if bad:
        ap.error(f"unknown figures {bad}; choose from {sorted(FIGURES)}")
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

    rows, curves, sheet = [], {}, []
    for fig in args.figures:
        w_rep, settings = FIGURES[fig]
        sheet_row = [(content, f"Figure {fig}\ncontent {cp.stem}"), (style, f"style {sp.stem}")]
        for which, (c_layers, s_layers) in zip("ab", settings, strict=True):
            mapping = report.scale_for(args, net, [(pair, content, style)], c_layers, s_layers)
            w = report.map_weight(w_rep, mapping["k"], args.weight_map)
            cfg = cli.gatys_config(
                args,
                content_weight=1.0,
                style_weight=w,
                content_layers=c_layers,
                style_layers=s_layers,
                progress_every=max(1, args.iterations),
            )
            res = gatys.stylize([content], [style], net, cfg, progress=False)
            s = res.log["summary"]
            tv_out = float(losses.tv_loss(jnp.asarray(res.images[0])[None])[0])
            key = f"fig{fig}{which}"
            rows.append(
                {
                    "setting": key,
                    "figure": fig,
                    "content_layers": ",".join(c_layers),
                    "style_layers": ",".join(s_layers),
                    "report_style_weight": w_rep,
                    "k": mapping["k"],
                    "style_weight": w,
                    "iterations": s["iterations"],
                    "restarts": s["restarts"],
                    "content_loss": s["content"],
                    "style_loss": s["style"],
                    "total_loss": s["total"],
                    "tv_output": tv_out,
                    "tv_ratio": tv_out / tv_content,
                    "seconds": s["optimisation_seconds"],
                    "compile_seconds": s["compile_seconds"],
                }
            )
            log = res.log["iterations"]
            curves[key] = {k: analysis.curve(log, k)[1] for k in ("total", "content", "style")}
            out.image(f"outputs/{key}.png", res.images[0])
            sheet_row.append(
                (
                    res.images[0],
                    f"{key}: content {short(c_layers)}\nstyle {short(s_layers)}\n"
                    f"sw {w_rep:g} = ours {w:g}; TV x{tv_out / tv_content:.2f}",
                )
            )
        sheet.append(sheet_row)

    out.sheet(
        "sheet.png",
        sheet,
        f"layer choice: {net.arch} {args.pooling} pooling, {args.iterations} iterations, "
        f"{args.size} px",
    )
    out.csv("results.csv", rows)
    out.plot(
        "loss_curves.png",
        [
            {
                "title": f"Figure {fig}: total loss / initial total",
                "ylabel": "relative loss",
                "series": [
                    {
                        "label": f"{r['setting']}: content {r['content_layers']}",
                        "x": list(range(1, len(curves[r["setting"]]["total"]) + 1)),
                        "y": [
                            v / curves[r["setting"]]["total"][0]
                            for v in curves[r["setting"]]["total"]
                        ],
                    }
                    for r in rows
                    if r["figure"] == fig
                ],
            }
            for fig in args.figures
        ],
        "Gatys L-BFGS per layer setting (each normalised by its first loss: units differ)",
    )
    out.json(
        "results.json",
        {
            "settings": {
                "pair": pair,
                "size": args.size,
                "iterations": args.iterations,
                "pooling": args.pooling,
                "init": args.init,
                "net": net.arch,
                "convention": net.convention,
                "weight_map": args.weight_map,
                "tv_content": tv_content,
            },
            "figures": {str(f): {"report_style_weight": FIGURES[f][0]} for f in args.figures},
            "results": rows,
            "curves": curves,
            "env": outputs.run_env(),
        },
    )
    noisiest = max(rows, key=lambda r: r["tv_ratio"])
    out.summary(
        "Layer choice (report Figures 7-10)",
        [
            f"Images {pair} at {args.size} px; {args.iterations} L-BFGS iterations, "
            f"{args.pooling} pooling, init {args.init}, content weight 1, {net.arch} "
            f"({net.convention} weights). Content total variation (TV) {outputs.fmt(tv_content)}.",
            report.MAPPING_NOTE
            + " Here k is measured per setting, because the style/content balance depends on "
            "the layers.",
            "## Results\n\n"
            + outputs.md_table(
                rows,
                [
                    "setting",
                    "content_layers",
                    "style_layers",
                    "report_style_weight",
                    "k",
                    "style_weight",
                    "content_loss",
                    "style_loss",
                    "tv_ratio",
                    "restarts",
                    "seconds",
                ],
            )
            + "\nLosses of different settings are in different units (other layers) and are not "
            "comparable across rows; `tv_ratio` (output TV / content TV) is, and measures "
            "high-frequency noise.",
            f"## Noise (report Figure 11)\n\nThe noisiest output is {noisiest['setting']} "
            f"(content {noisiest['content_layers']}, style {noisiest['style_layers']}) with "
            f"{outputs.fmt(noisiest['tv_ratio'])} times the content image's total variation."
            + (
                " This is the report's Figure 11 setting, which it found noisy."
                if noisiest["setting"] == "fig9a"
                else ""
            ),
            "## Iterations\n\n" + report.REPORT_ITERATIONS_NOTE,
        ],
    )
    print(f"wrote {out.dir}: " + ", ".join(sorted(set(out.written))))
    return {"rows": rows}


if __name__ == "__main__":
    main()
