"""python -m experiments.choose_style_weight --objective gatys|johnson   (~6 min on 2 CPU cores)

How the default style weights were chosen: the image is optimised (Gatys, L-BFGS, from the
content image) for several style weights and the results are put side by side.

* ``--objective gatys``: the defaults of ``jaxstyle stylize`` (VGG16, content relu4_2, style
  relu1_1..relu5_1), for its ``--style-weight``.
* ``--objective johnson``: exactly the training objective of ``jaxstyle train`` (content relu2_2,
  style relu1_2, relu2_2, relu3_3, relu4_3). Training a feed-forward network per candidate
  weight costs hours on a CPU; the network learns to approximate these per-image optima, so the
  weight whose optimum is "clearly stylised yet recognisable" is the one to train with.

Writes a labelled contact sheet and the final loss terms as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from experiments.lib import cli, inputs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.choose_style_weight", description=__doc__.split("\n\n")[1]
    )
    cli.add_pair_flags(ap)
    cli.add_image_dir_flags(ap)
    cli.gatys_flags(ap, ("size", "iterations"), size=256, iterations=100)
    ap.add_argument("--weights", default="1,10,100,1000", help="style weights to compare")
    ap.add_argument("--objective", choices=("gatys", "johnson"), default="gatys")
    ap.add_argument("--out", default="out/choose_style_weight")
    args = ap.parse_args(argv)
    content_path = inputs.find_image(args, "content", args.content)
    style_path = inputs.find_image(args, "style", args.style)

    from jaxstyle import gatys
    from jaxstyle import images as imlib
    from jaxstyle.configs import JOHNSON_STYLE_LAYERS, GatysConfig
    from jaxstyle.weights import load_vgg

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    content = imlib.load_image(content_path)
    style = imlib.load_image(style_path)
    net = load_vgg("vgg16")
    base = GatysConfig(size=args.size, iterations=args.iterations, progress_every=args.iterations)
    if args.objective == "johnson":
        base = dataclasses.replace(
            base, content_layers=("relu2_2",), style_layers=JOHNSON_STYLE_LAYERS
        )
    tiles, rows = [], []
    for sw in [float(v) for v in args.weights.split(",")]:
        res = gatys.stylize([content], [style], net, dataclasses.replace(base, style_weight=sw))
        s = res.log["summary"]
        rows.append({"style_weight": sw, **{k: s[k] for k in ("content", "style", "total")}})
        tile = Image.fromarray((res.images[0] * 255).round().astype(np.uint8))
        ImageDraw.Draw(tile).text((4, 4), f"style weight {sw:g}", fill=(255, 255, 255))
        tiles.append(tile)
    sheet = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width
    sheet.save(out / "sheet.png")
    (out / "losses.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(
            f"style weight {r['style_weight']:>7g}: content {r['content']:.4g}, "
            f"style {r['style']:.4g}, total {r['total']:.4g}"
        )
    print(f"wrote {out / 'sheet.png'}")


if __name__ == "__main__":
    main()
