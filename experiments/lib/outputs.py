"""The output folder of a run: CSV, JSON, PNG and ``summary.md``, every file written atomically.

Every script writes into one folder (``--out``, default ``out/<script>``): a contact sheet
(PNG), every number it computed (CSV and JSON), loss curves (PNG, matplotlib) and
``summary.md``. The numbers in the summary's tables are formatted from the same records the
CSV/JSON hold (:func:`fmt`, :func:`md_table`), so the two cannot disagree.
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
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.lib import figures


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

    def __init__(self, folder: str | Path, name: str, args: argparse.Namespace | None):
        """``args`` are the script's parsed flags (``args.argv``: its command line)."""
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

        img = figures.contact_sheet(rows, title)
        p = self.path(rel)
        with atomic_path(p) as tmp:
            img.save(tmp, format="PNG")
        self.written.append(rel)
        return p

    def plot(self, rel: str, panels, title: str = "") -> Path:
        from jaxstyle.fileio import atomic_path

        fig = figures.loss_figure(panels, title)
        p = self.path(rel)
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.written.append(rel)
        return p

    def summary(self, title: str, sections: Iterable[str]) -> Path:
        """Writes ``summary.md``: the title, the command, the sections, the files."""
        argv = getattr(self.args, "argv", sys.argv[1:])
        cmd = f"python -m experiments.{self.name} " + " ".join(argv)
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
