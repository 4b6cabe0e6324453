"""python -m experiments.bench_gatys_tiling [--size 3000] [--tile 768] [--iterations 8]

Peak memory and time of tiled Gatys (``jaxstyle stylize --tile``) against the untiled run,
each a ``jaxstyle stylize`` in its own process: peak RSS is the child's ``ru_maxrss`` (from
``os.wait4``), time its wall clock (loading, compiling and saving included), the loss the
whole-image one from its ``--log``. Three runs, all coarse to fine with the same iterations
per scale: untiled and tiled (``--compare-tile``) at ``--compare-size``, where the untiled run
fits, and tiled (``--tile``) at ``--size``, with the scales ``--coarse`` then ``--size``.
Also writes each output and a 1:1 crop of the large one across a tile corner (``crop.png``).

At the defaults (3000 px in tiles of 768, 768 px untiled and in tiles of 384, 8 iterations a
scale: one sweep of the tiles) about 40 minutes on 2 CPU cores: the 3000 px run alone (the
same ``jaxstyle stylize`` command) took 29.3 min and peaked at 5.33 GiB, with test runs
sharing the cores for part of it; in tiles of 1024 it passed 8.56 GiB
(:data:`jaxstyle.gatys.tiles.WINDOW_BYTES_PER_PIXEL`). ``--smoke`` (tiny sizes, 2 iterations)
3 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.lib import cli, inputs, outputs

NAME = "bench_gatys_tiling"


def run_stylize(content, style, out: Path, size: int, scales, iterations: int, tile: int, extra):
    """One ``jaxstyle stylize`` in a child process; its wall time, peak RSS and log summary."""
    log = out.with_suffix(".json")
    cmd = [
        sys.executable, "-m", "jaxstyle.cli", "stylize", str(content), str(style), "-o", str(out),
        "--size", str(size), "--scales", ",".join(map(str, scales)),
        "--iterations", str(iterations), "--tile", str(tile), "--log", str(log), *extra,
    ]  # fmt: skip
    print(" ".join(cmd[2:]), file=sys.stderr)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        cli.fail(f"stylize exited with {child.returncode}: {' '.join(cmd)}")
    summary = json.loads(log.read_text())["summary"]
    tiled = any(r.get("tiles") for r in json.loads(log.read_text())["iterations"])
    return {
        "size": size,
        "scales": ",".join(map(str, scales)),
        "tile": tile if tiled else "-",
        "wall_s": wall,
        "optimise_s": summary["optimisation_seconds"],
        "compile_s": summary["compile_seconds"],
        "peak_rss_gib": usage.ru_maxrss * 1024 / 2**30,  # ru_maxrss is in KiB on Linux
        "loss": summary["total"],
    }


def main(argv=None) -> None:
    ap = cli.parser(__doc__, NAME)
    cli.add_pair_flags(ap)
    ap.add_argument("--size", type=int, default=3000, help="the tiled run's long side")
    ap.add_argument("--tile", type=int, default=768, help="its tile")
    ap.add_argument("--coarse", default="512,1024", help="its coarser scales, comma-separated")
    ap.add_argument("--compare-size", type=int, default=768, help="where untiled fits")
    ap.add_argument("--compare-tile", type=int, default=384, help="the tile at --compare-size")
    ap.add_argument("--iterations", type=int, default=8, help="iterations per scale")
    ap.add_argument("--style-scale", default="1.0", help="stylize --style-scale")
    args = cli.parse(ap, argv)
    if args.smoke:
        args.size, args.tile, args.coarse = 160, 64, "64"
        args.compare_size, args.compare_tile, args.iterations = 96, 48, 2
    out = outputs.Outputs(args.out, NAME, args)
    content = inputs.find_image(args, "content", args.content)
    style = inputs.find_image(args, "style", args.style)
    extra = ["--style-scale", args.style_scale, "-q"]
    if args.weights:
        extra += ["--weights", args.weights]
    coarse = [int(s) for s in args.coarse.split(",") if s]
    small = (args.compare_size // 2, args.compare_size)
    rows = [
        run_stylize(content, style, out.path("untiled.png"), args.compare_size, small,
                    args.iterations, 0, extra),
        run_stylize(content, style, out.path("tiled_compare.png"), args.compare_size, small,
                    args.iterations, args.compare_tile, extra),
        run_stylize(content, style, out.path("tiled_large.png"), args.size, [*coarse, args.size],
                    args.iterations, args.tile, extra),
    ]  # fmt: skip
    from jaxstyle import images as imlib

    large = imlib.load_image(out.path("tiled_large.png"))
    c = min(args.tile, *large.shape[:2]) - 1  # a corner of the first sweep's tile grid
    half = min(192, c, large.shape[0] - c, large.shape[1] - c)
    out.image("crop.png", large[c - half : c + half, c - half : c + half])
    out.json("results.json", rows)
    out.csv("results.csv", rows)
    cols = ["size", "scales", "tile", "wall_s", "optimise_s", "compile_s", "peak_rss_gib", "loss"]
    ratio = rows[1]["peak_rss_gib"] / rows[0]["peak_rss_gib"]
    note = (
        f"At {args.compare_size} px, tiles of {args.compare_tile}: peak RSS {ratio:.2f}x the "
        f"untiled run's, loss {rows[1]['loss'] / rows[0]['loss']:.3f}x, wall time "
        f"{rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x. At {args.size} px with tiles of "
        f"{args.tile}: {rows[2]['peak_rss_gib']:.2f} GiB peak, {rows[2]['wall_s']:.0f} s."
    )
    print(note)
    print(outputs.md_table(rows, cols))
    out.summary("Tiled Gatys: peak memory and time", [note, outputs.md_table(rows, cols)])


if __name__ == "__main__":
    main()
