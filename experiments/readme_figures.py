"""python -m experiments.readme_figures [--results out/results] [--to docs/results]   (seconds)

Copies what README's "Results" section shows from the output folders of the experiment scripts
(run each with ``--out out/results/<script>`` first) into ``docs/results/<script>/``:

* ``outputs.png``: the script's output images (``outputs/*.png``) in a grid, one row per
  group, labelled by file name. The scripts' own ``sheet.png`` also shows the input photos and
  paintings, which come from ``../shared/images`` and which the project does not commit, so it
  stays in the results folder;
* the plots named below;
* ``summary.md`` and the CSV files, as they are.

Images are shrunk to at most ``--width`` pixels wide and reduced to a 256-colour palette so the
repository stays small.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.lib.figures import contact_sheet

#: Per script: the plots README shows, and how an output file name splits into (row, label).
FIGURES = {
    "style_weight_sweep": (("loss_curves.png",), r"(?P<row>.+)_(?P<label>sw\d+)"),
    "layer_choice": (("loss_curves.png",), r"(?P<row>fig\d+)(?P<label>[ab])"),
    "pooling_convergence": (("loss_curves.png",), r"(?P<row>max|avg)_(?P<label>seed\d+)"),
    "figure11_noise": (
        ("loss_curves.png",),
        r"(?P<row>(?:ours|report)_(?:content|noise))_(?P<label>\d+)",
    ),
    "johnson_checkpoints": (("loss_curves.png",), r"(?P<row>sw\d+_.+)_(?P<label>step\d+)"),
    "compare_methods": ((), r"(?P<row>.+)_(?P<label>gatys|johnson)"),
    "bench_vs_torch": ((), None),
    "restarts": (("loss_curves.png",), None),
    "any_style": ((), r"(?P<row>multi|mix|adain|alpha)_(?P<label>.+)"),
    "schedule_search": (("loss_curves.png",), None),
    "schedule_search_golden_gate": (("loss_curves.png",), None),
    "schedule_search_amber": (("loss_curves.png",), None),
}
#: Result folders that hold another run of a script, under another name (README's regenerate
#: block runs it with that ``--out``).
SCRIPT_OF = {
    "schedule_search_golden_gate": "schedule_search",
    "schedule_search_amber": "schedule_search",
}


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def outputs_sheet(folder: Path, pattern: str, title: str) -> Image.Image | None:
    """The output images of one results folder as a labelled grid, or None if it has none."""
    rows: dict[str, list[tuple[str, Path]]] = {}
    for f in sorted((folder / "outputs").glob("*.png"), key=lambda f: _natural(f.stem)):
        m = re.fullmatch(pattern, f.stem)
        row, label = (m["row"], m["label"]) if m else (f.stem, f.stem)
        rows.setdefault(row, []).append((label, f))
    if not rows:
        return None
    grid = []
    for row, cells in rows.items():
        grid.append([])
        for label, f in cells:
            with Image.open(f) as im:
                pixels = np.asarray(im.convert("RGB"), np.float32) / 255.0
            grid[-1].append((pixels, f"{row} {label}"))
    return contact_sheet(grid, title)


def shrink(src: Path | Image.Image, dst: Path, width: int, colors: int) -> None:
    with src if isinstance(src, Image.Image) else Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        im = im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, optimize=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.readme_figures", description=__doc__.split("\n\n")[1]
    )
    ap.add_argument("--results", default="out/results", help="folder of the scripts' outputs")
    ap.add_argument("--to", default="docs/results", help="where the copies go")
    ap.add_argument("--width", type=int, default=760)
    ap.add_argument("--colors", type=int, default=256)
    args = ap.parse_args(argv)
    results, to = Path(args.results), Path(args.to)
    for script, (names, pattern) in FIGURES.items():
        folder = results / script
        if not (folder / "summary.md").is_file():
            run = SCRIPT_OF.get(script, script)
            print(f"skipped {folder} (no summary.md; run python -m experiments.{run} first)")
            continue
        (to / script).mkdir(parents=True, exist_ok=True)
        for name in names:
            shrink(folder / name, to / script / name, args.width, args.colors)
        if pattern is not None:
            sheet = outputs_sheet(folder, pattern, f"{script}: output images")
            if sheet is not None:
                shrink(sheet, to / script / "outputs.png", args.width, args.colors)
        for src in [folder / "summary.md", *sorted(folder.glob("*.csv"))]:
            shutil.copyfile(src, to / script / src.name)
        size = sum(f.stat().st_size for f in (to / script).iterdir())
        print(f"wrote {to / script} ({size // 1024} KiB)")


if __name__ == "__main__":
    main()
