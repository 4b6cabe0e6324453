"""Images for ``jaxstyle demo``: nothing to download, nothing committed.

The content is scikit-image's ``chelsea`` photo (a cat) when scikit-image is installed, otherwise
a landscape drawn here. The style is always drawn here: swirling brush strokes in a
blue-and-yellow palette, loosely after a starry night.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PALETTE = [
    (16, 38, 92),
    (33, 72, 148),
    (64, 118, 190),
    (120, 170, 210),
    (236, 206, 86),
    (250, 232, 150),
    (22, 30, 40),
    (180, 120, 40),
]


def draw_style(size: int = 384, seed: int = 0) -> np.ndarray:
    """Thick curved strokes that follow a swirling flow field; float32 HWC in [0, 1]."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), PALETTE[1])
    draw = ImageDraw.Draw(img)
    centres = rng.uniform(0, size, (5, 2))

    def flow(p: np.ndarray) -> np.ndarray:
        v = np.zeros(2)
        for k, c in enumerate(centres):
            d = p - c
            r2 = d @ d + 400.0
            v += (1 if k % 2 else -1) * np.array([-d[1], d[0]]) / r2 * 60.0
        return v + np.array([1.0, 0.15])

    for _ in range(2600):
        p = rng.uniform(0, size, 2)
        near = np.min(np.linalg.norm(centres - p, axis=1))
        weights = (
            np.array([3, 3, 2, 1, 0.5, 0.4, 0.6, 0.3])
            if near > size / 6
            else np.array([0.5, 0.5, 0.5, 1, 3, 3, 0.2, 1])
        )
        colour = PALETTE[rng.choice(len(PALETTE), p=weights / weights.sum())]
        pts = [tuple(p)]
        for _ in range(int(rng.integers(4, 10))):
            v = flow(p)
            p = p + 4.0 * v / (np.linalg.norm(v) + 1e-6)
            pts.append(tuple(p))
        draw.line(pts, fill=colour, width=int(rng.integers(3, 7)), joint="curve")
    img = img.filter(ImageFilter.SMOOTH)
    return np.asarray(img, np.float32) / 255.0


def draw_landscape(width: int = 384, height: int = 288) -> np.ndarray:
    """A simple scene (sky, sun, hills, a house, a tree); float32 HWC in [0, 1]."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(120 + 100 * t), int(170 + 60 * t), 235))
    draw.ellipse([width * 0.7, height * 0.08, width * 0.85, height * 0.28], fill=(255, 220, 90))
    draw.polygon(
        [
            (0, height * 0.65),
            (width * 0.35, height * 0.45),
            (width * 0.7, height * 0.62),
            (width, height * 0.5),
            (width, height),
            (0, height),
        ],
        fill=(70, 140, 70),
    )
    draw.rectangle([width * 0.2, height * 0.55, width * 0.42, height * 0.82], fill=(200, 80, 60))
    draw.polygon(
        [
            (width * 0.18, height * 0.56),
            (width * 0.31, height * 0.4),
            (width * 0.44, height * 0.56),
        ],
        fill=(110, 50, 40),
    )
    draw.rectangle([width * 0.28, height * 0.68, width * 0.33, height * 0.82], fill=(60, 40, 30))
    draw.rectangle([width * 0.72, height * 0.55, width * 0.75, height * 0.8], fill=(90, 60, 30))
    draw.ellipse([width * 0.64, height * 0.36, width * 0.83, height * 0.6], fill=(40, 110, 50))
    return np.asarray(img, np.float32) / 255.0


def demo_images() -> tuple[np.ndarray, np.ndarray, str]:
    """``(content, style, description of the content's origin)``."""
    try:
        from skimage import data

        content = np.asarray(data.chelsea(), np.float32) / 255.0
        where = "scikit-image's 'chelsea' photo"
    except ImportError:
        content = draw_landscape()
        where = "a landscape drawn by jaxstyle (install scikit-image for a photo)"
    return content, draw_style(), where
