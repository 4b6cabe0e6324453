"""python -m experiments.bench_tiling [--size 6000x4000] [--compare 1536x1024] [--tile 512]
[--max-memory SIZE]   (6000x4000: not timed yet; the reduced run in the README, 2 shared cores:
about 8 minutes)

Peak memory and time of ``jaxstyle apply`` through the full Johnson network (random weights,
seed 0: the cost does not depend on them), each run in a fresh process (``jaxstyle.cli.main``):

* ``--size``: the print-size photo with the defaults (tiled because it exceeds the default
  ``--max-memory``, or the given one); its peak resident memory is the child's ``ru_maxrss``.
* ``--compare``: a size that fits whole: untiled (``--tile 0``) against ``--tile`` tiles, the
  same image; time, peak memory, and the outputs' max / mean difference in 1/255 steps.

The photo is scikit-image's bundled ``astronaut`` (512x512) upscaled (bicubic) to each size
and written as PNG (no image from outside). Prints one JSON line per run and writes
``summary.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def child(argv: list[str]) -> None:
    """Runs ``jaxstyle`` in this process and prints its wall time and peak RSS as JSON."""
    from jaxstyle import cli

    t = time.perf_counter()
    rc = cli.main(argv)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"rc": rc, "seconds": round(wall, 2), "peak_rss_gib": peak / 2**30}))


def run(argv: list[str]) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "experiments.bench_tiling", "--child", "--", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode or not lines:
        raise SystemExit(f"child failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(lines[-1])


def photo(path: Path, w: int, h: int) -> Path:
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).resize((w, h), Image.Resampling.BICUBIC).save(path)
    return path


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main(args: argparse.Namespace) -> dict:
    import jax

    from jaxstyle import models
    from jaxstyle.nets import transformer_net as tn

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = out / "full-random.safetensors"
    models.save_model(model, tn.init_params(tn.FULL, jax.random.PRNGKey(0)), tn.FULL, {})
    rows = {}
    if args.compare:
        cw, ch = parse_size(args.compare)
        small = photo(out / f"photo-{cw}x{ch}.png", cw, ch)
        for name, flags in (("whole", ["--tile", "0", "--max-memory", "100GiB"]),
                            ("tiled", ["--tile", str(args.tile)])):  # fmt: skip
            rows[f"{args.compare} {name}"] = run(
                ["apply", str(model), str(small), "-o", str(out / f"{name}.png"), "-q", *flags]
            )
            print(json.dumps({args.compare: name, **rows[f"{args.compare} {name}"]}), flush=True)
        from PIL import Image

        a = np.asarray(Image.open(out / "whole.png"), np.int16)
        b = np.asarray(Image.open(out / "tiled.png"), np.int16)
        diff = {
            "max_diff_255": int(np.abs(a - b).max()),
            "mean_diff_255": float(np.abs(a - b).mean()),
        }
        rows[f"{args.compare} difference"] = diff
        print(json.dumps(diff), flush=True)
    w, h = parse_size(args.size)
    big = photo(out / f"photo-{w}x{h}.png", w, h)
    limit = ["--max-memory", args.max_memory] if args.max_memory else []
    rows[f"{args.size} default"] = run(
        ["apply", str(model), str(big), "-o", str(out / "print.png"), "-q", *limit]
    )
    print(json.dumps({args.size: "default", **rows[f"{args.size} default"]}), flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--") + 1 :])
        sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--size", default="6000x4000", help="the print-size photo, WxH")
    p.add_argument(
        "--compare", default="1536x1024", help="a size that fits whole, WxH ('': no comparison)"
    )
    p.add_argument("--tile", type=int, default=512, help="tile of the compared tiled run")
    p.add_argument("--max-memory", help="apply's --max-memory for the --size run")
    p.add_argument("--out", default="out/bench_tiling", help="output folder")
    main(p.parse_args())
