"""python -m experiments.tiles_and_regions [--size 256] [--tile 128]   (8 minutes, 2 CPU cores)

README's two figures for tiled Gatys and style masks, small enough to commit (written to
``docs/results/tiles_and_regions/`` unless ``--out`` says otherwise):

* ``tiles.png``: tubingen + starry night at ``--size`` (coarse to fine from half of it), run
  untiled and tiled (``--tile``, a ``--tile-halo`` of 32 px: the default 64 would make each
  window of this small image mostly halo; 10 iterations a tile), side by side,
  then the tiled result again with the last sweep's tile edges drawn in red: the edges cannot
  be found in the image itself. ``tiles.json``: both runs' whole-image losses and the mean
  absolute neighbour difference across those edges over the mean elsewhere (1.0: no seam).
* ``regions.png``: tubingen with starry night on its left half and the scream on its right
  (``--style-masks``: two masks with a soft 32 px boundary), the left mask, and each style
  alone for comparison.
"""

from __future__ import annotations

import numpy as np

from experiments.lib import cli, figures, inputs, outputs

NAME = "tiles_and_regions"


def edge_ratio(image: np.ndarray, cols, rows) -> float:
    """Mean absolute neighbour difference across the given edges over the mean of all."""
    dx = np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))
    dy = np.abs(np.diff(image, axis=0)).mean(axis=(1, 2))
    across = np.concatenate([dx[[c - 1 for c in cols]], dy[[r - 1 for r in rows]]])
    return float(across.mean() / np.concatenate([dx, dy]).mean())


def sheet(out: outputs.Outputs, rel: str, rows, height: int) -> None:
    """A labelled contact sheet in a 256-colour palette (small enough to commit)."""
    from jaxstyle.fileio import atomic_path

    img = figures.contact_sheet(rows, height=height).quantize(256)
    with atomic_path(out.path(rel)) as tmp:
        img.save(tmp, format="PNG")
    out.written.append(rel)


def main(argv=None) -> None:
    from jaxstyle import gatys
    from jaxstyle.configs import GatysConfig
    from jaxstyle.gatys import tiles

    ap = cli.parser(__doc__, NAME)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--tile-halo", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=30, help="per scale")
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=96, tile=48, iterations=2)
    if args.out == ap.get_default("out"):
        args.out = f"docs/results/{NAME}"
    out = outputs.Outputs(args.out, NAME, args)
    net = inputs.load_net(args)
    inputs.enable_compile_cache()
    content = inputs.load(inputs.find_image(args, "content", "tubingen"), args.size)
    starry = inputs.load(inputs.find_image(args, "style", "starry_night"), args.size)
    scream = inputs.load(inputs.find_image(args, "style", "the_scream"), args.size)
    base = dict(size=args.size, scales=(args.size // 2, args.size), iterations=args.iterations)

    # Tiles.
    whole = gatys.stylize([content], [starry], net, GatysConfig(**base), progress=True)
    tcfg = GatysConfig(**base, tile=args.tile, tile_halo=args.tile_halo)
    tiled = gatys.stylize([content], [starry], net, tcfg, progress=True)
    h, w = content.shape[:2]
    p = tiles.plan(tcfg, (h, w))
    sweeps = len(tiles.sweep_lengths(tcfg, 0, []))
    wins = tiles.windows((h, w), p, sweeps - 1)
    cols = sorted({win.core[2] for win in wins} - {0})
    rows = sorted({win.core[0] for win in wins} - {0})
    marked = tiled.images[0].copy()
    marked[:, cols] = marked[rows, :] = (1.0, 0.0, 0.0)
    numbers = {
        "untiled_loss": whole.log["summary"]["total"],
        "tiled_loss": tiled.log["summary"]["total"],
        "edge_ratio_tiled": edge_ratio(tiled.images[0], cols, rows),
        "edge_ratio_untiled": edge_ratio(whole.images[0], cols, rows),
        "tile": args.tile,
        "edges": {"x": cols, "y": rows},
    }
    out.json("tiles.json", numbers)
    sheet(out, "tiles.png", [[(whole.images[0], "untiled"),
          (tiled.images[0], f"tiles of {args.tile} px"), (marked, "the last sweep's tile edges")]],
          h)  # fmt: skip

    # Regions.
    ramp = np.clip((np.arange(w) - (w / 2 - 16)) / 32, 0.0, 1.0)
    left = np.tile(1.0 - ramp, (h, 1))
    masks = np.stack([left, 1.0 - left], axis=-1).astype(np.float32)
    rcfg = GatysConfig(**base)  # the masks go in as the CLI's --style-masks passes them
    regions = gatys.stylize(
        [content], [starry, scream], net, rcfg, progress=True, aux=[{"style_masks": masks}]
    )
    alone = [gatys.stylize([content], [s], net, GatysConfig(**base)).images[0] for s in (scream,)]
    sheet(out, "regions.png", [[(regions.images[0], "left: starry night, right: the scream"),
          (np.repeat(left[..., None], 3, -1), "left mask (right = 1 - left)"),
          (whole.images[0], "starry night alone"), (alone[0], "the scream alone")]],
          h * 2 // 3)  # fmt: skip
    out.summary(
        "Tiled Gatys and style masks: README's figures",
        [f"Tiled vs untiled: {numbers}"],
    )


if __name__ == "__main__":
    main()
