"""python experiments/johnson_style_proxy.py [--size 256] [--iterations 100]   (~6 min, 2 cores)

How the default style weight of `jaxstyle train` was chosen. Training a feed-forward network per
candidate weight costs hours on a CPU; instead this optimises the image directly (Gatys) under
exactly the training objective: VGG16, content at relu2_2, style at relu1_2, relu2_2, relu3_3,
relu4_3, the same loss definitions, for several style weights. The network learns to
approximate these optima, so the weight whose optimum is "clearly stylised yet recognisable" is
the one to train with. Writes a labelled contact sheet and the final loss terms as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--content", default=str(IMAGES / "content" / "tubingen.jpg"))
    ap.add_argument("--style", default=str(IMAGES / "style" / "starry_night.jpg"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--weights", default="1,10,100,1000", help="style weights to compare")
    ap.add_argument("--out", default="out/johnson_style_proxy")
    args = ap.parse_args(argv)

    from jaxstyle import gatys
    from jaxstyle import images as imlib
    from jaxstyle.configs import JOHNSON_STYLE_LAYERS, GatysConfig
    from jaxstyle.vgg import load_vgg

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    content = imlib.load_image(args.content)
    style = imlib.load_image(args.style)
    net = load_vgg("vgg16")
    base = GatysConfig(
        size=args.size,
        iterations=args.iterations,
        content_layers=("relu2_2",),
        style_layers=JOHNSON_STYLE_LAYERS,
        progress_every=args.iterations,
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
