"""python -m experiments.restarts [--out DIR] [--smoke]   (20 minutes on 2 CPU cores)

--smoke (the demo pair and one folder pair, 64 px, 3 iterations): about 30 s.
The full runtime was measured (JAX 0.10.2, 128 px, 60 iterations, 21 pairs).

Does L-BFGS need a divergence restart at ``stylize``'s defaults? Runs every content x style
pair of the image folders, and jaxstyle's demo pair, with the default settings (only the size
and the iteration count are this script's) and records each run's restarts, the iterations
they happened at, the final loss and the function evaluations. Issue 12 asked that no shared
pair needs a restart at the defaults: the first iterations after a start backtrack from the unit
step, and this is the check. Before that change (unit steps from the first iteration), 2 of
these 21 runs restarted (the demo at iteration 7, golden_gate x udnie at 58).

Writes ``results.csv``, ``results.json`` (with per-iteration losses), ``loss_curves.png``,
``sheet.png`` (each pair's output) and ``summary.md``.
"""

from __future__ import annotations

from experiments.lib import cli, inputs, outputs, paths

NAME = "restarts"


def pairs(args) -> list[tuple[str, object, object]]:
    """``(name, content, style)`` for the demo and every folder pair, at ``--size``."""
    from jaxstyle import demo
    from jaxstyle import images as imlib

    content_dir, style_dir = inputs.image_dir(args, "content"), inputs.image_dir(args, "style")
    dc, ds, _ = demo.demo_images()
    found = [(c, s) for c in paths.list_images(content_dir) for s in paths.list_images(style_dir)]
    if args.smoke:
        found = found[:1]
    out = [("demo x demo", imlib.resize_long_side(dc, args.size), ds)]
    for c, s in found:
        out.append((f"{c.stem} x {s.stem}", inputs.load(c, args.size), imlib.load_image(s)))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    cli.gatys_flags(ap, ("size", "iterations"), size=128, iterations=60)
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=64, iterations=3)
    runs = pairs(args)

    from jaxstyle import gatys

    inputs.enable_compile_cache()
    out = outputs.Outputs(args.out, NAME, args)
    net = inputs.load_net(args)
    cfg = cli.gatys_config(args, progress_every=args.iterations)
    rows, curves, sheet = [], {}, []
    for name, content, style in runs:
        messages: list[str] = []
        res = gatys.stylize([content], [style], net, cfg, progress=False, log_fn=messages.append)
        s = res.log["summary"]
        at = [m.split("iteration ")[1].split(" ")[0] for m in messages if "diverged" in m]
        rows.append(
            {
                "pair": name,
                "restarts": s["restarts"],
                "restart_iterations": " ".join(at),
                "final_loss": s["total"],
                "function_evaluations": s["function_evaluations"],
            }
        )
        curves[name] = [r["total"] for r in res.log["iterations"]]
        sheet.append([(content, name), (res.images[0], f"{s['restarts']} restarts")])
    out.csv("results.csv", rows)
    out.json("results.json", {"config": cfg, "results": rows, "curves": curves})
    series = [{"label": k, "x": list(range(1, len(v) + 1)), "y": v} for k, v in curves.items()]
    out.plot("loss_curves.png", [{"title": "total loss", "series": series}])
    out.sheet("sheet.png", sheet, f"stylize defaults, {args.size} px, {args.iterations} iterations")
    restarted = [r for r in rows if r["restarts"]]
    verdict = (
        f"{len(restarted)} of {len(rows)} runs needed a restart"
        + (": " + ", ".join(r["pair"] for r in restarted) if restarted else "")
        + f" ({sum(r['restarts'] for r in rows)} restarts in all)."
    )
    cols = ["pair", "restarts", "restart_iterations", "final_loss", "function_evaluations"]
    out.summary("Restarts at the defaults", [verdict, outputs.md_table(rows, cols)])
    print(f"wrote {out.dir}: {verdict}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
