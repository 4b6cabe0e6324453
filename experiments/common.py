"""Shared helpers of the experiment scripts: flags, images, outputs, and the report's weights.

Every script in ``experiments/`` writes into one output folder (``--out``, default
``out/<script>``): a contact sheet (PNG), every number it computed (CSV and JSON), loss curves
(PNG, matplotlib) and ``summary.md``. The numbers in the summary's tables are formatted from the
same records the CSV/JSON hold (:func:`fmt`), so the two cannot disagree.

Mapping the report's loss weights to jaxstyle's (:func:`weight_scale`)
------------------------------------------------------------------------
Li & Zhao state their losses as ``C_W * content + S_W * style`` with content and style the
``MSELoss`` of features and of Gram matrices ``G = F F^T / (a*b*c*d)`` (their section 5.1, the
PyTorch tutorial's ``GramMatrix``), taken at ``conv`` layers of torchvision's VGG19, fed RGB in
[0, 1] *without* the ImageNet mean/std normalisation the network was trained with (section 5.1:
"we had to normalize the pixel values of our input images to [0,1]"; the tutorial of that time
had no ``Normalization`` layer). jaxstyle uses the same Gram normalisation and the same means,
but features of inputs in the weights' own convention (Caffe VGG16: BGR, 0-255, mean-subtracted),
whose activations are on another scale. No closed form relates the two, so the factor is
measured: ``k = (S_rep / C_rep) / (S_ours / C_ours)``, the ratio of style to content loss at the
same starting image (uniform noise, seeded; a content initialisation has no content loss) under
the report's input handling and under ours, on our VGG network. Our weight is then
``k * S_W`` ("linear"), giving the two terms the same balance at initialisation as the
report's weight gave in the report's units.

The report's input handling is emulated on our network: feeding a torchvision-trained network
raw [0, 1] RGB means it sees ``x`` where it expects ``(x - mean) / std``; a Caffe-trained network
sees ``255 * std * t`` for a torchvision-unit input ``t``, so it is given ``255 * std * x`` (BGR,
no mean subtracted). This assumes the Caffe and torchvision networks agree up to that change of
input units, and it uses our VGG16 in place of their VGG19 (VGG19 weights are not cached).

``--weight-map squared``: the tutorial code the report took its ``GramMatrix`` from multiplied
features *and* targets by the weight inside the ``MSELoss``, so its effective weight was
``S_W**2`` (its default 1000 became the current tutorial's 1e6); the report's formula says
``S_W``, which is the default here.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: ``../shared/images`` beside the repository: ``content/`` and ``style/`` folders.
IMAGES = REPO.parent / "shared" / "images"
#: The content/style pairs used by default (one per row of the report's Figures 3-6).
DEFAULT_PAIRS = (
    ("tubingen", "starry_night"),
    ("golden_gate", "the_scream"),
    ("amber", "mosaic"),
    ("hoovertowernight", "udnie"),
)
#: The report's settings of Figures 3-6 (section 6.1).
REPORT_CONTENT_LAYERS = ("conv4_2",)
REPORT_STYLE_LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
#: torch.optim.LBFGS's default ``max_iter``: inner iterations per ``optimizer.step()``.
TORCH_LBFGS_MAX_ITER = 20
REPORT_ITERATIONS_NOTE = (
    "The report's 'iterations' are most likely calls of torch.optim.LBFGS.step() (its Figure 26 "
    "x-axis passes 500 for a 50-iteration run, and it says the optimizer 'does many rounds of "
    f"optimization for every step'); each runs up to {TORCH_LBFGS_MAX_ITER} L-BFGS iterations "
    "by default, so the report's Ite=15 is up to 300 of our iterations (one function evaluation "
    "each)."
)


# ---------------------------------------------------------------------------------------------
# Flags.


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The flags every script has: ``--out``, ``--smoke``, ``--images``, ``--net``, ..."""
    ap = argparse.ArgumentParser(
        prog=f"python experiments/{name}.py",
        description=doc.strip().split("\n\n")[1] if "\n\n" in doc else doc,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", default=f"out/{name}", help="output folder")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes and a couple of iterations (tests)"
    )
    ap.add_argument(
        "--images", default=str(IMAGES), help="folder with content/ and style/ sub-folders"
    )
    ap.add_argument("--net", default="vgg16", choices=("vgg16", "vgg19"), help="loss network")
    ap.add_argument("--weights", default=None, help="VGG weights file (default: the cache)")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    return ap


def smoke(args: argparse.Namespace, ap: argparse.ArgumentParser, **values: Any) -> None:
    """With ``--smoke``, replaces the flags still at their defaults by ``values``."""
    if not args.smoke:
        return
    for key, value in values.items():
        if getattr(args, key) == ap.get_default(key):
            setattr(args, key, value)


def csv_list(kind: type = str):
    """An argparse type for comma-separated values."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values: {text!r}") from None

    return parse


# ---------------------------------------------------------------------------------------------
# Setup: compile cache, network, images.


def setup() -> None:
    """Turns on JAX's persistent compilation cache (under ``$JAXSTYLE_HOME/xla-cache``).

    ``gatys.stylize`` and ``train.train_and_evaluate`` build their jitted programs on every
    call, so a sweep of several calls with the same shapes would compile each time; with the
    persistent cache the second and later calls load the program from disk instead.
    """
    from jaxstyle.cli import enable_compile_cache

    enable_compile_cache()


def load_net(args: argparse.Namespace, pooling: str = "max"):
    """The VGG network of ``--net``/``--weights`` (the cached real weights by default)."""
    from jaxstyle.nets.vgg import load_vgg

    return load_vgg(args.net, pooling=pooling, weights=args.weights, progress=False)


def image_path(images: str | Path, kind: str, name: str) -> Path:
    """A path as given, or ``<images>/<kind>/<name>[.jpg]``."""
    p = Path(name)
    if p.suffix and p.exists():
        return p
    for cand in (Path(images) / kind / name, Path(images) / kind / f"{name}.jpg"):
        if cand.exists():
            return cand
    raise SystemExit(f"error: no {kind} image {name!r} (looked in {Path(images) / kind})")


def load(path: Path, long_side: int) -> np.ndarray:
    from jaxstyle import images as imlib

    return imlib.resize_long_side(imlib.load_image(path), long_side)


def stem(path: str | Path) -> str:
    return Path(path).stem


# ---------------------------------------------------------------------------------------------
# The report's loss weights in our units.


def report_input(net, images):
    """``images`` (NHWC [0,1] RGB) as the report's network saw them, in ``net``'s input units.

    See the module docstring: raw [0, 1] RGB given to a network trained on mean/std-normalised
    inputs, mapped to a Caffe-convention network as ``255 * std * x`` in BGR order.
    """
    import jax.numpy as jnp

    from jaxstyle.nets.vgg import TORCHVISION_STD

    if net.convention == "torchvision":
        return images
    return images[..., ::-1] * 255.0 * jnp.asarray(TORCHVISION_STD[::-1], images.dtype)


def loss_terms(net, x, content, style, content_layers, style_layers, *, report: bool):
    """``(content, style)`` losses of image ``x`` (jaxstyle's definitions, unit weights)."""
    import jax.numpy as jnp

    from jaxstyle import losses
    from jaxstyle.nets.vgg import VGG

    def feats(img, layers):
        img = jnp.asarray(img)[None]
        if not report:
            return net.features(img, layers)
        vgg = VGG(arch=net.arch, pooling=net.pooling)
        return vgg.apply({"params": net.params}, report_input(net, img), tuple(layers))

    fx = feats(x, tuple(dict.fromkeys(tuple(content_layers) + tuple(style_layers))))
    fc, fs = feats(content, content_layers), feats(style, style_layers)
    c = sum(float(losses.content_loss(fx[n], fc[n])[0]) for n in content_layers)
    s = sum(
        float(losses.style_loss(losses.gram(fx[n]), losses.gram(fs[n]))[0]) for n in style_layers
    )
    return c, s


def weight_scale(net, pairs, content_layers, style_layers, seed: int = 0) -> dict[str, Any]:
    """The factor ``k`` from the report's style weights to ours (module docstring).

    Args:
        net: the VGG network (with the pooling the run uses).
        pairs: ``[(name, content image, style image)]`` at the run's size.

    Returns:
        ``{"k": geometric mean over the pairs, "per_pair": [{pair, k, losses...}]}``.
    """
    import jax

    rows = []
    for i, (name, content, style) in enumerate(pairs):
        x0 = np.asarray(jax.random.uniform(jax.random.PRNGKey(seed + i), content.shape))
        c_o, s_o = loss_terms(net, x0, content, style, content_layers, style_layers, report=False)
        c_r, s_r = loss_terms(net, x0, content, style, content_layers, style_layers, report=True)
        k = (s_r / c_r) / (s_o / c_o)
        rows.append(
            {
                "pair": name,
                "k": k,
                "content_ours": c_o,
                "style_ours": s_o,
                "content_report_units": c_r,
                "style_report_units": s_r,
            }
        )
    k = float(np.exp(np.mean(np.log([r["k"] for r in rows]))))
    return {"k": k, "per_pair": rows}


def map_weight(report_weight: float, k: float, mode: str = "linear") -> float:
    """Our style weight for the report's ``report_weight`` (3 significant digits)."""
    w = report_weight**2 if mode == "squared" else report_weight
    return float(f"{k * w:.3g}")


def add_mapping_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--scale",
        type=float,
        default=0.0,
        help="our style weight per unit of the report's (0: measure it; see experiments/common.py)",
    )
    ap.add_argument(
        "--weight-map",
        default="linear",
        choices=("linear", "squared"),
        help="report weight S_W enters as S_W (its formula) or S_W**2 (its tutorial code)",
    )


def scale_for(args, net, pairs, content_layers, style_layers) -> dict[str, Any]:
    """``--scale`` if given, else :func:`weight_scale`."""
    if args.scale > 0:
        return {"k": args.scale, "per_pair": [], "given": True}
    return {**weight_scale(net, pairs, content_layers, style_layers, args.seed), "given": False}


MAPPING_NOTE = (
    "Report weights are mapped to ours as `ours = k * report` (`k * report**2` with "
    "`--weight-map squared`), where k = (style/content loss ratio at a uniform-noise image under "
    "the report's input handling) / (the same ratio under ours), measured on our VGG network. "
    "The report fed RGB in [0,1] without mean/std normalisation to VGG19; we emulate that on "
    "our network (see experiments/common.py); `--scale K` sets k directly."
)


# ---------------------------------------------------------------------------------------------
# Outputs.


def fmt(v: Any) -> str:
    """How a number appears in summaries: 4 significant digits (integers as they are)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return str(v)
        if v.is_integer() and abs(v) < 1e7:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``columns`` of ``rows``, numbers through :func:`fmt`."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |\n" for r in rows)
    return head + body


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        # JSON has no NaN/Infinity: a non-finite number is written as null.
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


class Outputs:
    """The output folder of one run; every file is written atomically."""

    def __init__(self, folder: str | Path, name: str, args: argparse.Namespace):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.t0 = time.perf_counter()
        self.load_start = os.getloadavg()[0]
        self.args = args
        self.written: list[str] = []

    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def text(self, rel: str, text: str) -> Path:
        from jaxstyle.fileio import atomic_path

        p = self.path(rel)
        with atomic_path(p) as tmp:
            tmp.write_text(text)
        self.written.append(rel)
        return p

    def json(self, rel: str, obj: Any) -> Path:
        return self.text(rel, json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n")

    def csv(self, rel: str, rows: Sequence[dict[str, Any]]) -> Path:
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _jsonable(v) for k, v in r.items()})
        return self.text(rel, buf.getvalue())

    def image(self, rel: str, image: np.ndarray) -> Path:
        from jaxstyle import images as imlib

        self.written.append(rel)
        return imlib.save_image(self.path(rel), image)

    def sheet(self, rel: str, rows, title: str = "") -> Path:
        from jaxstyle.fileio import atomic_path

        img = contact_sheet(rows, title)
        p = self.path(rel)
        with atomic_path(p) as tmp:
            img.save(tmp, format="PNG")
        self.written.append(rel)
        return p

    def plot(self, rel: str, panels, title: str = "") -> Path:
        from jaxstyle.fileio import atomic_path

        fig = loss_figure(panels, title)
        p = self.path(rel)
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.written.append(rel)
        return p

    def summary(self, title: str, sections: Iterable[str]) -> Path:
        """Writes ``summary.md``: the title, the command, the sections, the files."""
        cmd = "python experiments/" + self.name + ".py " + " ".join(sys.argv[1:])
        files = sorted(set(self.written) | {"summary.md"})
        text = f"# {title}\n\nCommand: `{cmd.strip()}`  \n"
        text += f"Run on {run_env()['machine']}; {time.perf_counter() - self.t0:.0f} s.\n\n"
        if self.load_start > 0.5 * (os.cpu_count() or 1):
            text += (
                f"**The machine was busy** (1-minute load average {self.load_start:.1f} on "
                f"{os.cpu_count()} cores when the run started): timings are inflated and noisy, "
                "PyTorch's most (its OpenMP threads spin-wait for busy cores).\n\n"
            )
        text += "\n\n".join(s.strip() for s in sections if s and s.strip()) + "\n\n"
        text += "Files: " + ", ".join(f"`{f}`" for f in files) + "\n"
        return self.text("summary.md", text)


def run_env() -> dict[str, Any]:
    """Versions and machine, recorded in every JSON."""
    import jax

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"on {jax.default_backend()}",
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
    }


# ---------------------------------------------------------------------------------------------
# Pictures.


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


# ---------------------------------------------------------------------------------------------
# Small analyses shared by several scripts.


def stop_improving(losses: Sequence[float], tol: float) -> int:
    """The first iteration (1-based) after which the best loss improves by less than ``tol``.

    That is the smallest ``t`` with ``min(losses) >= (1 - tol) * min(losses[:t])``: from
    iteration ``t`` on, the run gains less than a fraction ``tol`` of its loss.
    """
    vals = np.asarray(losses, np.float64)
    vals = np.where(np.isfinite(vals), vals, np.inf)
    best = np.minimum.accumulate(vals)
    final = best[-1]
    return int(np.argmax(final >= (1 - tol) * best)) + 1


def curve(records: Sequence[dict[str, Any]], key: str, image: int = 0):
    """``(iterations, values)`` of one image's per-iteration records of a ``gatys`` log."""
    rs = [r for r in records if r["image"] == image]
    return [r["iteration"] for r in rs], [r[key] for r in rs]


def geometric_mean(values: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def trend(values: Sequence[float], rel: float = 1e-3) -> str:
    """``"rises"``/``"falls"`` (monotone, last differs from first by more than ``rel``), else
    ``"flat"`` (within ``rel``) or ``"mixed"``."""
    v = [float(x) for x in values]
    if len(v) < 2 or abs(v[-1] - v[0]) <= rel * max(abs(v[0]), abs(v[-1]), 1e-30):
        return "flat"
    pairs = list(zip(v, v[1:], strict=False))
    if all(b >= a for a, b in pairs):
        return "rises"
    if all(b <= a for a, b in pairs):
        return "falls"
    return "mixed"
