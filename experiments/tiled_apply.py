"""python -m experiments.tiled_apply --model adain.safetensors [--size 768] [--tile 256]

README's figure for tiled ``apply`` and ``--mask`` (written to ``docs/results/tiled_apply/``
unless ``--out`` says otherwise): tubingen through a trained AdaIN model (starry night) or a
Johnson / multi-style one (its first style), whole and in ``--tile`` px tiles, the difference
between the two magnified 50x, and a mask that keeps the right half of the photo with a soft
64 px boundary. ``tiled_apply.json``: the largest and mean absolute difference (in 1/255).

A trained model is needed (random weights show nothing): ``python -m experiments.any_style``
trains an AdaIN decoder, ``jaxstyle train`` a Johnson network. About a minute at the defaults.
"""

from __future__ import annotations

import numpy as np

from experiments.lib import cli, figures, inputs, outputs

NAME = "tiled_apply"


def main(argv=None) -> None:
    from jaxstyle import api

    ap = cli.parser(__doc__, NAME)
    ap.add_argument("--model", required=True, help="a trained model file or workdir")
    ap.add_argument("--size", type=int, default=768, help="the photo's long side")
    ap.add_argument("--tile", type=int, default=256)
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=192, tile=160)
    if args.out == ap.get_default("out"):
        args.out = f"docs/results/{NAME}"
    out = outputs.Outputs(args.out, NAME, args)
    try:
        model = api.load_model(args.model)
    except (OSError, ValueError) as e:
        cli.fail(f"--model {args.model}: {e}")
    content = inputs.load(inputs.find_image(args, "content", "tubingen"), args.size)
    style = inputs.load(inputs.find_image(args, "style", "starry_night"), 512)
    kw = {"styles": [style]} if model.kind == "adain" else {}
    if model.kind == "multistyle":
        kw["style_index"] = 0
    whole = model(content, tile=0, **kw)
    tiled = model(content, tile=args.tile, **kw)
    h, w = content.shape[:2]
    ramp = np.clip((np.arange(w) - (w / 2 - 32)) / 64, 0, 1).astype(np.float32)
    mask = np.broadcast_to(1 - ramp[None, :], (h, w)).copy()  # white (stylised) on the left
    masked = model(content, tile=0, mask=mask, **kw)
    diff = np.abs(tiled - whole)
    numbers: dict = {
        "max_abs_diff_255": float(diff.max() * 255),
        "mean_abs_diff_255": float(diff.mean() * 255),
        "size": [h, w],
        "tile": args.tile,
        "kind": model.kind,
    }
    worst = numbers["max_abs_diff_255"]
    rows = [
        [
            (whole, "whole image"),
            (tiled, f"tiles of {args.tile} px"),
            (np.clip(diff * 50, 0, 1), f"|difference| x 50\nmax {worst:.2f}/255"),
            (masked, "--mask: left stylised"),
        ]
    ]  # fmt: skip
    img = figures.contact_sheet(rows, height=192).quantize(256)
    from jaxstyle.fileio import atomic_path

    with atomic_path(out.path("apply.png")) as tmp:
        img.save(tmp, format="PNG")
    out.written.append("apply.png")
    out.json("tiled_apply.json", numbers)
    print(numbers)
    out.summary("Tiled apply and a mask", [str(numbers)])


if __name__ == "__main__":
    main()
