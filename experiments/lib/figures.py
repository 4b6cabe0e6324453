"""Pictures of a run: labelled contact sheets of images, and loss-curve plots."""

from __future__ import annotations

import math

import numpy as np


def _to_pil(image: np.ndarray):
    from PIL import Image

    u8 = (np.clip(np.asarray(image, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(u8, mode="RGB")


def contact_sheet(rows, title: str = "", height: int = 160):
    """A grid of labelled tiles.

    Args:
        rows: a list of rows, each a list of ``(image HWC [0,1], label)``; ``\\n`` in a label
            starts a new line.
        title: a line of text above the grid.
        height: tile height in pixels (images are scaled to it, keeping their aspect).
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line_h, pad = 12, 6
    n_lines = max((lab.count("\n") + 1 for row in rows for _, lab in row), default=1)
    label_h = n_lines * line_h + pad
    tiles = []
    for row in rows:
        out = []
        for image, label in row:
            pil = _to_pil(image)
            w = max(1, round(pil.width * height / pil.height))
            pil = pil.resize((w, height), Image.Resampling.LANCZOS)
            draw_w = max(w, 6 * max(len(s) for s in label.split("\n")) + pad)
            tile = Image.new("RGB", (draw_w, height + label_h), "white")
            tile.paste(pil, ((draw_w - w) // 2, 0))
            d = ImageDraw.Draw(tile)
            for j, text in enumerate(label.split("\n")):
                d.text((2, height + 2 + j * line_h), text, fill="black", font=font)
            out.append(tile)
        tiles.append(out)
    width = max(sum(t.width for t in row) + pad * (len(row) + 1) for row in tiles)
    title_h = 20 if title else 0
    total_h = title_h + sum(max(t.height for t in row) + pad for row in tiles) + pad
    sheet = Image.new("RGB", (width, total_h), "white")
    d = ImageDraw.Draw(sheet)
    if title:
        d.text((pad, 4), title, fill="black", font=font)
    y = title_h + pad
    for row in tiles:
        x = pad
        for t in row:
            sheet.paste(t, (x, y))
            x += t.width + pad
        y += max(t.height for t in row) + pad
    return sheet


def loss_figure(panels, title: str = ""):
    """A row of loss-curve panels.

    Args:
        panels: ``[{"title", "xlabel", "ylabel", "logy", "series": [{"label", "x", "y"}]}]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for s in panel["series"]:
            kw = {k: v for k, v in s.items() if k not in ("label", "x", "y")}
            ax.plot(s["x"], s["y"], label=s["label"], **kw)
        if panel.get("logy", True):
            ax.set_yscale("log")
        ax.set_title(panel.get("title", ""), fontsize=9)
        ax.set_xlabel(panel.get("xlabel", "iteration"))
        ax.set_ylabel(panel.get("ylabel", "loss"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
